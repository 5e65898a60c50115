"""Content addressing by construction (SPEC 11): every project file a stage's command reaches
through its imports -- module-level and inside functions, absolute and relative, transitively --
and every data file such a module names is covered by one of the stage's deps (a file or a
folder above it); imports by a computed name are declared (`DYNAMIC`). Checked against real DVC
on a repository copy locked without running anything: an edit invalidates every stage whose code
reaches it and no other method's item; runtime knobs (`runtime:` in params.yaml) are no stage's
params, so editing one invalidates nothing.
"""
from __future__ import annotations

import ast
import copy
import functools
import itertools
import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Callable

import pytest

from mmunlearn.params import method_names, read_yaml
from tests.conftest import ROOT, make_repo, run, set_param

PACKAGES = ("mmunlearn", "stages")   # project code: what the deps of a stage must cover
_IMPORTERS = {"import_module", "__import__"}


# ---- the import walk ------------------------------------------------------------------------------

def module_file(root: Path, dotted: str) -> Path | None:
    """The file of project module `dotted` (`a/b.py` or `a/b/__init__.py`); None outside the
    project or where `dotted` names no module (an attribute of `from a import name`)."""
    if dotted.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def executed_by(root: Path, dotted: str) -> list[Path]:
    """Files `import dotted` runs: each enclosing package's __init__.py, then the module."""
    parts, out = dotted.split("."), []
    for i in range(1, len(parts) + 1):
        path = module_file(root, ".".join(parts[:i]))
        if path is None:
            break
        out.append(path)
    return out


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(root: Path, path: Path, module: str | None, level: int) -> str:
    """The absolute name of `from <level dots><module> import ...` written in `path`."""
    if not level:
        return module or ""
    package = module_name(root, path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


@functools.lru_cache(maxsize=None)
def scan(root: Path, path: Path) -> tuple[frozenset[str], frozenset[Path], tuple[int, ...]]:
    """(module names `path` imports anywhere in its body, project data files it names, lines of
    imports by a computed name). `from a import b` yields `a` and `a.b` (b may be a submodule);
    a string constant naming a non-Python file next to the module (or under the repository root)
    counts as reading it, e.g. `Path(__file__).parent / "refusals.txt"`."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    data: set[Path] = set()
    dynamic: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(root, path, node.module, node.level)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _callee(node.func) in _IMPORTERS and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
            else:
                dynamic.append(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _looks_like_a_file(node.value):
            for cand in (path.parent / node.value, root / node.value):
                if cand.suffix not in ("", ".py") and cand.is_file() and _in_project(root, cand):
                    data.add(cand.resolve())
    return frozenset(names), frozenset(data), tuple(dynamic)


def _looks_like_a_file(text: str) -> bool:
    return 0 < len(text) < 200 and "\n" not in text and re.search(r"\.\w+$", text) is not None


def _callee(func: ast.expr) -> str | None:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _in_project(root: Path, path: Path) -> bool:
    path, root = path.resolve(), root.resolve()
    return path.is_relative_to(root) and path.relative_to(root).parts[0] in PACKAGES


Resolver = Callable[[Path, str, dict | None], list[str]]


def reached(root: Path, entry: str, stage: str = "", item: dict | None = None,
            dynamic: dict[str, Resolver] | None = None) -> tuple[dict[str, str], list[str]]:
    """({repository-relative project file that running module `entry` can execute or read: the
    file that imports or reads it}, problems): the transitive closure over `scan`. An import by a
    computed name is resolved by `dynamic[<file>](root, stage, item)` (module names); one that has
    no resolver is a problem."""
    dynamic = dynamic or {}
    root = root.resolve()
    todo = [(p, "") for p in executed_by(root, entry)]
    if not todo:
        return {}, [f"{entry}: not a project module"]
    via: dict[str, str] = {}
    problems: list[str] = []
    while todo:
        path, parent = todo.pop()
        rel = path.resolve().relative_to(root).as_posix()
        if rel in via:
            continue
        via[rel] = parent
        names, data, computed = scan(root, path)
        for d in data:
            via.setdefault(d.relative_to(root).as_posix(), rel)
        if computed:
            if rel in dynamic:
                names = names | set(dynamic[rel](root, stage, item))
            else:
                problems += [f"{rel}:{line}: import by a computed name (declare what it imports)" for line in computed]
        todo += [(p, rel) for name in sorted(names) for p in executed_by(root, name)]
    return via, problems


def chain(via: dict[str, str], rel: str) -> str:
    """`entry > ... > rel`: how the walk reached `rel`."""
    hops = [rel]
    while via.get(hops[-1]):
        hops.append(via[hops[-1]])
    return " > ".join(reversed(hops))


# ---- dvc.yaml -----------------------------------------------------------------------------------

def _lookup(ctx: dict, dotted: str):
    node = ctx
    for part in dotted.split("."):
        node = node[part]
    return node


def interpolate(text: str, ctx: dict):
    """DVC's `${...}`: a whole-string reference keeps its type (a list for a matrix)."""
    whole = re.fullmatch(r"\$\{([^}]+)\}", text)
    if whole:
        return _lookup(ctx, whole.group(1).strip())
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(_lookup(ctx, m.group(1).strip())), text)


