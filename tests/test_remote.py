"""S3 remote round trip through a real S3 server (moto) on 127.0.0.1."""
from __future__ import annotations

import hashlib
import logging
import shutil
import socket
from pathlib import Path

import pytest

from tests.conftest import run

BUCKET = "mmunlearn-dvc"  # from .dvc/config's default remote `storage`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_env(port: int) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "1"}


@pytest.fixture
def s3_server():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    yield port
    server.stop()


OUTS = ("data/images", "data/profiles.parquet", "data/qa.parquet", "models/base", "models/finetuned", "models/oracle")


@pytest.fixture
def pipeline_copy(smoke_pipeline, tmp_path) -> Path:
    """A writable copy of the smoke pipeline repository, with its DVC cache."""
    dest = tmp_path / "repo"
    shutil.copytree(smoke_pipeline, dest, symlinks=True)
    return dest


def snapshot(repo: Path) -> dict[str, str]:
    out = {}
    for top in ("data", "models", "outputs"):
        for p in sorted((repo / top).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(repo))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_push_wipe_pull_restores_every_file(pipeline_copy, s3_server):
    repo = pipeline_copy
    env = s3_env(s3_server)
    before = snapshot(repo)
    assert len([k for k in before if k.startswith("data/images/")]) > 100
    assert any(k.startswith("models/finetuned/") for k in before)
    proc = run(["dvc", "push"], repo, **env)
    assert "pushed" in proc.stdout
    shutil.rmtree(repo / ".dvc" / "cache")
    for out in OUTS:
        p = repo / out
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    run(["dvc", "pull", "--with-deps", "finetune", "oracle"], repo, **env)  # the stages the fixture ran
    assert snapshot(repo) == before
    assert "up to date" in run(["dvc", "status", "finetune", "oracle"], repo).stdout


def test_unreachable_remote_fails_clearly_and_touches_nothing(pipeline_copy):
    repo = pipeline_copy
    env = s3_env(free_port())  # nothing listens there
    before = snapshot(repo)
    cache_before = sorted(p.name for p in (repo / ".dvc" / "cache").rglob("*"))
    proc = run(["dvc", "push"], repo, check=False, **env)
    assert proc.returncode != 0
    assert "Could not connect to the endpoint URL" in proc.stderr or "failed to connect" in proc.stderr
    assert snapshot(repo) == before
    assert sorted(p.name for p in (repo / ".dvc" / "cache").rglob("*")) == cache_before
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data" / "images")
    proc = run(["dvc", "pull", "--with-deps", "finetune", "oracle"], repo, check=False, **env)
    assert proc.returncode != 0
    assert "failed to connect" in proc.stderr or "Could not connect" in proc.stderr
    assert not (repo / "data" / "images").exists() or not any((repo / "data" / "images").iterdir())
    assert (repo / "data" / "qa.parquet").exists()  # workspace files it could not fetch are left alone
