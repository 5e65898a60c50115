"""nn.Linear through oneDNN on CPU: the default BLAS path reaches well under half of oneDNN's
throughput on the tiny models' matrix shapes on AVX-512 CPUs (both compute in float32).

`installed(modules)` gives each float32 CPU nn.Linear an instance `forward` that, in a thread
where the module is `active`, computes `x @ W.T + b` with oneDNN from a weight reordered into its
blocked layout: once per install where the weights are `static` (inference), else once per call
for trainable weights (optimizers update them in place, fused ones without bumping the tensor's
version counter) and once per version for frozen ones. With autograd,
the input's gradient goes through oneDNN too (W.T reordered likewise) and the weight's and bias'
gradients through the usual matrix product. Elsewhere, and outside `active`, a module computes as
usual. Frozen weights must not be changed through `.data` while installed (that skips the
version counter the reordered copies are checked against). Trainable weights with a side of at
most `THIN` (LoRA's A and B) compute as usual: for them the per-call reorders cost more than
oneDNN saves (measured: ~2x slower forward + backward at rank 32). In inference, a SiLU-gated
MLP block given to `installed` with its linears runs fused (`FusedMLP`).
"""
from __future__ import annotations

import threading
import weakref
from collections import Counter
from contextlib import contextmanager
from typing import Iterable, Sequence

import torch

_LOCK = threading.Lock()
_INSTALLED: dict[int, list] = {}  # id(module) -> [installs, PackedLinear]
_LOCAL = threading.local()  # .ids: Counter of active module ids in this thread
THIN = 64


def _pointwise(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, attr: str = "none") -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x if x.is_contiguous() else x.contiguous(), packed, bias,
                                              attr, [], "")


def _runs_here(module: torch.nn.Module, x) -> bool:
    """Whether `module` is active in this thread and `x` is a float32 CPU tensor it can take."""
    ids = getattr(_LOCAL, "ids", None)
    return (bool(ids) and bool(ids.get(id(module))) and isinstance(x, torch.Tensor) and x.dtype == torch.float32
            and x.dim() >= 2 and x.device.type == "cpu")


def _reorder(w: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(w, None)


class PackedLinear:
    """The oneDNN forward of one nn.Linear (see the module docstring); `remove` restores it."""

    def __init__(self, module: torch.nn.Linear, static: bool = False):
        self.module, self.static = module, static
        self._state: tuple | None = None  # (weight ref, (data_ptr, version), packed W, [packed W.T]): swapped whole
        module.forward = self.forward

    def _current(self) -> tuple:
        w, st = self.module.weight, self._state
        if (st is None or st[0]() is not w or st[1] != (w.data_ptr(), w._version)
                or (w.requires_grad and not self.static)):
            st = self._state = (weakref.ref(w), (w.data_ptr(), w._version), _reorder(w.detach()), [])
        return st

    def packed_t(self, st: tuple) -> torch.Tensor:
        """W.T reordered (the input gradient is grad_out @ W, a linear layer with weight W.T)."""
        if not st[3]:
            st[3].append(_reorder(self.module.weight.detach().t().contiguous()))
        return st[3][0]

    def forward(self, x):
        m = self.module
        if not _runs_here(m, x) or (m.weight.requires_grad and not self.static and min(m.weight.shape) <= THIN):
            return type(m).forward(m, x)
        st = self._current()
        if torch.is_grad_enabled() and (x.requires_grad or m.weight.requires_grad
                                        or (m.bias is not None and m.bias.requires_grad)):
            return _LinearFn.apply(x, m.weight, m.bias, self, st)
        return _pointwise(x, st[2], m.bias)

    def remove(self) -> None:
        del self.module.forward


class _LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, pl: PackedLinear, st: tuple):
        ctx.pl, ctx.st = pl, st
        ctx.save_for_backward(x if weight.requires_grad else None)
        return _pointwise(x, st[2], bias)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _pointwise(g, ctx.pl.packed_t(ctx.st), None)
        g2 = g.reshape(-1, g.shape[-1])
        if ctx.needs_input_grad[1]:
            gw = g2.t() @ x.reshape(-1, x.shape[-1])
        if ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb, None, None


