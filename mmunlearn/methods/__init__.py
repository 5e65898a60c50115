"""Unlearning methods: one file, one loss (or pruning rule) each, registered by name.

Adding a method = adding a module here that defines a `Method` subclass decorated with
`@register`; `methods()` imports every module of the package.
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
    found = methods()
    if name not in found:
        raise KeyError(f"unknown method {name!r} (known: {', '.join(sorted(found))})")
    return found[name]
