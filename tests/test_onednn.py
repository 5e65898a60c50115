"""oneDNN linears: the same values and gradients as nn.Linear, refreshed after in-place updates,
active only inside the context and thread, and the module restored afterwards."""
import threading

import pytest
import torch

from mmunlearn.models import onednn

pytestmark = pytest.mark.skipif(not onednn.linears(torch.nn.Linear(2, 2)), reason="oneDNN not available")


D = onednn.THIN + 16  # wider than THIN: trainable weights go through oneDNN too


def _net(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(D, D + 8), torch.nn.GELU(), torch.nn.Linear(D + 8, D + 1, bias=False))


def _train(net, steps: int, accelerated: bool, fused: bool) -> tuple[list[float], list[torch.Tensor]]:
    x = torch.randn(4, 5, D, generator=torch.Generator().manual_seed(1), requires_grad=True)
    # fused AdamW updates the weights without bumping their version counters
    opt = torch.optim.AdamW(net.parameters(), lr=0.05, fused=True) if fused else torch.optim.SGD(net.parameters(), lr=0.1)
    losses, grads = [], []
    with onednn.accelerated(net, accelerated):
        for _ in range(steps):
            opt.zero_grad()
            x.grad = None
            loss = net(x).pow(2).mean()
            loss.backward()
            grads.append(x.grad.clone())
            losses.append(float(loss.detach()))
            opt.step()  # in place: the reordered weights must follow
    return losses, grads + [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("fused", [False, True])
def test_training_matches_nn_linear(fused):
    plain = _train(_net(), 4, accelerated=False, fused=fused)
    fast = _train(_net(), 4, accelerated=True, fused=fused)
    assert fast[0] == pytest.approx(plain[0], rel=1e-5)
    for a, b in zip(fast[1], plain[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert plain[0][-1] < plain[0][0]  # the weights did change between steps


def test_frozen_weights_give_input_gradients_only():
    net = _net()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(3, D, requires_grad=True)
    ref = torch.autograd.grad(net(x).sum(), x)[0]
    with onednn.accelerated(net):
        got = torch.autograd.grad(net(x).sum(), x)[0]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in net.parameters())


def test_active_only_in_context_and_thread():
    net = _net()
    lin = net[0]
    calls = []
    original = torch.ops.mkldnn._linear_pointwise

    def counting(*a):
        calls.append(threading.current_thread().name)
        return original(*a)

    x = torch.randn(2, D)
    torch.ops.mkldnn._linear_pointwise = counting
    try:
        with torch.no_grad():
            with onednn.installed([lin]):
                assert "forward" in vars(lin)
                lin(x)  # installed but not active in this thread
                assert calls == []
                with onednn.active([lin]):
                    other = threading.Thread(target=lin, args=(x,), name="other")
                    other.start()
                    other.join()
                    lin(x)
            assert "forward" not in vars(lin)  # restored
            lin(x)
    finally:
        torch.ops.mkldnn._linear_pointwise = original
    assert calls == [threading.current_thread().name]


def test_nested_installs_share_one_and_restore():
    net = _net()
    with onednn.accelerated(net):
        inner = vars(net[0])["forward"]
        with onednn.accelerated(net):
            assert vars(net[0])["forward"] == inner
        assert vars(net[0])["forward"] == inner
    assert "forward" not in vars(net[0])


def test_only_plain_float32_cpu_linears():
    assert onednn.linears(_net().double()) == []
    assert len(onednn.linears(_net())) == 2
    assert onednn.linears(_net(), budget_bytes=16) == []


def test_thin_trainable_weights_compute_as_usual():
    """LoRA-shaped trainable weights (a side <= THIN) skip oneDNN (per-call reorders cost more
    than it saves); frozen, the same layer goes through oneDNN."""
    lin = torch.nn.Linear(D, onednn.THIN)
    calls = []
    original = torch.ops.mkldnn._linear_pointwise

    def counting(*a):
        calls.append(1)
        return original(*a)

    x = torch.randn(3, D)
    torch.ops.mkldnn._linear_pointwise = counting
    try:
        with onednn.accelerated(lin):
            y = lin(x)
            assert calls == []
            lin.requires_grad_(False)
            y_frozen = lin(x)
            assert len(calls) == 1
    finally:
        torch.ops.mkldnn._linear_pointwise = original
    torch.testing.assert_close(y_frozen, y, rtol=1e-5, atol=1e-6)


def test_gated_mlp_runs_fused_in_static_inference_only():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(0)
    mlp = LlamaMLP(LlamaConfig(hidden_size=D, intermediate_size=2 * D, num_attention_heads=4, hidden_act="silu"))
    assert onednn.gated_mlps(torch.nn.Sequential(mlp, torch.nn.Linear(D, D))) == [mlp]
    x = torch.randn(3, 7, D)
    with torch.no_grad():
        want = mlp(x)
    fused = []
    original = torch.ops.mkldnn._linear_pointwise.binary

    def counting(*a):
        fused.append(1)
        return original(*a)

    mods = onednn.linears(mlp) + [mlp]
    torch.ops.mkldnn._linear_pointwise.binary = counting
    try:
        with onednn.installed(mods, static=True), onednn.active(mods):
            with torch.no_grad():
                got = mlp(x)
                assert len(fused) == 1
                got_2d = mlp(x[0])  # gathered positions
            torch.testing.assert_close(mlp(x), want, rtol=1e-5, atol=1e-5)  # autograd: unfused
        with onednn.installed(mods), onednn.active(mods), torch.no_grad():
            mlp(x)  # weights may change: unfused
    finally:
        torch.ops.mkldnn._linear_pointwise.binary = original
    assert len(fused) == 2
    assert "forward" not in vars(mlp)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_2d, want[0], rtol=1e-5, atol=1e-5)