def _silu(act) -> bool:
    return isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"


class FusedMLP:
    """The gated MLP `down(silu(gate(x)) * up(x))` (LLaMA, Qwen2) with the activation fused into
    the gate projection and the product into the up projection (oneDNN post-ops: the two
    [tokens, intermediate] passes of the activation and the product are not made). Acts where
    no gradient is recorded and its three linears are installed `static` and active in this
    thread; elsewhere the module computes as usual. `remove` restores it."""

    def __init__(self, module: torch.nn.Module, static: bool = True):
        self.module, self.static = module, static
        module.forward = self.forward

    def forward(self, x):
        m = self.module
        entries = [_INSTALLED.get(id(lin)) for lin in (m.gate_proj, m.up_proj, m.down_proj)]
        if torch.is_grad_enabled() or any(e is None or not e[1].static or not _runs_here(e[1].module, x)
                                          for e in entries):
            return type(m).forward(m, x)
        x = x if x.is_contiguous() else x.contiguous()
        gate, up = entries[0][1], entries[1][1]
        h = _pointwise(x, gate._current()[2], m.gate_proj.bias, "swish")
        h = torch.ops.mkldnn._linear_pointwise.binary(x, h, up._current()[2], m.up_proj.bias, "mul")
        return m.down_proj(h)

    def remove(self) -> None:
        del self.module.forward


def gated_mlps(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's SiLU-gated MLP blocks whose three projections are plain nn.Linear (see
    `FusedMLP`), where the fused oneDNN ops exist."""
    if not hasattr(torch.ops.mkldnn._linear_pointwise, "binary"):
        return []
    return [m for m in model.modules()
            if all(type(getattr(m, n, None)) is torch.nn.Linear for n in ("gate_proj", "up_proj", "down_proj"))
            and _silu(getattr(m, "act_fn", None))]


def linears(model: torch.nn.Module, budget_bytes: int = 1 << 30) -> list[torch.nn.Linear]:
    """The model's plain float32 nn.Linear modules, when all are on CPU, oneDNN is available and
    their weights fit `budget_bytes` (the reordered copies live while installed); else none."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return []
    mods = [m for m in model.modules() if type(m) is torch.nn.Linear]
    if not mods or any(m.weight.device.type != "cpu" or m.weight.dtype != torch.float32 for m in mods):
        return []
    return mods if sum(m.weight.nbytes for m in mods) <= budget_bytes else []


@contextmanager
def installed(modules: Sequence[torch.nn.Module], static: bool = False):
    """`PackedLinear` on every nn.Linear of `modules`, `FusedMLP` on every other (from
    `gated_mlps`), for the duration (nested and concurrent uses share one, `static` only while
    every use is: no weight changes while installed)."""
    keys = []
    with _LOCK:
        for m in modules:
            entry = _INSTALLED.get(id(m))
            if entry is None:
                wrapper = PackedLinear(m, static) if isinstance(m, torch.nn.Linear) else FusedMLP(m, static)
                entry = _INSTALLED[id(m)] = [0, wrapper]
            entry[1].static = entry[1].static and static
            entry[0] += 1
            keys.append(id(m))
    try:
        yield
    finally:
        with _LOCK:
            for k in keys:
                entry = _INSTALLED[k]
                entry[0] -= 1
                if entry[0] == 0:
                    entry[1].remove()
                    del _INSTALLED[k]


@contextmanager
def active(modules: Iterable[torch.nn.Module]):
    """The installed modules compute through oneDNN in this thread for the duration."""
    ids = Counter(id(m) for m in modules)
    if not hasattr(_LOCAL, "ids"):
        _LOCAL.ids = Counter()
    _LOCAL.ids.update(ids)
    try:
        yield
    finally:
        _LOCAL.ids.subtract(ids)
        _LOCAL.ids = +_LOCAL.ids


@contextmanager
def accelerated(model: torch.nn.Module | None, enabled: bool = True):
    """The model's linear layers through oneDNN in this thread for the duration (training or
    inference; a no-op for None or where `linears` finds none)."""
    mods = linears(model) if enabled and model is not None else []
    with installed(mods), active(mods):
        yield