def stage_items(root: Path, params: dict) -> list[tuple[str, str, dict | None, list[str], list[str]]]:
    """(name, entry module, matrix item, deps, params) for every stage and every matrix item, the
    `${...}` references resolved against `params`."""
    out = []
    for name, stage in read_yaml(root / "dvc.yaml")["stages"].items():
        matrix = stage.get("matrix")
        if matrix:
            axes = {k: interpolate(v, params) if isinstance(v, str) else v for k, v in matrix.items()}
            items = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
        else:
            items = [None]
        for item in items:
            ctx = {**params, "item": item or {}}
            label = name if item is None else f"{name}@{'-'.join(map(str, item.values()))}"
            argv = shlex.split(interpolate(stage["cmd"], ctx))
            entry = argv[argv.index("-m") + 1] if "-m" in argv else ""
            keys = [p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])]
            out.append((label, entry, item, [interpolate(d, ctx) for d in stage.get("deps", [])],
                        [interpolate(k, ctx) for k in keys]))
    return out


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d.rstrip("/") or path.startswith(d.rstrip("/") + "/") for d in deps)


def uncovered(root: Path, params: dict, dynamic: dict[str, Resolver] | None = None) -> dict[str, dict[str, str]]:
    """{stage or item: {project file it reaches that none of its deps covers: how it is reached,
    or a problem of the walk: ""}}; empty when content addressing is correct."""
    out = {}
    for label, entry, item, deps, _ in stage_items(root, params):
        if not entry:
            out[label] = {"command is not `python -m <module>`": ""}
            continue
        via, problems = reached(root, entry, label.split("@")[0], item, dynamic)
        missing = {f: chain(via, f) for f in sorted(via) if not covered(f, deps)}
        missing.update(dict.fromkeys(problems, ""))
        if missing:
            out[label] = missing
    return out


# ---- imports by a computed name in this project ---------------------------------------------------

RUN_METHODS = {"unlearn": "item", "crossarch": "any", "unimodal": "any"}


def methods_imported(root: Path, stage: str, item: dict | None) -> list[str]:
    """`mmunlearn.methods.get(name)` imports module `mmunlearn.methods.<name>` (`methods()`, all of
    them). Only the stages of `RUN_METHODS` run methods: an `unlearn@<method>` item its own, crossarch
    (`crossarch.methods`) and unimodal (every method) any; the others import the package for the
    runner's samplers and variant splits or MANU's pruning of a loaded checkpoint, never `get`."""
    runs = RUN_METHODS.get(stage)
    if runs == "item" and item is not None:
        return [f"mmunlearn.methods.{item['method']}"]
    if runs is None:
        return []
    return [f"mmunlearn.methods.{p.stem}" for p in (root / "mmunlearn" / "methods").glob("*.py")]


def row_metrics_imported(root: Path, stage: str, item: dict | None) -> list[str]:
    """`metrics.columns.load` imports every module of `mmunlearn/metrics/columns/` (the paper's
    row metrics, then one file per added metric)."""
    folder = root / "mmunlearn" / "metrics" / "columns"
    return ["mmunlearn.metrics.columns", *(f"mmunlearn.metrics.columns.{p.stem}" for p in folder.glob("*.py")
                                           if p.stem != "__init__")]


DYNAMIC: dict[str, Resolver] = {"mmunlearn/methods/__init__.py": methods_imported,
                                "mmunlearn/metrics/columns/__init__.py": row_metrics_imported}


def all_items(params: dict) -> dict:
    """Params with every known method in `methods`: every item the matrix can have is checked."""
    p = copy.deepcopy(params)
    p["methods"] = list(method_names())
    return p


# ---- the tests ----------------------------------------------------------------------------------

def test_every_reached_project_file_is_a_dep_of_its_stage():
    params = all_items(read_yaml(ROOT / "params.yaml"))
    missing = uncovered(ROOT, params, DYNAMIC)
    assert missing == {}, "\n".join(f"{stage}: {f}  ({how})" for stage, files in missing.items()
                                     for f, how in files.items())


