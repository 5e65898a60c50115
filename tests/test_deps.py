"""Content addressing by construction (SPEC 11): every project file a stage's command reaches
through its imports -- module-level and inside functions, absolute and relative, transitively --
and every data file such a module reads is covered by one of the stage's deps (a file or a
folder above it); runtime knobs (`runtime:` in params.yaml) are no stage's params, so editing one
reruns nothing; editing one method's file invalidates that method's `unlearn@<method>` item only.
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

from mmunlearn.params import METHODS, read_yaml
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
def scan(root: Path, path: Path) -> tuple[set[str], set[Path], list[int]]:
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
    return names, data, dynamic


def _looks_like_a_file(text: str) -> bool:
    return 0 < len(text) < 200 and "\n" not in text and re.search(r"\.\w+$", text) is not None


def _callee(func: ast.expr) -> str | None:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _in_project(root: Path, path: Path) -> bool:
    rel = path.resolve().relative_to(root.resolve()) if path.resolve().is_relative_to(root.resolve()) else None
    return rel is not None and rel.parts[0] in PACKAGES


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


def uncovered(root: Path, params: dict, dynamic: dict[str, Resolver] | None = None) -> dict[str, list[str]]:
    """{stage or item: sorted project files it reaches that none of its deps covers, and problems
    of the walk}; empty when content addressing is correct."""
    out = {}
    for label, entry, item, deps, _ in stage_items(root, params):
        if not entry:
            out[label] = ["command is not `python -m <module>`"]
            continue
        via, problems = reached(root, entry, label.split("@")[0], item, dynamic)
        missing = sorted(f for f in via if not covered(f, deps)) + problems
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


DYNAMIC: dict[str, Resolver] = {"mmunlearn/methods/__init__.py": methods_imported}


def all_items(params: dict) -> dict:
    """Params with every known method in `methods`: every item the matrix can have is checked."""
    p = copy.deepcopy(params)
    p["methods"] = list(METHODS)
    return p


# ---- the tests ----------------------------------------------------------------------------------

def test_every_reached_project_file_is_a_dep_of_its_stage():
    params = all_items(read_yaml(ROOT / "params.yaml"))
    assert uncovered(ROOT, params, DYNAMIC) == {}
