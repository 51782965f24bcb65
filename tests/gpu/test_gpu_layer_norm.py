"""LayerNorm op (vmamba_zoo.ops.layer_norm) on the GPU: every backend at VMamba's shapes and odd ones,
forward and backward against torch.nn.functional.layer_norm in float64.

Run on the device machine: ``pytest -m gpu tests/gpu/test_gpu_layer_norm.py``. CI (no GPU) deselects it.
"""
import importlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vmamba_zoo.ops import LayerNorm, available_backends, layer_norm
from vmamba_zoo.ops.backends import resolve

pytestmark = pytest.mark.gpu

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
# VMamba-T at batch 128, 224x224: stage 0 (56x56 maps, C=96) and stage 3 (7x7, C=768)
VMAMBA_SHAPES = [(128, 56, 56, 96), (128, 7, 7, 768)]
ODD_SHAPES = [(37, 3), (5, 9, 100), (3, 11, 1024), (7, 8192)]


@pytest.fixture(autouse=True)
def _need_cuda():
    if not torch.cuda.is_available():
        pytest.fail("the gpu suite needs a CUDA device (run it on the device machine)")


def _data(shape, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    channels = shape[-1]
    x = 3.0 + 2.0 * torch.randn(*shape, device="cuda", dtype=torch.float64, generator=g)
    weight = 1.0 + 0.5 * torch.randn(channels, device="cuda", dtype=torch.float64, generator=g)
    bias = torch.randn(channels, device="cuda", dtype=torch.float64, generator=g)
    dy = torch.randn(*shape, device="cuda", dtype=torch.float64, generator=g)
    return x, weight, bias, dy


def _rel(got, want):
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def _check(shape, dtype, backend, affine=True):
    """Our op on ``dtype`` activations (fp32 weight / bias) vs float64 F.layer_norm on the same rounded
    values: output and all gradients within TOL[dtype] of the largest entry."""
    x, weight, bias, dy = _data(shape, seed=shape[-1])
    if not affine:
        weight = bias = None
    ours = [x.to(dtype)] + [None if t is None else t.float() for t in (weight, bias)]
    exact = [None if t is None else t.detach().double().requires_grad_() for t in ours]
    ours = [None if t is None else t.detach().requires_grad_() for t in ours]
    dy = dy.to(dtype)
    y = layer_norm(*ours, backend=backend)
    y_want = F.layer_norm(exact[0], (shape[-1],), exact[1], exact[2])
    assert y.dtype == dtype and y.shape == x.shape and y.is_contiguous()
    leaves = [i for i, t in enumerate(ours) if t is not None]
    got = torch.autograd.grad(y, [ours[i] for i in leaves], dy)
    want = torch.autograd.grad(y_want, [exact[i] for i in leaves], dy.double())
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), (y, *got), (y_want, *want)):
        assert a.dtype == (dtype if name in ("y", "dx") else torch.float32), name
        assert _rel(a, b) < TOL[dtype], f"{name}: relative error {_rel(a, b):.3g} (dtype {dtype}, backend {backend})"


