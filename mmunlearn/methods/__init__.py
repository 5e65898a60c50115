"""Unlearning methods: one file, one loss (or pruning rule) each, registered by name.

Adding a method = adding a module `<name>.py` here that defines a `Method` subclass named
`<name>`, decorated with `@register`, whose `Hyper` dataclass declares its hyperparameters, plus
its block `unlearn.<name>` in params.yaml. `mmunlearn.params.method_names` lists the modules (the
known methods, without importing them); `methods()` imports every module of the package,
`get(name)` only `<name>.py` (and what it imports): an `unlearn@<name>` item runs no other
method's code, so its deps are that file and the shared ones (base, losses).
"""
from __future__ import annotations

import importlib

from mmunlearn.methods.base import REGISTRY, Method, register
from mmunlearn.params import method_names

__all__ = ["Method", "register", "get", "methods", "check"]


def _discover() -> None:
    for name in method_names():
        importlib.import_module(f"{__name__}.{name}")


def methods() -> dict[str, type[Method]]:
    _discover()
    return dict(REGISTRY)


def get(name: str) -> type[Method]:
    known = method_names()
    if name not in known:
        raise KeyError(f"unknown method {name!r} (known: {', '.join(known)})")
    importlib.import_module(f"{__name__}.{name}")
    if name not in REGISTRY:
        raise KeyError(f"module {__name__}.{name} registers no method named {name!r}")
    return REGISTRY[name]


def check(params: dict, names) -> None:
    """Each method's block `unlearn.<name>` checked against its `Hyper` (a `ParamError` naming
    the key otherwise): what a stage that runs methods calls before any heavy compute."""
    for name in names:
        get(name).configure(params)
