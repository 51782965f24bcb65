"""The CUDA LayerNorm forward (vmamba_zoo/ops/csrc/selective_scan/layer_norm.cu, .cpp) and its eager C++ autograd
node, run on the CPU through the CUDA emulation (tests/cuda_emulation), behind vmamba_zoo.ops.layer_norm with
backend "cuda": values against float64, odd sizes, optional affine parameters, every input / output dtype pair, the
eager node against the custom op and the Python autograd.Function bit for bit, and the errors of bad input."""
import importlib

import pytest
import torch
import torch.nn.functional as F

from vmamba_zoo.ops import cuda_backend, layer_norm
from vmamba_zoo.ops.backends import resolve

import cuda_emulation

LN = importlib.import_module("vmamba_zoo.ops.layer_norm")  # the package attribute is the function
TOL = {torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}  # relative to the largest value


def _expected(x, weight, bias, eps=1e-5):
    return F.layer_norm(x.double(), (x.shape[-1],), None if weight is None else weight.double(),
                        None if bias is None else bias.double(), eps)


@pytest.mark.parametrize("in_dtype, out_dtype", [(torch.float32, torch.float32), (torch.float32, torch.float16),
                                                 (torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16),
                                                 (torch.bfloat16, torch.float32)], ids=str)
@pytest.mark.parametrize("shape", [(3, 5, 96), (17, 33), (2, 1), (4, 7, 100)], ids=str)
@pytest.mark.parametrize("affine", ["both", "weight", "none"])
def test_cuda_layer_norm_forward_against_float64(cuda_on_cpu, in_dtype, out_dtype, shape, affine):
    """Rows not a multiple of the block's 8, columns below, at and above a warp's 32; the statistics too."""
    g = torch.Generator().manual_seed(sum(shape))
    x = (3 + 2 * torch.randn(*shape, dtype=torch.float64, generator=g)).to(in_dtype)  # a mean far from 0
    weight = torch.randn(shape[-1], generator=g) if affine != "none" else None
    bias = torch.randn(shape[-1], generator=g) if affine == "both" else None
    y = layer_norm(x, weight, bias, out_dtype=out_dtype, backend="cuda")
    expected = _expected(x, weight, bias)
    assert y.dtype == out_dtype and y.shape == x.shape
    # relative to the largest value (at least 1: one column normalises to zeros)
    assert (y.double() - expected).abs().max().item() < TOL[out_dtype] * max(expected.abs().max().item(), 1.0)
    _, mean, rstd = torch.ops.vmamba_zoo_cuda_emulated.layer_norm_fwd(x, weight, bias, 1e-5, out_dtype)
    xd = x.double()
    torch.testing.assert_close(mean.double(), xd.mean(-1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rstd.double(), (xd.var(-1, unbiased=False) + 1e-5).rsqrt(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_eager_node_equals_the_custom_op_and_the_function(cuda_on_cpu, monkeypatch, dtype):
    """In plain eager mode backend "cuda" runs the extension's C++ node (the CUDA forward, torch's backward on the
    float32 inputs): output and gradients equal the custom op's and the Python autograd.Function's bit for bit; it
    makes no node without gradients and refuses a double backward."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 9, 40, generator=g).to(dtype)
    weight, bias = torch.randn(2, 40, generator=g).unbind(0)

    def run(node):
        leaves = [x.clone().requires_grad_(), weight.clone().requires_grad_(), bias.clone().requires_grad_()]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer_norm(*leaves, backend="cuda")
        assert y.dtype == torch.bfloat16 and node in y.grad_fn.name()
        return y, torch.autograd.grad(y.float().square().sum(), leaves)

    results = {"cpp": run("LayerNormEager")}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer_norm(x, weight, bias, backend="cuda").grad_fn is None
    leaf = x.clone().requires_grad_()
    y = layer_norm(leaf, weight.requires_grad_(), bias, backend="cuda")
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(y.float().square().sum(), [leaf], create_graph=True)
    with monkeypatch.context() as python_only:
        python_only.setattr(LN, "_cuda_eager_node", lambda *args: None)
        results["function"] = run("_EagerLayerNormBackward")
    monkeypatch.setattr(LN, "plain_eager", lambda tensors: False)
    results["op"] = run("layer_norm_fwd")
    for path in ("cpp", "function"):
        assert torch.equal(results[path][0], results["op"][0]), path
        for a, b in zip(results[path][1], results["op"][1]):
            assert a.dtype == b.dtype and torch.equal(a, b), path


def test_cuda_layer_norm_auto_choice(cuda_on_cpu, monkeypatch):
    """Auto mode: the custom op (what torch.compile runs) keeps torch's (or Triton's) forward; the plain eager path
    runs the CUDA forward, as the C++ node with gradients and alone without; an environment variable or a backend
    argument naming another backend wins; parameters other than float32 are not supported."""
    x = torch.randn(4, 8)
    weight, bias = torch.randn(2, 8).unbind(0)
    assert resolve("layer_norm_fwd", "auto", (x, weight)) is LN.reference_layer_norm_fwd
    calls, forward = [], LN._forward
    monkeypatch.setattr(LN, "_forward", lambda *args: calls.append(args[-1]) or forward(*args))  # records the backend
    leaf = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "LayerNormEager" in layer_norm(leaf, weight, bias).grad_fn.name()
        assert layer_norm(x, weight, bias).grad_fn is None and calls == ["cuda"]  # no gradients: the forward alone
        assert "LayerNormEager" not in layer_norm(leaf, weight, bias, backend="reference").grad_fn.name()
        monkeypatch.setenv("VMAMBA_ZOO_LAYER_NORM_FWD_BACKEND", "reference")
        assert "LayerNormEager" not in layer_norm(leaf, weight, bias).grad_fn.name()
        layer_norm(x, weight, bias)
        assert calls == ["cuda", "auto"]
        monkeypatch.setenv("VMAMBA_ZOO_LAYER_NORM_FWD_BACKEND", "cuda")
        assert resolve("layer_norm_fwd", "auto", (x, weight)) is not LN.reference_layer_norm_fwd
    assert not cuda_backend.layer_norm_supports((x, weight.double()))
    assert not cuda_backend.layer_norm_supports((x.double(),))


def test_cuda_layer_norm_op_errors(emulated_ops):
    ops = getattr(torch.ops, cuda_emulation.OPS_NAMESPACE)
    x = torch.randn(3, 8)
    with pytest.raises(RuntimeError, match=r"weight must have shape \(8,\)"):
        ops.layer_norm_fwd(x, torch.ones(7), None, 1e-5, torch.float32)
    with pytest.raises(RuntimeError, match="bias must be float32"):
        ops.layer_norm_fwd(x, None, torch.ones(8, dtype=torch.float16), 1e-5, torch.float32)
    with pytest.raises(RuntimeError, match="x must be float32, float16 or bfloat16"):
        ops.layer_norm_fwd(x.double(), None, None, 1e-5, torch.float32)
    with pytest.raises(RuntimeError, match="out_dtype must be float32, float16 or bfloat16"):
        ops.layer_norm_fwd(x, None, None, 1e-5, torch.float64)
    y, mean, rstd = ops.layer_norm_fwd(torch.empty(0, 5), None, None, 1e-5, torch.float32)
    assert y.shape == (0, 5) and mean.shape == (0,) and rstd.shape == (0,)