@pytest.mark.parametrize("backend", available_backends("layer_norm_fwd"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", VMAMBA_SHAPES)
def test_vmamba_shapes(backend, dtype, shape):
    _check(shape, dtype, backend)


@pytest.mark.parametrize("backend", available_backends("layer_norm_fwd"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_odd_shapes(backend, dtype, shape, affine):
    _check(shape, dtype, backend, affine)


def test_single_channel_triton():
    """C = 1: each row is its own mean, so y = bias and dweight = 0 exactly (x - mean is exactly 0 in the
    kernel; torch's kernel leaves rounding noise there, so the reference is not held to this). dx is 0 up to
    one rounding of g = dy * weight: the compiler contracts g - mean(g) into fma(dy, weight, -mean(g)), which
    leaves the product's rounding error, times rstd = eps^-1/2."""
    x, weight, bias, dy = (t.float() for t in _data((37, 1)))
    x, weight, bias = x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()
    y = layer_norm(x, weight, bias, backend="triton")
    dx, dweight, dbias = torch.autograd.grad(y, (x, weight, bias), dy)
    assert torch.equal(y, bias.detach().expand_as(y))
    assert not dweight.any()
    g = (dy * weight.detach()).abs()
    assert (dx.abs() <= g * torch.finfo(torch.float32).eps * 1e-5 ** -0.5).all()
    torch.testing.assert_close(dbias, dy.sum(0), rtol=1e-6, atol=1e-6)


def test_triton_is_chosen_automatically_on_cuda_for_large_maps():
    """Auto mode: the Triton forward from TRITON_AUTO_MIN_ELEMENTS elements (VMamba-T's first two stages at batch
    128), torch's below (the launch from Python would cost the host more than the kernel saves)."""
    LN = importlib.import_module("vmamba_zoo.ops.layer_norm")
    large = torch.empty(-(-LN.TRITON_AUTO_MIN_ELEMENTS // 96), 96, device="cuda")  # rows rounded up
    small = large[:-1]
    reference = resolve("layer_norm_fwd", "reference", (large,))
    fn = resolve("layer_norm_fwd", "auto", (large,))
    assert "triton" in available_backends("layer_norm_fwd") and fn.__name__ == "layer_norm_fwd"
    assert fn is not reference
    assert resolve("layer_norm_fwd", "auto", (small,)) is reference
    assert resolve("layer_norm_fwd", "triton", (small,)) is fn


def test_plain_eager_auto_mode_runs_the_cuda_node():
    """Plain eager auto mode on CUDA runs the CUDA forward as the C++ node (no Python launch, no cast kernel), with the
    autocast dtype out; the custom op's own auto choice (torch.compile's) is the test above's."""
    x = torch.randn(4, 7, 96, device="cuda", requires_grad=True)
    norm = LayerNorm(96).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        y = norm(x)
    assert "LayerNormEager" in y.grad_fn.name() and y.dtype == torch.float16


@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", VMAMBA_SHAPES)
def test_autocast_output_is_the_rounded_float32_result(autocast_dtype, shape):
    """Under CUDA autocast the module returns the autocast dtype; values are torch's float32 LayerNorm
    rounded to it (up to a rounding flip from last-bit differences in the statistics)."""
    torch_norm = nn.LayerNorm(shape[-1]).cuda()
    nn.init.normal_(torch_norm.weight, 1.0, 0.3)
    nn.init.normal_(torch_norm.bias)
    ours = LayerNorm(shape[-1]).cuda()
    ours.load_state_dict(torch_norm.state_dict())
    x = _data(shape)[0].float().requires_grad_()
    with torch.autocast("cuda", dtype=autocast_dtype):
        y = ours(x)
        y_torch = torch_norm(x)
    assert y.dtype == autocast_dtype and y_torch.dtype == torch.float32
    torch.testing.assert_close(y, y_torch.to(autocast_dtype), rtol=1e-2, atol=1e-2)
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()
    assert torch.isfinite(ours.weight.grad).all() and torch.isfinite(ours.bias.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", VMAMBA_SHAPES)
def test_backward_is_deterministic(dtype, shape):
    x, weight, bias, dy = _data(shape, seed=3)
    x, weight, bias = x.to(dtype).requires_grad_(), weight.float().requires_grad_(), bias.float().requires_grad_()
    dy = dy.to(dtype)
    runs = [torch.autograd.grad(layer_norm(x, weight, bias, backend="triton"), (x, weight, bias), dy)
            for _ in range(2)]
    for name, a, b in zip(("dx", "dweight", "dbias"), *runs):
        assert torch.equal(a, b), name


def test_compile_fullgraph_with_triton_backend():
    """LayerNorm -> Linear under torch.compile(fullgraph=True) and fp16 autocast on CUDA equals eager."""
    model = nn.Sequential(LayerNorm(96), nn.Linear(96, 192)).cuda()
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(8, 14, 14, 96, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.float16):
        y, y_eager = compiled(x), model(x)
    torch.testing.assert_close(y, y_eager, rtol=1e-2, atol=1e-2)
    (grad_compiled,) = torch.autograd.grad(y.float().sum(), x)
    (grad_eager,) = torch.autograd.grad(y_eager.float().sum(), x)
    torch.testing.assert_close(grad_compiled, grad_eager, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_eager_node_equals_the_custom_op(dtype, monkeypatch):
    """backend="cuda": the eager path's C++ node (layer_norm_eager) gives the custom ops' output and gradients bit
    for bit, fp16 out under autocast as well."""
    if "cuda" not in available_backends("layer_norm_fwd"):
        pytest.fail("the cuda backend of layer_norm_fwd is not registered")
    ln_module = importlib.import_module("vmamba_zoo.ops.layer_norm")
    from vmamba_zoo.ops import cuda_backend
    assert cuda_backend.load_extension(), cuda_backend.extension_status()
    x, weight, bias, dy = _data((6, 13, 17, 200), seed=3)
    leaves = [x.to(dtype), weight.float(), bias.float()]

    def run():
        ours = [t.detach().clone().requires_grad_() for t in leaves]
        with torch.autocast("cuda", dtype=torch.float16):
            y = layer_norm(*ours, backend="cuda")
        return (y, *torch.autograd.grad(y, ours, dy.to(y.dtype)))

    calls = []
    node = torch.ops.vmamba_zoo_cuda.layer_norm_eager
    monkeypatch.setattr(ln_module, "_cuda_eager_node", lambda *args: lambda *a: calls.append(1) or node(*a))
    eager = run()
    assert calls, "the eager path did not take the C++ node"
    monkeypatch.setattr(ln_module, "plain_eager", lambda tensors: False)
    custom = run()
    assert eager[0].dtype == torch.float16
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), eager, custom):
        assert torch.equal(a, b), name