def test_every_data_file_in_the_code_is_read_by_name():
    """The walk sees a data file through a string naming it; one no module names would be invisible
    to it (read through a computed path): name it in the module that reads it."""
    files = {p.resolve() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*")
             if p.is_file() and p.suffix not in (".py", ".pyc")}
    named = {d for pkg in PACKAGES for mod in (ROOT / pkg).rglob("*.py") for d in scan(ROOT, mod.resolve())[1]}
    assert files - named == set()
    assert (ROOT / "mmunlearn" / "methods" / "refusals.txt").resolve() in named


def test_get_imports_only_the_method_it_names():
    """What `methods_imported` declares: `get("npo_diff")` runs npo_diff's file and the shared ones,
    no other method's (the item's deps are that file + base + losses)."""
    code = ("import sys; from mmunlearn.methods import get; get('npo_diff'); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('mmunlearn.methods.'))))")
    loaded = set(run(["python", "-c", code], ROOT).stdout.split())
    assert loaded == {"mmunlearn.methods.base", "mmunlearn.methods.losses", "mmunlearn.methods.npo_diff"}
    via, _ = reached(ROOT, "mmunlearn.methods.npo_diff")
    assert {f"mmunlearn/methods/{m.rsplit('.', 1)[1]}.py" for m in loaded} <= set(via)


# ---- the checker on a mini-project and on a broken copy of this one ------------------------------

MINI = {
    "mmunlearn/__init__.py": "",
    "mmunlearn/core.py": "def f():\n    from mmunlearn.sub import leaf  # lazy: a submodule by from-import\n",
    "mmunlearn/sub/__init__.py": "from .mid import x\n",
    "mmunlearn/sub/mid.py": "from . import table_user\nx = 1\n",
    "mmunlearn/sub/table_user.py": "from pathlib import Path\nROWS = (Path(__file__).parent / 'table.txt').read_text()\n",
    "mmunlearn/sub/table.txt": "a\n",
    "mmunlearn/sub/leaf.py": "import numpy\n",
    "mmunlearn/unused.py": "import mmunlearn.core\n",
    "mmunlearn/m/__init__.py": "",
    "mmunlearn/m/a.py": "def helper():\n    return 1\n",
    "mmunlearn/m/b.py": "def g():\n    from .a import helper  # a sibling method's file\n    return helper()\n",
    "stages/__init__.py": "",
    "stages/s.py": "import mmunlearn.core\n",
    "stages/t.py": "import sys\nimport importlib\n\nimportlib.import_module(f'mmunlearn.m.{sys.argv[2]}')\n",
}
MINI_DVC = """stages:
  s:
    cmd: python -m stages.s
    deps: [stages, mmunlearn/__init__.py, mmunlearn/core.py, mmunlearn/sub]
  t:
    matrix:
      name: ${names}
    cmd: python -m stages.t --name ${item.name}
    deps:
      - stages
      - mmunlearn/__init__.py
      - mmunlearn/m/__init__.py
      - mmunlearn/m/${item.name}.py
"""


def mini(tmp_path: Path, dvc_yaml: str = MINI_DVC) -> Path:
    for rel, text in {**MINI, "dvc.yaml": dvc_yaml, "params.yaml": "names: [a, b]\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def by_item(root: Path, stage: str, item: dict | None) -> list[str]:
    return [f"mmunlearn.m.{item['name']}"] if item else []


def test_checker_reports_a_sibling_file_a_matrix_item_imports(tmp_path):
    root = mini(tmp_path)
    out = uncovered(root, read_yaml(root / "params.yaml"), {"stages/t.py": by_item})
    assert {k: sorted(v) for k, v in out.items()} == {"t@b": ["mmunlearn/m/a.py"]}
    assert out["t@b"]["mmunlearn/m/a.py"] == "stages/t.py > mmunlearn/m/b.py > mmunlearn/m/a.py"


def test_checker_reports_lazy_relative_and_data_file_reach(tmp_path):
    root = mini(tmp_path, MINI_DVC.replace("mmunlearn/sub]", "mmunlearn/sub/__init__.py, mmunlearn/sub/mid.py]"))
    out = uncovered(root, read_yaml(root / "params.yaml"), {"stages/t.py": by_item})
    assert sorted(out["s"]) == ["mmunlearn/sub/leaf.py", "mmunlearn/sub/table.txt", "mmunlearn/sub/table_user.py"]
    assert "mmunlearn/unused.py" not in out["s"]


def test_checker_reports_an_undeclared_computed_import(tmp_path):
    root = mini(tmp_path)
    out = uncovered(root, read_yaml(root / "params.yaml"))
    assert list(out["t@a"]) == ["stages/t.py:4: import by a computed name (declare what it imports)"]


def test_checker_catches_a_method_importing_another_in_a_copy_of_this_repo(tmp_path):
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=ignore)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    path = tmp_path / "mmunlearn" / "methods" / "npo_diff.py"
    path.write_text(path.read_text() + "\n\ndef _npo():\n    from mmunlearn.methods.npo import NegativePreference\n"
                    "    return NegativePreference\n")
    out = uncovered(tmp_path, all_items(read_yaml(tmp_path / "params.yaml")), DYNAMIC)
    assert {k: sorted(v) for k, v in out.items()} == {"unlearn@npo_diff": ["mmunlearn/methods/npo.py"]}


