"""Every op backend on the GPU against a float64 reference, forward and backward, odd sizes.

Run on the device machine: ``pytest -m gpu tests/gpu``. CI (no GPU) deselects the marker.
"""
import pytest
import torch

from vmamba_zoo.analysis.benchmark import scan_inputs
from vmamba_zoo.ops import available_backends, cross_merge, cross_scan, selective_scan
from vmamba_zoo.ops.reference import selective_scan_naive

pytestmark = pytest.mark.gpu

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def _need_cuda():
    if not torch.cuda.is_available():
        pytest.fail("the gpu suite needs a CUDA device (run it on the device machine)")


def _inputs(batch, groups, group_size, d_state, length, seed):
    return scan_inputs(batch, groups, group_size, d_state, length, seed)


def _rel(a, b):
    return ((a.double().cpu() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("backend", available_backends("selective_scan_fwd"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 4, 8, 1, 257), (1, 4, 6, 16, 130), (2, 2, 3, 4, 33), (3, 1, 64, 1, 1000)])
@pytest.mark.parametrize("with_z", [False, True])
def test_selective_scan_backend(backend, dtype, shape, with_z):
    """Forward and all gradients within 1e-5 (fp32) / 1e-2 (fp16, bf16) of the float64 oracle, relative to max."""
    batch, groups, group_size, d_state, length = shape
    data = _inputs(batch, groups, group_size, d_state, length, seed=length)
    if not with_z:
        data["z"] = None
    params = ("A", "D", "delta_bias")  # SSM parameters stay float32, activations take the dtype
    ours = {k: None if v is None else v.to("cuda", torch.float32 if k in params else dtype).requires_grad_()
            for k, v in data.items()}
    # the oracle sees exactly the rounded inputs
    ref = {k: None if v is None else ours[k].detach().double().cpu().requires_grad_() for k, v in data.items()}
    y = selective_scan(**ours, delta_softplus=True, backend=backend)
    y_ref = (selective_scan_naive if length <= 300 else _reference64)(**ref, delta_softplus=True)
    assert _rel(y, y_ref) < TOL[dtype]
    grad = torch.randn_like(y_ref)
    names = [k for k, v in ours.items() if v is not None]
    got = torch.autograd.grad(y, [ours[k] for k in names], grad.to("cuda", y.dtype))
    want = torch.autograd.grad(y_ref, [ref[k] for k in names], grad)
    for name, a, b in zip(names, got, want):
        assert _rel(a, b) < TOL[dtype] * 10, name  # gradients sum over L: allow one more digit


def _reference64(**kw):
    return selective_scan(**kw, backend="reference")


@pytest.mark.parametrize("backend", available_backends("cross_scan"))
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("hw", [(1, 1), (7, 9), (56, 56), (13, 4)])
@pytest.mark.parametrize("directions", [1, 2, 4])
def test_cross_scan_merge_backend(backend, channels_last, hw, directions):
    """cross_scan / cross_merge on CUDA equal the CPU float64 result exactly (they only move data)."""
    h, w = hw
    x = torch.randn(2, 5, h, w, dtype=torch.float64)
    x = x.permute(0, 2, 3, 1).contiguous() if channels_last else x
    ys = cross_scan(x.cuda(), directions, channels_last, backend=backend)
    torch.testing.assert_close(ys.cpu(), cross_scan(x, directions, channels_last, backend="reference"))
    y = torch.randn_like(ys)
    torch.testing.assert_close(cross_merge(y, h, w, directions, channels_last, backend=backend).cpu(),
                               cross_merge(y.cpu(), h, w, directions, channels_last, backend="reference"))


def test_model_backends_agree():
    """vmamba_tiny-shaped test model: every scan backend gives the reference's logits and gradients (fp32)."""
    import timm
    import vmamba_zoo  # noqa: F401
    torch.manual_seed(0)
    x = torch.randn(2, 3, 97, 61, device="cuda")
    outs = {}
    for backend in available_backends("selective_scan_fwd"):
        torch.manual_seed(0)
        model = timm.create_model("test_vmamba", scan_backend=backend).cuda()
        logits = model(x)
        logits.square().mean().backward()
        outs[backend] = (logits.detach(), model.stages[0].blocks[0].mixer.A_logs.grad.clone())
    ref = outs.pop("reference")
    for backend, (logits, grad) in outs.items():
        torch.testing.assert_close(logits, ref[0], rtol=1e-4, atol=1e-5, msg=backend)
        torch.testing.assert_close(grad, ref[1], rtol=1e-3, atol=1e-6, msg=backend)


@pytest.mark.parametrize("backend", available_backends("ss2d_scan_fwd"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("directions,channels_last,hw,channels,d_state,dt_rank", [
    (4, True, (56, 56), 96, 1, 6), (4, False, (13, 7), 32, 4, 2), (2, True, (9, 31), 16, 16, 3),
    (1, False, (1, 5), 8, 1, 1),
    # d_state 1: the fused CUDA kernels' domain; ranks in each of their builds, spare lanes, odd maps
    (4, True, (28, 28), 192, 1, 12), (4, True, (7, 7), 768, 1, 48), (4, False, (14, 15), 40, 1, 24),
    (2, True, (9, 31), 16, 1, 3), (4, True, (57, 3), 33, 1, 64)])
def test_ss2d_scan_backend(backend, dtype, directions, channels_last, hw, channels, d_state, dt_rank):
    """The fused SS2D op against the float64 composition of the reference ops (CPU), forward and backward (on CUDA
    the forward saves step states, which the CUDA backward starts from)."""
    _check_ss2d(backend, dtype, directions, channels_last, hw, channels, d_state, dt_rank)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("directions,channels_last,hw,channels,dt_rank", [
    (4, True, (56, 56), 96, 6), (4, True, (7, 7), 768, 48), (4, False, (14, 15), 40, 24), (2, True, (9, 31), 16, 3)])
def test_ss2d_cuda_backward_without_saved_states(dtype, directions, channels_last, hw, channels, dt_rank):
    """The CUDA backward that re-walks the forward (no saved states: e.g. a forward run by another backend)."""
    _check_ss2d("cuda", dtype, directions, channels_last, hw, channels, 1, dt_rank, save_states=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("directions,channels_last,hw,channels,dt_rank", [
    (4, True, (56, 56), 96, 6), (4, True, (7, 7), 768, 48), (4, False, (14, 15), 40, 24), (2, True, (9, 31), 16, 3)])
def test_ss2d_cuda_forward_by_segments(monkeypatch, dtype, directions, channels_last, hw, channels, dt_rank):
    """The CUDA forward the default does not pick: by segments joined in shared memory (deterministic mode's)."""
    monkeypatch.setenv("VMAMBA_ZOO_SS2D_FWD_KERNEL", "segments")
    _check_ss2d("cuda", dtype, directions, channels_last, hw, channels, 1, dt_rank)


def test_ss2d_cuda_deterministic_mode(monkeypatch):
    """Under torch.use_deterministic_algorithms the CUDA forward gives the same bits run after run (segments joined
    in shared memory, no atomics), and agrees with the default forward by direction to float32 rounding."""
    from vmamba_zoo.ops import ss2d_selective_scan
    from vmamba_zoo.analysis.benchmark import _ss2d_inputs
    monkeypatch.delenv("VMAMBA_ZOO_SS2D_FWD_KERNEL", raising=False)
    args = [t.float() for t in _ss2d_inputs(4, 96, 56, 56)]
    default = ss2d_selective_scan(*args, 4, True, "cuda")
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [ss2d_selective_scan(*args, 4, True, "cuda") for _ in range(3)]
    finally:
        torch.use_deterministic_algorithms(was)
    assert all(torch.equal(runs[0], r) for r in runs[1:])
    assert _rel(default, runs[0].double().cpu()) < 1e-6


def _check_ss2d(backend, dtype, directions, channels_last, hw, channels, d_state, dt_rank, save_states=None):
    from vmamba_zoo.ops import ss2d_selective_scan
    h, w = hw
    g = torch.Generator().manual_seed(h * w)
    batch, k, length = 2, directions, h * w
    f = dict(dtype=torch.float64, generator=g)
    x = torch.randn(batch, h, w, channels, **f) if channels_last else torch.randn(batch, channels, h, w, **f)
    data = dict(x=x, dts=torch.randn(batch, k, dt_rank, length, **f),
                dt_weight=0.5 * torch.randn(k, channels, dt_rank, **f), dt_bias=0.3 * torch.randn(k * channels, **f),
                A=-torch.exp(torch.randn(k * channels, d_state, **f)), Bs=torch.randn(batch, k, d_state, length, **f),
                Cs=torch.randn(batch, k, d_state, length, **f), Ds=torch.randn(k * channels, **f))
    params = ("dt_weight", "dt_bias", "A", "Ds")
    ours = {n: t.to("cuda", torch.float32 if n in params else dtype).requires_grad_() for n, t in data.items()}
    ref = {n: ours[n].detach().double().cpu().requires_grad_() for n in data}
    y = ss2d_selective_scan(**ours, directions=directions, channels_last=channels_last, backend=backend,
                            save_states=save_states)
    y_ref = ss2d_selective_scan(**ref, directions=directions, channels_last=channels_last, backend="reference")
    assert y.dtype == torch.float32 and _rel(y, y_ref) < TOL[dtype]
    grad = torch.randn_like(y_ref)
    got = torch.autograd.grad(y, list(ours.values()), grad.to("cuda", y.dtype))
    want = torch.autograd.grad(y_ref, list(ref.values()), grad)
    for name, a, b in zip(ours, got, want):
        assert _rel(a, b) < TOL[dtype] * 10, name


@pytest.mark.parametrize("norm_forward", ["reference", "cuda"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "fp16_autocast"])
def test_model_eager_path_equals_the_custom_ops(monkeypatch, autocast, norm_forward):
    """Eager VMamba-T training step on the GPU: the ops' eager path (one autograd node per SS2D scan and LayerNorm,
    the projection reordered by gathers) gives the custom ops' logits and every gradient, bit for bit (the forward
    by segments, VMAMBA_ZOO_SS2D_FWD_KERNEL=segments: no atomics), with torch's LayerNorm forward and with the CUDA
    one (auto mode's eager choice) on both sides."""
    import importlib

    import timm
    import vmamba_zoo  # noqa: F401
    layer_norm_module = importlib.import_module("vmamba_zoo.ops.layer_norm")  # the package attribute is the function
    ss2d_module = importlib.import_module("vmamba_zoo.ops.ss2d")

    monkeypatch.setenv("VMAMBA_ZOO_SS2D_FWD_KERNEL", "segments")
    monkeypatch.setenv("VMAMBA_ZOO_LAYER_NORM_FWD_BACKEND", norm_forward)
    torch.manual_seed(0)
    model = timm.create_model("vmamba_tiny", drop_path_rate=0.0).cuda()
    x = torch.randn(2, 3, 97, 75, device="cuda")

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
            logits = model(x)
        logits.float().square().mean().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    logits_eager, grads_eager = step()
    for module in (ss2d_module, layer_norm_module):
        monkeypatch.setattr(module, "plain_eager", lambda tensors: False)
    logits_op, grads_op = step()
    assert torch.equal(logits_eager, logits_op)
    assert grads_eager.keys() == grads_op.keys()
    for name in grads_op:
        assert torch.equal(grads_eager[name], grads_op[name]), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cuda_eager_node_equals_the_python_function(monkeypatch, dtype):
    """ss2d_scan_projected on CUDA in plain eager mode runs the extension's C++ autograd node (ss2d_eager.cpp), with
    saved states for the backward, and gives the Python autograd.Function's output and gradients bit for bit; without
    gradients it makes no node (forward by segments: no atomics)."""
    import importlib
    ss2d_module = importlib.import_module("vmamba_zoo.ops.ss2d")

    monkeypatch.setenv("VMAMBA_ZOO_SS2D_FWD_KERNEL", "segments")
    size, directions, channels, rank = (13, 11), 4, 72, 5
    g = torch.Generator().manual_seed(7)
    length = size[0] * size[1]
    data = dict(x=torch.randn(3, length, channels, generator=g).to(dtype),
                proj=torch.randn(3, length, directions * (rank + 2), generator=g).to(dtype),
                dt_weight=0.5 * torch.randn(directions, channels, rank, generator=g),
                dt_bias=0.3 * torch.randn(directions, channels, generator=g),
                A_logs=0.5 * torch.randn(directions * channels, 1, generator=g),
                Ds=torch.randn(directions * channels, generator=g))
    data = {n: t.cuda() for n, t in data.items()}

    def run(node):
        leaves = {n: t.clone().requires_grad_() for n, t in data.items()}
        y = ss2d_module.ss2d_scan_projected(**leaves, size=size, directions=directions)
        assert node in y.grad_fn.name()
        return y, torch.autograd.grad(y, list(leaves.values()), torch.ones_like(y) + y.detach())

    y_cpp, grads_cpp = run("SS2DProjected")
    with torch.no_grad():
        assert ss2d_module.ss2d_scan_projected(**data, size=size, directions=directions).grad_fn is None
    monkeypatch.setattr(ss2d_module, "_cuda_eager_op", lambda *args: None)
    y_fn, grads_fn = run("_EagerProjectedScanBackward")
    assert torch.equal(y_cpp, y_fn)
    for name, a, b in zip(data, grads_cpp, grads_fn):
        assert a.dtype == data[name].dtype and torch.equal(a, b), name
