"""LayerNorm op and module (vmamba_zoo.ops.layer_norm) on the CPU: reference backend and the Triton kernels
under TRITON_INTERPRET=1 (tests/conftest.py), against torch.nn.functional.layer_norm in float64."""
import importlib
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vmamba_zoo.ops import LayerNorm, layer_norm
from vmamba_zoo.ops.backends import resolve

LN = importlib.import_module("vmamba_zoo.ops.layer_norm")
KERNELS = "vmamba_zoo.ops.kernels.triton_layer_norm"
BACKENDS = ("reference", "triton")


@pytest.fixture(scope="module", autouse=True)
def _interpreter():
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.fail("TRITON_INTERPRET=1 must be set before triton is imported (see tests/conftest.py)")


def _data(shape, affine="both", seed=0):
    """float64 x (mean and scale away from 0/1, so the statistics matter), weight, bias (None when off)."""
    g = torch.Generator().manual_seed(seed)
    channels = shape[-1]
    x = 3.0 + 2.0 * torch.randn(*shape, dtype=torch.float64, generator=g)
    weight = 1.0 + 0.5 * torch.randn(channels, dtype=torch.float64, generator=g)
    bias = torch.randn(channels, dtype=torch.float64, generator=g)
    return x, (weight if affine in ("both", "weight") else None), (bias if affine in ("both", "bias") else None)


def _close(got, want, rtol, what=""):
    """|got - want| <= rtol * max|want| (entries near 0 are judged against the tensor's scale)."""
    scale = want.abs().max().clamp_min(1e-30)
    err = (got.double() - want).abs().max()
    assert err <= rtol * scale, f"{what}: max error {err.item():.3g} > {rtol} * {scale.item():.3g}"


def _forward_backward(x, weight, bias, dtype, backend, grad_seed=1):
    """Our op on ``dtype`` copies (weight / bias stay float32) vs F.layer_norm in float64 on the same
    rounded values: (ours, want) lists of y, dx, dweight, dbias (absent ones left out)."""
    ours = [x.to(dtype)] + [None if t is None else t.float() for t in (weight, bias)]
    exact = [None if t is None else t.double() for t in ours]
    ours = [None if t is None else t.detach().requires_grad_() for t in ours]
    exact = [None if t is None else t.detach().requires_grad_() for t in exact]
    y = layer_norm(*ours, eps=1e-5, backend=backend)
    y_want = F.layer_norm(exact[0], (x.shape[-1],), exact[1], exact[2], eps=1e-5)
    assert y.dtype == dtype and y.shape == x.shape
    dy = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(grad_seed))
    leaves = [i for i, t in enumerate(ours) if t is not None]
    got = torch.autograd.grad(y, [ours[i] for i in leaves], dy.to(dtype))
    want = torch.autograd.grad(y_want, [exact[i] for i in leaves], dy.to(dtype).double())
    return [y, *got], [y_want, *want]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(21, 3), (101, 96), (3, 1, 7, 100), (5, 768)])