# ---- real DVC: what an edit invalidates ---------------------------------------------------------

@pytest.fixture(scope="module")
def locked(tmp_path_factory) -> Path:
    """A repository copy whose dvc.lock records every stage as run, without running any: placeholder
    outputs, then `dvc commit -f`. `dvc status` there lists the stages an edit invalidates."""
    from dvc.repo import Repo

    repo = make_repo(tmp_path_factory.mktemp("deps") / "repo")
    with Repo(str(repo)) as dvc:
        stages = list(dvc.index.stages)
    for path in (Path(o.fs_path) for st in stages for o in st.outs):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix:
            path.write_text("{}")
        else:
            path.mkdir(exist_ok=True)
            (path / "placeholder").write_text("x")
    for path in (Path(d.fs_path) for st in stages for d in st.deps):
        if not path.exists():   # a file inside another stage's output folder
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
    run(["dvc", "commit", "-f", "-q"], repo)
    run("git add -A && git commit -qm locked", repo)
    assert invalidated(repo) == set()
    return repo


def invalidated(repo: Path) -> set[str]:
    return set(json.loads(run(["dvc", "status", "--json"], repo).stdout or "{}"))


def reaching(root: Path, rel: str) -> set[str]:
    params = read_yaml(root / "params.yaml")
    return {label for label, entry, item, _, _ in stage_items(root, params)
            if rel in reached(root, entry, label.split("@")[0], item, DYNAMIC)[0]}


@pytest.mark.parametrize("rel", ["mmunlearn/methods/npo.py", "mmunlearn/methods/npo_diff.py",
                                 "mmunlearn/methods/manu.py", "mmunlearn/models/fastpath.py"])
def test_an_edit_invalidates_every_stage_that_reaches_it_and_no_other_method_item(locked, rel):
    path = locked / rel
    before = path.read_text()
    try:
        path.write_text(before + "\n# edited\n")
        got = invalidated(locked)
    finally:
        path.write_text(before)
    want = reaching(locked, rel)
    assert want <= got, want - got
    items = {s for s in got if s.startswith("unlearn@")}
    assert items == {s for s in want if s.startswith("unlearn@")}
    if rel.endswith("npo.py"):
        assert items == {"unlearn@npo"}   # npo_diff imports the shared term from losses, not npo.py
    assert invalidated(locked) == set()


def test_a_bytecode_cache_in_a_folder_dep_invalidates_nothing(locked):
    cache = locked / "mmunlearn" / "metrics" / "__pycache__"
    cache.mkdir()
    (cache / "mia.cpython-312.pyc").write_bytes(b"\0")
    try:
        assert invalidated(locked) == set()
    finally:
        shutil.rmtree(cache)


# ---- runtime knobs --------------------------------------------------------------------------------

def test_no_stage_lists_a_runtime_knob():
    from mmunlearn.params import RUNTIME

    for label, _, _, _, keys in stage_items(ROOT, all_items(read_yaml(ROOT / "params.yaml"))):
        for key in keys:
            assert key.split(".")[0] != "runtime" and key not in RUNTIME, (label, key)


def test_editing_runtime_knobs_invalidates_nothing(locked):
    from mmunlearn.params import RUNTIME

    before = (locked / "params.yaml").read_text()
    try:
        for key in RUNTIME:
            set_param(locked, f"runtime.{key}", 3)
        assert invalidated(locked) == set()
        set_param(locked, "unlearn.npo.beta", 0.25)   # a result-changing value does invalidate
        assert "unlearn@npo" in invalidated(locked)
    finally:
        (locked / "params.yaml").write_text(before)


@pytest.mark.slow
def test_exp_run_with_other_workers_reruns_nothing(released_pipeline, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(released_pipeline, repo, symlinks=True)
    out = run(["dvc", "exp", "run", "-S", "runtime.unlearn.workers=1", "-S", "runtime.oracle.workers=1",
               "-S", "runtime.metrics.workers=1", "-S", "runtime.data.workers=1",
               "-S", "runtime.unimodal.text.workers=1"], repo).stdout
    assert "Running stage" not in out, out
