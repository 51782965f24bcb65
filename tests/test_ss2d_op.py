"""The fused-SS2D custom op (``ss2d_scan_fwd``): its hand-written backward against numerical gradients and
against autograd through the composition of the finer public ops."""
import pytest
import torch

from _tooling import RecordOps
from vmamba_zoo.ops import cross_merge, cross_scan, selective_scan, ss2d_selective_scan


def _inputs(directions, channels_last, h=3, w=4, channels=2, d_state=2, dt_rank=2, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = dict(dtype=torch.float64, generator=g)
    k, length = directions, h * w
    x = torch.randn(batch, h, w, channels, **f) if channels_last else torch.randn(batch, channels, h, w, **f)
    return dict(x=x, dts=torch.randn(batch, k, dt_rank, length, **f),
                dt_weight=0.5 * torch.randn(k, channels, dt_rank, **f), dt_bias=0.3 * torch.randn(k * channels, **f),
                A=-torch.exp(torch.randn(k * channels, d_state, **f)), Bs=torch.randn(batch, k, d_state, length, **f),
                Cs=torch.randn(batch, k, d_state, length, **f), Ds=torch.randn(k * channels, **f))


@pytest.mark.parametrize("directions", [1, 2, 4])
@pytest.mark.parametrize("channels_last", [False, True])
def test_ss2d_op_gradcheck(directions, channels_last):
    """Every input's gradient equals finite differences (float64)."""
    data = {n: t.requires_grad_() for n, t in _inputs(directions, channels_last).items()}
    names = list(data)

    def fn(*tensors):
        return ss2d_selective_scan(*tensors, directions=directions, channels_last=channels_last, backend="reference")
    assert torch.autograd.gradcheck(fn, tuple(data[n] for n in names))


@pytest.mark.parametrize("directions", [2, 4])
def test_ss2d_op_equals_composition_of_public_ops(directions):
    """Forward and backward equal autograd through cross_scan -> einsum -> selective_scan -> cross_merge."""
    data = _inputs(directions, False, h=5, w=3, channels=4, d_state=1, dt_rank=3, seed=1)
    fused = {n: t.clone().requires_grad_() for n, t in data.items()}
    plain = {n: t.clone().requires_grad_() for n, t in data.items()}
    y = ss2d_selective_scan(**fused, directions=directions)
    batch, channels, h, w = plain["x"].shape
    xs = cross_scan(plain["x"], directions)
    delta = torch.einsum("bkrl,kdr->bkdl", plain["dts"], plain["dt_weight"])
    ys = selective_scan(xs.reshape(batch, -1, h * w), delta.reshape(batch, -1, h * w), plain["A"], plain["Bs"],
                        plain["Cs"], plain["Ds"], None, plain["dt_bias"], delta_softplus=True)
    y_ref = cross_merge(ys.view(batch, directions, channels, h * w), h, w, directions)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(y)
    got = torch.autograd.grad(y, list(fused.values()), grad)
    want = torch.autograd.grad(y_ref, list(plain.values()), grad)
    for name, a, b in zip(fused, got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


def test_ss2d_op_bad_shapes():
    data = _inputs(4, False)
    with pytest.raises(ValueError, match="dts must be"):
        ss2d_selective_scan(**dict(data, dts=data["dts"][:, :2]), directions=4)
    with pytest.raises(ValueError, match="scan_directions"):
        ss2d_selective_scan(**data, directions=3)


def test_states_are_saved_only_where_a_cuda_backward_can_use_them(monkeypatch):
    """save_states=None: on CUDA with autograd recording, not for the reference backend, not under no_grad, not
    when VMAMBA_ZOO_SS2D_SAVE_STATES=0 (read at import: the module constant)."""
    from types import SimpleNamespace

    from vmamba_zoo.ops import ss2d as ss2d_op

    def tensors(device, grad):
        return [SimpleNamespace(device=torch.device(device), requires_grad=grad)] * 2

    assert ss2d_op._needs_states(tensors("cuda", True), "auto")
    assert not ss2d_op._needs_states(tensors("cuda", False), "auto")
    assert not ss2d_op._needs_states(tensors("cpu", True), "auto")
    assert not ss2d_op._needs_states(tensors("cuda", True), "reference")
    with torch.no_grad():
        assert not ss2d_op._needs_states(tensors("cuda", True), "auto")
    monkeypatch.setattr(ss2d_op, "SAVE_STATES_BY_DEFAULT", False)
    assert not ss2d_op._needs_states(tensors("cuda", True), "auto")


def test_saved_states_reference_matches_the_step_loop():
    """The reference's saved states (the state before every 8th step) against the naive step-by-step scan, one
    direction of 20 steps: states at steps 0, 8, 16."""
    from vmamba_zoo.ops import reference
    g = torch.Generator().manual_seed(3)
    batch, channels, length, d_state = 2, 3, 20, 2
    u = torch.randn(batch, channels, length, generator=g, dtype=torch.float64)
    delta = torch.randn(batch, channels, length, generator=g, dtype=torch.float64)
    A = -torch.rand(channels, d_state, generator=g, dtype=torch.float64) - 0.1
    Bs = torch.randn(batch, 1, d_state, length, generator=g, dtype=torch.float64)
    bias = torch.randn(channels, generator=g, dtype=torch.float64)
    states = reference.ss2d.saved_states(u, delta, A, Bs, bias, 1)
    assert states.shape == (batch, 1, 3, d_state, channels)
    dt = torch.nn.functional.softplus(delta + bias[:, None])
    h = torch.zeros(batch, channels, d_state, dtype=torch.float64)
    want = []
    for t in range(length):
        if t % 8 == 0:
            want.append(h.clone())
        h = torch.exp(dt[:, :, t, None] * A) * h + dt[:, :, t, None] * Bs[:, 0, None, :, t] * u[:, :, t, None]
    want = torch.stack(want, 1).permute(0, 1, 3, 2)[:, None]  # (batch, 1, 3, N, D)
    torch.testing.assert_close(states, want)


@pytest.mark.parametrize("directions", [1, 4])
def test_ss2d_op_on_tokens_equals_the_image(directions):
    """(batch, H*W, D) tokens with size=(H, W) (the models' layout): the image's values and gradients in token
    order, the backward included (the op views tokens as the image inside)."""
    data = _inputs(directions, True, h=3, w=5, channels=3, seed=2)
    image = {n: t.clone().requires_grad_() for n, t in data.items()}
    tokens = {n: t.clone().requires_grad_() for n, t in dict(data, x=data["x"].flatten(1, 2)).items()}
    y = ss2d_selective_scan(**image, directions=directions, channels_last=True, backend="reference")
    y_tokens = ss2d_selective_scan(**tokens, directions=directions, channels_last=True, backend="reference",
                                   size=(3, 5))
    assert y_tokens.shape == (2, 15, 3)
    torch.testing.assert_close(y_tokens, y.flatten(1, 2), rtol=0, atol=0)
    grad = torch.randn_like(y)
    want = torch.autograd.grad(y, list(image.values()), grad)
    got = torch.autograd.grad(y_tokens, list(tokens.values()), grad.flatten(1, 2))
    torch.testing.assert_close(got[0], want[0].flatten(1, 2), rtol=0, atol=0)
    for name, a, b in zip(list(tokens)[1:], got[1:], want[1:]):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_ss2d_op_tokens_need_a_matching_size():
    data = _inputs(4, True, h=3, w=4)
    tokens = dict(data, x=data["x"].flatten(1, 2))
    with pytest.raises(ValueError, match=r"size=\(4, 4\).*\(batch, 16, D\)"):
        ss2d_selective_scan(**tokens, directions=4, channels_last=True, size=(4, 4))
    with pytest.raises(ValueError, match="channel-last tokens"):
        ss2d_selective_scan(**tokens, directions=4, channels_last=False, size=(3, 4))
    with pytest.raises(ValueError, match="expects a 4D image"):
        ss2d_selective_scan(**tokens, directions=4, channels_last=True)


def _forward_and_grads(data, directions):
    leaves = {n: t.clone().requires_grad_() for n, t in data.items()}
    y = ss2d_selective_scan(**leaves, directions=directions, channels_last=True, backend="reference")
    grads = torch.autograd.grad(y, list(leaves.values()), torch.ones_like(y) + y.detach())
    return y, y.grad_fn, grads


def test_ss2d_eager_path_equals_the_custom_op(monkeypatch):
    """In plain eager mode the op runs through an autograd.Function (no custom-op dispatch on the host); forward and
    every gradient are bit for bit the custom op's, which compilers, tracers and FLOP counters keep seeing."""
    import vmamba_zoo.ops.ss2d as ss2d_module

    data = _inputs(4, True, h=5, w=3, channels=3, seed=2)
    y_eager, fn_eager, grads_eager = _forward_and_grads(data, 4)
    assert type(fn_eager).__name__ == "_EagerSS2DScanBackward"
    with RecordOps() as seen:  # under a dispatch mode (FLOP counters, fake tensors) the custom op runs
        _forward_and_grads(data, 4)
    assert {"vmamba_zoo.ss2d_scan_fwd.default", "vmamba_zoo.ss2d_scan_bwd.default"} <= seen.ops
    monkeypatch.setattr(ss2d_module, "plain_eager", lambda tensors: False)
    y_op, fn_op, grads_op = _forward_and_grads(data, 4)
    assert "ss2d_scan_fwd" in type(fn_op).__name__
    assert torch.equal(y_eager, y_op)
    for name, a, b in zip(data, grads_eager, grads_op):
        assert torch.equal(a, b), name


def _projected_inputs(directions, h, w, channels=3, d_state=2, dt_rank=2, batch=2, dtype=torch.float64, seed=0):
    """SS2D's inputs as the mixer has them: tokens, the pixel-order projection and the raw parameters."""
    g = torch.Generator().manual_seed(seed)
    f = dict(dtype=torch.float64, generator=g)
    k, length = directions, h * w
    data = dict(x=torch.randn(batch, length, channels, **f),
                proj=torch.randn(batch, length, k * (dt_rank + 2 * d_state), **f),
                dt_weight=0.5 * torch.randn(k, channels, dt_rank, **f), dt_bias=0.3 * torch.randn(k, channels, **f),
                A_logs=0.5 * torch.randn(k * channels, d_state, **f), Ds=torch.randn(k * channels, **f))
    return {n: t.to(dtype) for n, t in data.items()}


def _projected_forward_and_grads(data, directions, size, backend="reference"):
    from vmamba_zoo.ops.ss2d import ss2d_scan_projected
    leaves = {n: t.clone().requires_grad_() for n, t in data.items()}
    y = ss2d_scan_projected(**leaves, size=size, directions=directions, backend=backend)
    grads = torch.autograd.grad(y, list(leaves.values()), torch.ones_like(y) + y.detach())
    return y, y.grad_fn, grads


@pytest.mark.parametrize("directions", [1, 2, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_ss2d_projected_eager_path_equals_the_custom_op(monkeypatch, directions, dtype):
    """From the pixel-order projection, plain eager mode reorders by one gather inside one autograd node; the
    compilers' path reorders by views, a flip and a stack around the custom op. Bit for bit the same forward and
    gradients (the reorderings are exact), in each parameter's dtype (bfloat16 parameters: float32 state)."""
    import vmamba_zoo.ops.ss2d as ss2d_module

    size = (5, 3)
    data = _projected_inputs(directions, *size, dtype=dtype, seed=directions)
    y_eager, fn_eager, grads_eager = _projected_forward_and_grads(data, directions, size)
    assert type(fn_eager).__name__ == "_EagerProjectedScanBackward"
    with torch.no_grad():  # nothing to differentiate: the same numbers, no graph
        y_plain = ss2d_module.ss2d_scan_projected(**data, size=size, directions=directions, backend="reference")
    assert y_plain.grad_fn is None and torch.equal(y_plain, y_eager.detach())
    with RecordOps() as seen:  # under a dispatch mode the custom ops run
        _projected_forward_and_grads(data, directions, size)
    assert {"vmamba_zoo.ss2d_scan_fwd.default", "vmamba_zoo.ss2d_scan_bwd.default"} <= seen.ops
    monkeypatch.setattr(ss2d_module, "plain_eager", lambda tensors: False)
    y_op, fn_op, grads_op = _projected_forward_and_grads(data, directions, size)
    assert type(fn_op).__name__ != "_EagerProjectedScanBackward"
    assert y_eager.dtype == (torch.float32 if dtype == torch.bfloat16 else torch.float64)
    assert torch.equal(y_eager, y_op)
    for name, a, b in zip(data, grads_eager, grads_op):
        assert a.dtype == data[name].dtype and a.shape == data[name].shape, name
        assert torch.equal(a, b), name


def test_ss2d_projected_scan_rejects_a_projection_of_another_shape():
    from vmamba_zoo.ops.ss2d import ss2d_scan_projected
    data = _projected_inputs(4, 3, 4)
    data["proj"] = data["proj"][..., :-1]
    with pytest.raises(ValueError, match=r"proj must be \(batch, H\*W, K\*\(R\+2N\)\) = \(2, 12, 24\)"):
        ss2d_scan_projected(**data, size=(3, 4), directions=4)


def test_ss2d_projected_eager_path_trains_after_inference_mode():
    """The eager path caches its gather indices per size: made under torch.inference_mode() (a validation pass) they
    must still be normal tensors that a later training step can save for its backward."""
    import timm
    import vmamba_zoo.models  # noqa: F401
    from vmamba_zoo.ops.ss2d import _cached_gather_rows

    _cached_gather_rows.cache_clear()
    model = timm.create_model("test_vmamba")
    x = torch.randn(2, 3, 40, 56)
    with torch.inference_mode():
        expected = model.eval()(x)
    y = model.train()(x)
    y.sum().backward()
    assert model.stages[0].blocks[0].mixer.x_proj_weight.grad is not None
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), expected)