@pytest.mark.parametrize("affine", ["both", "none"])
def test_float32_matches_float64(backend, shape, affine):
    """fp32 inputs: output and every gradient within 1e-5 (relative to the largest entry) of float64.
    101 rows of 96 make the Triton backward loop over several tiles per program."""
    x, weight, bias = _data(shape, affine, seed=shape[-1])
    got, want = _forward_backward(x, weight, bias, torch.float32, backend)
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), got, want):
        _close(a, b, 1e-5, f"{backend} {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_channel(backend):
    """C = 1: every row is its own mean, so y = bias, dx = 0, dweight = 0, dbias = sum dy. The Triton
    kernels get these exactly (x - mean is exactly 0); torch's kernel (the reference) leaves rounding
    noise of x - mean times 1/sqrt(eps) in, hence the looser bound there."""
    x, weight, bias = (t.float().requires_grad_() for t in _data((3, 7, 1), seed=1))
    dy = torch.randn(3, 7, 1)
    y = layer_norm(x, weight, bias, backend=backend)
    dx, dweight, dbias = torch.autograd.grad(y, (x, weight, bias), dy)
    tol = 0.0 if backend == "triton" else 2e-3
    torch.testing.assert_close(y, bias.detach().expand_as(y), rtol=0, atol=tol)
    torch.testing.assert_close(dx, torch.zeros_like(dx), rtol=0, atol=tol)
    torch.testing.assert_close(dweight, torch.zeros_like(dweight), rtol=0, atol=tol)
    torch.testing.assert_close(dbias, dy.sum((0, 1)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("affine", ["weight", "bias"])
def test_weight_or_bias_alone(backend, affine):
    """bias=False (weight only) and a bias without a weight (F.layer_norm allows it)."""
    x, weight, bias = _data((9, 100), affine, seed=5)
    got, want = _forward_backward(x, weight, bias, torch.float32, backend)
    assert len(got) == 3
    for a, b in zip(got, want):
        _close(a, b, 1e-5, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(37, 96), (3, 768)])
def test_half_precision_within_1e2(backend, dtype, shape):
    """fp16 / bf16 activations with fp32 weight: output (in the input dtype) and gradients within 1e-2."""
    x, weight, bias = _data(shape, "both", seed=7)
    got, want = _forward_backward(x, weight, bias, dtype, backend)
    assert got[1].dtype == dtype and got[2].dtype == torch.float32
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), got, want):
        _close(a, b, 1e-2, f"{backend} {dtype} {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_dtype_rounds_the_float32_result_once(backend):
    """out_dtype=float16 from fp32 input is the fp32 result rounded (what the cast pass used to do)."""
    x, weight, bias = (t.float() for t in _data((13, 96)))
    y16 = layer_norm(x, weight, bias, out_dtype=torch.float16, backend=backend)
    y32 = F.layer_norm(x, (96,), weight, bias)
    assert y16.dtype == torch.float16
    # Triton's float32 statistics differ from torch's in the last bits, which may flip a rounding
    torch.testing.assert_close(y16, y32.half(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16])
def test_autocast_returns_autocast_dtype(backend, autocast_dtype):
    """Under autocast: the autocast dtype (not float32 as nn.LayerNorm), the fp32 result rounded once;
    gradients flow back in the parameters' and input's dtypes."""
    torch_norm = nn.LayerNorm(96)
    nn.init.normal_(torch_norm.weight, 1.0, 0.3)
    nn.init.normal_(torch_norm.bias)
    ours = LayerNorm(96, backend=backend)
    ours.load_state_dict(torch_norm.state_dict())
    x = _data((2, 5, 3, 96))[0].float().requires_grad_()
    with torch.autocast("cpu", dtype=autocast_dtype):
        y = ours(x)
        y_torch = torch_norm(x)
    assert y.dtype == autocast_dtype and y_torch.dtype == torch.float32
    if backend == "reference":  # the same float32 computation: bitwise the cast of torch's output
        assert torch.equal(y, y_torch.to(autocast_dtype))
    else:
        torch.testing.assert_close(y, y_torch.to(autocast_dtype), rtol=1e-2, atol=1e-2)
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and ours.weight.grad.dtype == torch.float32
    assert torch.isfinite(x.grad).all() and torch.isfinite(ours.bias.grad).all()


def test_autocast_linear_after_it_sees_the_same_numbers():
    """The point of the autocast dtype: LayerNorm -> Linear gives bitwise the same result as with
    nn.LayerNorm (whose float32 output the Linear casts itself)."""
    torch_norm, linear = nn.LayerNorm(96), nn.Linear(96, 32)
    nn.init.normal_(torch_norm.weight, 1.0, 0.3)
    ours = LayerNorm(96, backend="reference")
    ours.load_state_dict(torch_norm.state_dict())
    x = _data((4, 7, 96))[0].float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(linear(ours(x)), linear(torch_norm(x)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_outside_autocast_like_nn_layer_norm(dtype):
    """Outside autocast: the input's dtype, same values as nn.LayerNorm (parameters in that dtype too)."""
    torch_norm = nn.LayerNorm(100).to(dtype)
    ours = LayerNorm(100).to(dtype)
    ours.load_state_dict(torch_norm.state_dict())
    x = _data((3, 4, 100))[0].to(dtype)
    y = ours(x)
    assert y.dtype == dtype
    tol = {torch.float16: 1e-3, torch.bfloat16: 1e-2}.get(dtype, 1e-6)
    torch.testing.assert_close(y, torch_norm(x), rtol=tol, atol=tol)


def test_state_dict_compatible_with_nn_layer_norm():
    """Same keys and shapes: each loads the other's state_dict strictly (affine off / bias off too)."""
    for kwargs in (dict(), dict(elementwise_affine=False), dict(bias=False)):
        torch_norm, ours = nn.LayerNorm(96, eps=1e-6, **kwargs), LayerNorm(96, eps=1e-6, **kwargs)
        for p in torch_norm.parameters():
            nn.init.normal_(p)
        assert list(ours.state_dict()) == list(torch_norm.state_dict())
        ours.load_state_dict(torch_norm.state_dict(), strict=True)
        for key, value in torch_norm.state_dict().items():
            assert torch.equal(ours.state_dict()[key], value)
        for p in torch_norm.parameters():  # so that loading ours back has something to restore
            nn.init.zeros_(p)
        torch_norm.load_state_dict(ours.state_dict(), strict=True)
        x = _data((6, 96))[0].float()
        torch.testing.assert_close(ours(x), torch_norm(x))
    assert isinstance(LayerNorm(8), nn.LayerNorm)


def test_any_leading_dims_non_contiguous_and_empty():
    x = _data((4, 6, 5, 16))[0].float()
    norm = LayerNorm(16)
    for t in (x, x[0, 0, 0], x.transpose(1, 2), x[:, ::2]):  # 1-D, permuted, strided views
        for backend in BACKENDS:
            norm.backend = backend
            torch.testing.assert_close(norm(t), F.layer_norm(t, (16,), norm.weight, norm.bias))
    for backend in BACKENDS:
        empty = torch.zeros(0, 3, 16, requires_grad=True)
        norm = LayerNorm(16, backend=backend)
        y = norm(empty)
        assert y.shape == (0, 3, 16)
        y.sum().backward()
        assert empty.grad.shape == empty.shape and torch.equal(norm.weight.grad, torch.zeros(16))


def test_gradcheck_reference_float64():
    x, weight, bias = (t.requires_grad_() for t in _data((3, 4, 5)))
    assert torch.autograd.gradcheck(lambda *a: layer_norm(*a, backend="reference"), (x, weight, bias))
    assert torch.autograd.gradcheck(lambda a, b: layer_norm(a, None, b, backend="reference"), (x, bias))
    assert torch.autograd.gradcheck(lambda a: layer_norm(a, backend="reference"), (x,))


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_is_deterministic(backend):
    """Two backward passes give bitwise equal gradients (no atomics; fixed partial-sum order)."""
    x, weight, bias = (t.float().requires_grad_() for t in _data((203, 96), seed=3))
    dy = torch.randn(203, 96)
    runs = [torch.autograd.grad(layer_norm(x, weight, bias, backend=backend), (x, weight, bias), dy)
            for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_compile_fullgraph_single_op():
    """torch.compile(fullgraph=True) traces the module as one custom op (fake implementation), forward
    and backward, with and without autocast, equal to eager."""
    model = nn.Sequential(LayerNorm(16, backend="reference"), nn.Linear(16, 8))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 5, 16, requires_grad=True)
    y = compiled(x)
    torch.testing.assert_close(y, model(x))
    (grad_compiled,) = torch.autograd.grad(y.sum(), x)
    (grad_eager,) = torch.autograd.grad(model(x).sum(), x)
    torch.testing.assert_close(grad_compiled, grad_eager)
    norm = torch.compile(LayerNorm(16, backend="reference"), fullgraph=True, backend="aot_eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert norm(x).dtype == torch.bfloat16
    graphs = []
    torch.compile(model[0], fullgraph=True, backend=lambda gm, _: graphs.append(gm) or gm)(x)
    ops = [n.target for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert torch.ops.vmamba_zoo.layer_norm_fwd.default in ops or torch.ops.vmamba_zoo.layer_norm_fwd in ops


def test_meta_device():
    norm = LayerNorm(32, device="meta")
    y = norm(torch.empty(2, 7, 32, device="meta", dtype=torch.float16))
    assert y.device.type == "meta" and y.shape == (2, 7, 32) and y.dtype == torch.float16


def test_errors():
    norm = LayerNorm(96)
    with pytest.raises(ValueError, match=r"LayerNorm\(96\): expected an input whose last dimension is 96, "
                                         r"got shape \(2, 3, 100\)"):
        norm(torch.zeros(2, 3, 100))
    with pytest.raises(ValueError, match="last dimension is 96, got shape"):
        norm(torch.tensor(1.0))
    with pytest.raises(ValueError, match="last dimension only"):
        LayerNorm((4, 96))
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\)"):
        layer_norm(torch.zeros(3, 8), torch.ones(7))
    with pytest.raises(ValueError, match="floating-point"):
        layer_norm(torch.zeros(3, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown backend 'cuda-fast'"):
        layer_norm(torch.zeros(3, 8), backend="cuda-fast")


def test_triton_fallback_and_dispatch():
    """float64 is not a Triton dtype: asking for it runs the reference with a warning. Auto mode on CPU
    never picks the interpreter. The kernels really are interpreted here."""
    x = _data((5, 8))[0]
    with pytest.warns(RuntimeWarning, match="'triton' cannot run layer_norm_fwd"):
        y = layer_norm(x, backend="triton")
    torch.testing.assert_close(y, F.layer_norm(x, (8,)))
    assert resolve("layer_norm_fwd", "auto", (x.float(),)) is LN.reference_layer_norm_fwd
    kernels = importlib.import_module(KERNELS)
    assert type(kernels._layer_norm_fwd_kernel).__name__ == "InterpretedFunction"
    # the dispatcher's copies of the kernel limits (kept there so dispatch does not import triton)
    assert LN._TRITON_DTYPES == kernels.SUPPORTED_DTYPES and LN._TRITON_MAX_COLUMNS == kernels.MAX_COLUMNS
    assert "backend='triton'" in repr(LayerNorm(4, backend="triton"))


@pytest.mark.parametrize("path", ["torch", "function"])
def test_eager_path_equals_the_custom_op(monkeypatch, path):
    """In plain eager mode LayerNorm skips the custom op's dispatch on the host: where the reference backends are
    chosen, through torch's own LayerNorm under autograd (C++ backward nodes); otherwise through an
    autograd.Function around the chosen backends. Output and gradients bit for bit the custom op's, which dispatch
    modes, tracers and compilers keep seeing."""
    LN_module = importlib.import_module("vmamba_zoo.ops.layer_norm")  # the package attribute is the function
    from _tooling import RecordOps

    if path == "function":  # as for the Triton forward on CUDA
        monkeypatch.setattr(LN_module, "_torch_path", lambda *args: False)
    norm = LayerNorm(24)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(3, 5, 24, dtype=torch.float64).float()

    def run():
        leaf = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = norm(leaf)
        grads = torch.autograd.grad(y.float().square().sum(), [leaf, norm.weight, norm.bias])
        return y, y.grad_fn, grads

    y_eager, fn_eager, grads_eager = run()
    assert y_eager.dtype == torch.bfloat16
    assert type(fn_eager).__name__ == ("ToCopyBackward0" if path == "torch" else "_EagerLayerNormBackward")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # nothing to differentiate: no node at all
        y_plain = norm(x)
    assert y_plain.grad_fn is None and torch.equal(y_plain, y_eager.detach())
    with RecordOps() as seen:
        run()
    assert {"vmamba_zoo.layer_norm_fwd.default", "vmamba_zoo.layer_norm_bwd.default"} <= seen.ops
    monkeypatch.setattr(LN_module, "plain_eager", lambda tensors: False)
    y_op, fn_op, grads_op = run()
    assert "layer_norm_fwd" in type(fn_op).__name__
    assert torch.equal(y_eager, y_op)
    for a, b in zip(grads_eager, grads_op):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=str)
def test_eager_torch_path_equals_the_custom_op_without_autocast(monkeypatch, dtype):
    """Half inputs outside autocast (computed in float32, rounded once) and float64 (computed in float64)."""
    LN_module = importlib.import_module("vmamba_zoo.ops.layer_norm")
    weight, bias = torch.randn(2, 24, dtype=torch.float64).float().unbind(0)
    x = torch.randn(4, 7, 24, dtype=torch.float64).to(dtype)

    def run():
        leaves = [x.clone().requires_grad_(), weight.clone().requires_grad_(), bias.clone().requires_grad_()]
        y = layer_norm(*leaves)
        return y, torch.autograd.grad(y.double().square().sum(), leaves)

    y_eager, grads_eager = run()
    # a half x runs as its float32 copy (then rounded: a cast node last); float64 needs no cast
    expected = "ToCopyBackward0" if dtype == torch.bfloat16 else "NativeLayerNormBackward0"
    assert y_eager.dtype == dtype and type(y_eager.grad_fn).__name__ == expected
    monkeypatch.setattr(LN_module, "plain_eager", lambda tensors: False)
    y_op, grads_op = run()
    assert torch.equal(y_eager, y_op)
    for a, b in zip(grads_eager, grads_op):
        assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_eager_path_saves_the_input_as_it_is(dtype):
    """For the backward the eager path keeps x itself, never a float32 copy of a half x (VMamba's residual stream is
    half under autocast: a copy would add a float32 map per LayerNorm to the training memory)."""
    norm = LayerNorm(24)
    x = torch.randn(4, 7, 24).to(dtype).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            norm(x)
    maps = [t for t in saved if t.shape == x.shape]
    assert maps and all(t.dtype == dtype and t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
                        for t in maps)


def test_eager_half_path_keeps_x_not_its_float32_copy():
    """Torch's LayerNorm on the float32 copy of a half x, with the copy made again in the backward: autograd keeps x
    itself (the next test checks), gradients equal the Function's bit for bit, and an in-place
    change of x before the backward is an error, as autograd's own saved tensors would give."""
    LN_module = importlib.import_module("vmamba_zoo.ops.layer_norm")
    weight, bias = torch.randn(2, 24, dtype=torch.float64).float().unbind(0)
    x = torch.randn(4, 7, 24).to(torch.bfloat16)

    def run():
        leaves = [x.clone().requires_grad_(), weight.clone().requires_grad_(), bias.clone().requires_grad_()]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer_norm(*leaves)
        return leaves, y

    leaves, y = run()
    assert type(y.grad_fn).__name__ == "ToCopyBackward0"
    grads = torch.autograd.grad(y.float().square().sum(), leaves, retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        leaves2, y2 = run()
        with torch.no_grad():
            leaves2[0].add_(1)
        y2.float().sum().backward()

    leaves3 = [t.detach().clone().requires_grad_() for t in leaves]  # the Function's gradients, same inputs
    y3 = LN_module._EagerLayerNorm.apply(*leaves3, 1e-5, torch.bfloat16, "auto")
    expected = torch.autograd.grad(y3.float().square().sum(), leaves3)
    assert torch.equal(y.detach(), y3.detach())
    for a, b in zip(grads, expected):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_eager_half_path_memory_and_user_hooks():
    """The float32 copy of a half x is freed after the forward (only x is kept); under the caller's own saved-tensor
    hooks (checkpointing, offloading) the Function runs instead, so their hooks see every saved tensor."""
    x = torch.randn(64, 32).to(torch.bfloat16).requires_grad_()
    norm = LayerNorm(32)
    kept = []

    def pack(t):
        kept.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = norm(x)
    assert type(y.grad_fn).__name__ == "_EagerLayerNormBackward"
    assert any(t is x or t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr() for t in kept)
    assert not any(t.dtype == torch.float32 and t.shape == x.shape for t in kept)

    y = norm(x)  # no hooks of the caller: the torch path, which keeps x and remakes the float32 input on demand
    node = y.grad_fn.next_functions[0][0]  # NativeLayerNormBackward0 under the cast's node
    assert type(node).__name__ == "NativeLayerNormBackward0"
    first, second = node._saved_input, node._saved_input
    assert first.dtype == torch.float32 and torch.equal(first, x.detach().float())
    assert first.data_ptr() != second.data_ptr()  # made at each unpack: the forward's copy was not kept
    y.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16


def test_eager_half_path_frees_the_float32_copy():
    """Autograd keeps the saved-tensor hooks with what they packed: they must not hold on to the float32 copy (a
    float32 map per LayerNorm of the residual stream, +0.7 GiB in a VMamba-T training step at batch 128)."""
    import gc
    import weakref

    x = torch.randn(64, 32).to(torch.bfloat16).requires_grad_()
    norm = LayerNorm(32)
    copies = []
    real_to = torch.Tensor.to

    def recording_to(t, *args, **kwargs):
        out = real_to(t, *args, **kwargs)
        if t is x and out.dtype == torch.float32:
            copies.append(weakref.ref(out))
        return out

    torch.Tensor.to = recording_to
    try:
        y = norm(x)
    finally:
        torch.Tensor.to = real_to
    gc.collect()
    assert type(y.grad_fn).__name__ == "ToCopyBackward0" and len(copies) == 1
    assert copies[0]() is None  # freed while the graph (and its hooks) are alive
    y.float().sum().backward()
