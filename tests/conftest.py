"""Shared fixtures: params at smoke scale, temporary repository copies, subprocess helpers."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmunlearn.params import read_yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)


def env(**extra: str) -> dict:
    """Subprocess env: this interpreter's venv first on PATH (DVC stages call `python`)."""
    e = dict(os.environ)
    e["PATH"] = BIN + os.pathsep + e.get("PATH", "")
    e.setdefault("GIT_AUTHOR_NAME", "test")
    e.setdefault("GIT_AUTHOR_EMAIL", "test@example.com")
    e.setdefault("GIT_COMMITTER_NAME", "test")
    e.setdefault("GIT_COMMITTER_EMAIL", "test@example.com")
    e.update(extra)
    return e


def run(cmd: list[str] | str, cwd: Path, check: bool = True, **extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(**extra), capture_output=True, text=True,
                          shell=isinstance(cmd, str))
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def set_param(repo: Path, dotted: str, value) -> None:
    """Edit params.yaml the way `dvc exp run -S` does (YAML round trip)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    path = repo / "params.yaml"
    data = yaml.load(path.read_text())
    node = data
    *parents, last = dotted.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    with open(path, "w") as fh:
        yaml.dump(data, fh)


def make_repo(dest: Path, scale: str = "smoke") -> Path:
    """A fresh git+DVC repository holding this checkout's tracked and untracked-not-ignored files
    (no data outputs), with params at `scale`."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if not src.is_file() or rel.startswith(("data/", "models/", "outputs/")) or rel == "dvc.lock":
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    set_param(dest, "scale", scale)
    run("git init -q && git add -A && git commit -qm init", dest)
    return dest


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture(scope="session")
def base_params() -> dict:
    return read_yaml(ROOT / "params.yaml")


@pytest.fixture
def smoke_params(base_params: dict) -> dict:
    p = copy.deepcopy(base_params)
    p["scale"] = "smoke"
    return p


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory, base_params) -> tuple[Path, dict]:
    """One assembled smoke dataset shared by read-only tests; copy it before tampering."""
    from mmunlearn.data.assemble import assemble

    p = copy.deepcopy(base_params)
    p["scale"] = "smoke"
    root = tmp_path_factory.mktemp("smoke")
    assemble(p, root=root, progress=False)
    return root, p


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory) -> Path:
    """One smoke-scale repository with the model stages run once (`dvc repro oracle finetune`);
    read-only for tests: copy it before changing anything."""
    repo = make_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    run(["dvc", "repro", "finetune", "oracle"], repo)
    return repo


RELEASED_METHODS = ["ga", "npo", "kl", "finetune_retain"]


@pytest.fixture(scope="session")
def released_pipeline(smoke_pipeline, tmp_path_factory) -> Path:
    """The smoke pipeline run to the end (evaluate, analyze, export, selected) for four methods,
    committed; read-only for tests: copy it before changing anything."""
    repo = tmp_path_factory.mktemp("released") / "repo"
    shutil.copytree(smoke_pipeline, repo, symlinks=True)
    set_param(repo, "methods", RELEASED_METHODS)
    set_param(repo, "method", "npo")
    # a tiny CIFAR-10 copy in the standard pickle format feeds the unimodal branch
    from mmunlearn.unimodal import write_cifar10
    from tests.test_cifar import synthetic, tiny_cfg

    cifar = write_cifar10(repo.parent / "cifar-10-batches-py", *synthetic(20, 1), *synthetic(6, 2))
    set_param(repo, "unimodal.cifar10_dir", str(cifar))
    for key, value in tiny_cfg().items():
        if key != "unlearn":
            set_param(repo, f"unimodal.cifar.{key}", value)
    set_param(repo, "unimodal.cifar.unlearn.lr", 0.001)
    set_param(repo, "unimodal.cifar.unlearn.steps", 10)
    run(["dvc", "repro"], repo)
    run("git add -A && git commit -qm released", repo)
    return repo


@pytest.fixture(scope="session")
def rows(smoke_dataset) -> list[dict]:
    """A few QA rows of the smoke dataset: every view and form (the tiny models' unit tests)."""
    import pandas as pd

    qa = pd.read_parquet(smoke_dataset[0] / "data" / "qa.parquet")
    return pd.concat([qa[qa.view == v].head(12) for v in ("text", "vqa_masked", "vqa_full")]).to_dict("records")


@pytest.fixture(scope="session")
def images(smoke_dataset):
    from mmunlearn.models.encode import file_images

    return file_images(smoke_dataset[0] / "data")
