"""Unlearning methods: one file, one loss (or pruning rule) each, registered by name.

Adding a method = adding a module `<name>.py` here that defines a `Method` subclass named
`<name>`, decorated with `@register`; `methods()` imports every module of the package, `get(name)`
only `<name>.py` (and what it imports): an `unlearn@<name>` item runs no other method's code, so
its deps are that file and the shared ones (base, losses).
"""
from __future__ import annotations

import importlib
import pkgutil

from mmunlearn.methods.base import REGISTRY, Method, register

__all__ = ["Method", "register", "get", "methods"]
_INFRA = {"base", "runner", "losses"}


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in _INFRA:
            importlib.import_module(f"{__name__}.{mod.name}")


def methods() -> dict[str, type[Method]]:
    _discover()
    return dict(REGISTRY)


def get(name: str) -> type[Method]:
    known = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _INFRA)
    if name not in known:
        raise KeyError(f"unknown method {name!r} (known: {', '.join(known)})")
    importlib.import_module(f"{__name__}.{name}")
    if name not in REGISTRY:
        raise KeyError(f"module {__name__}.{name} registers no method named {name!r}")
    return REGISTRY[name]
