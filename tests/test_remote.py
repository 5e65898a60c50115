"""S3 remote round trip through a real S3 server (moto) on 127.0.0.1."""
from __future__ import annotations

import hashlib
import logging
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import env, run

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


def wipe(repo: Path) -> None:
    """A fresh clone's state: no DVC cache, no tracked outputs."""
    shutil.rmtree(repo / ".dvc" / "cache")
    for out in OUTS:
        p = repo / out
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def test_push_wipe_pull_restores_every_file(pipeline_copy, s3_server):
    repo = pipeline_copy
    env = s3_env(s3_server)
    before = snapshot(repo)
    assert len([k for k in before if k.startswith("data/images/")]) > 100
    assert any(k.startswith("models/finetuned/") for k in before)
    proc = run(["dvc", "push"], repo, **env)
    assert "pushed" in proc.stdout
    wipe(repo)
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


def make_pull(repo: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    """`make pull` as a newcomer runs it: no AWS_* variables, a HOME without ~/.aws; the running
    interpreter's venv is passed as VENV= so the copy's Makefile uses it as is (no install)."""
    home.mkdir(exist_ok=True)
    clean = {k: v for k, v in env(HOME=str(home)).items() if not k.startswith("AWS_")}
    return subprocess.run(["make", "pull", f"VENV={sys.prefix}", *args], cwd=repo, env=clean,
                          capture_output=True, text=True)


def test_make_pull_without_credentials_says_what_to_set_and_downloads_nothing(pipeline_copy, tmp_path):
    repo = pipeline_copy
    wipe(repo)
    before = snapshot(repo)
    proc = make_pull(repo, tmp_path / "home")
    assert proc.returncode != 0
    hints = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(hints) == 1, proc.stderr
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "dvc remote modify --local storage access_key_id"):
        assert name in hints[0]
    assert "Unable to locate credentials" not in proc.stdout + proc.stderr  # dvc pull never started
    assert snapshot(repo) == before
    assert not (repo / ".dvc" / "cache").exists()


def test_make_pull_with_local_config_restores_what_was_pushed(pipeline_copy, s3_server, tmp_path):
    repo = pipeline_copy
    before = snapshot(repo)
    run(["dvc", "push"], repo, **s3_env(s3_server))  # the maintainer, keys in the environment
    wipe(repo)
    for key, value in (("endpointurl", f"http://127.0.0.1:{s3_server}"), ("access_key_id", "testing"),
                       ("secret_access_key", "testing")):  # the newcomer, keys in .dvc/config.local
        run(["dvc", "remote", "modify", "--local", "storage", key, value], repo)
    proc = make_pull(repo, tmp_path / "home", "TARGETS=finetune oracle")  # the stages the fixture ran
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"at http://127.0.0.1:{s3_server}: reachable" in proc.stdout
    assert snapshot(repo) == before
    assert "up to date" in run(["dvc", "status", "finetune", "oracle"], repo).stdout


def test_check_names_an_unreachable_endpoint_or_a_missing_bucket(repo, s3_server):
    check = [sys.executable, "-m", "mmunlearn.remote", "check"]
    proc = run(check, repo, check=False, **s3_env(free_port()))  # nothing listens there
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: cannot reach S3 endpoint http://127.0.0.1:") and proc.stderr.count("\n") == 1
    run(["dvc", "remote", "modify", "--local", "storage", "url", "s3://no-such-bucket/store"], repo)
    proc = run(check, repo, check=False, **s3_env(s3_server))
    assert proc.returncode == 2
    assert proc.stderr == f"error: S3 endpoint http://127.0.0.1:{s3_server} has no bucket 'no-such-bucket' (remote s3://no-such-bucket/store)\n"
    run(["dvc", "remote", "modify", "--local", "--unset", "storage", "url"], repo)
    assert run(check, repo, **s3_env(s3_server)).stdout.endswith(": reachable\n")
