"""The CUDA selective-scan kernels' own code, run on the CPU by a thread-per-CUDA-thread emulation
(tests/cuda_emulation), against the float64 oracle: forward and every gradient, odd lengths, several
chunks, d_state 1..64, grouped B/C, blocks with spare warps, fp32/fp16/bf16, with and without z/D/bias.

This checks the kernels' indexing, warp scans and barriers without a GPU; the GPU suite
(tests/gpu/test_cuda_backend.py) checks the real thing.
"""
import pytest
import torch

from vmamba_zoo.analysis.benchmark import scan_inputs
from vmamba_zoo.ops import selective_scan
from vmamba_zoo.ops.reference import selective_scan_naive

from cuda_emulation import backward, build, compiler, forward

GRAD_ORDER = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
PARAMS = ("A", "D", "delta_bias")
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


@pytest.fixture(scope="module")
def lib():
    if compiler() is None:
        pytest.skip("no C++ compiler (g++) for the CUDA emulation")
    return build()


def _inputs(batch, groups, group_size, d_state, length, seed=0):
    return scan_inputs(batch, groups, group_size, d_state, length, seed)


def _rel(a, b):
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


# (batch, groups, group_size, d_state, length): lengths around the 256-position chunk, spare warps in the
# last block of a group (group_size 20: backward blocks of 7 warps), several blocks per group (40). Lengths
# that are multiples of 8 (1000, 264, 128) take the kernels' whole-span loads (whole_aligned_spans), the rest the
# per-lane tested ones. Full backward blocks take their own dB/dC sum: 8 warps at d_state 1 (group_size 8 and
# 40), 16 above d_state 4 (group_size 32, two blocks), and a full d_state-1 block over four chunks (8 x 777) rewrites
# its dB/dC buffers chunk after chunk.
SHAPES = [(1, 1, 1, 1, 1), (2, 2, 3, 4, 33), (2, 4, 8, 1, 257), (1, 2, 20, 2, 100), (1, 1, 40, 1, 70),
          (1, 2, 3, 16, 300), (1, 1, 1, 64, 260), (1, 1, 2, 1, 1000), (1, 1, 3, 2, 513), (1, 2, 20, 4, 264),
          (2, 2, 3, 16, 128), (1, 1, 32, 5, 264), (1, 1, 8, 1, 777)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("options", ["all", "none", "no softplus"])
def test_emulated_kernels_match_oracle_fp32(lib, shape, options):
    """'no softplus': D, z and a delta bias with dt = delta + bias (the kernels' path without the softplus, which
    'none', without a bias, leaves out)."""
    _check(lib, shape, torch.float32, with_optionals=options != "none", softplus=options == "all")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fp32_output", [True, False])
def test_emulated_kernels_half_types(lib, dtype, fp32_output):
    _check(lib, (2, 2, 3, 4, 300), dtype, fp32_output=fp32_output)


def _check(lib, shape, dtype, with_optionals=True, softplus=True, fp32_output=True):
    data = _inputs(*shape, seed=shape[-1])
    if not with_optionals:
        data.update(D=None, z=None, delta_bias=None)
    if not softplus:  # dt > 0 as in use: a negative one grows the state past float32 (the oracle reaches 1e72)
        data["delta"] = data["delta"].abs()
        if data["delta_bias"] is not None:
            data["delta_bias"] = data["delta_bias"].abs()
    ours = {k: None if v is None else v.to(torch.float32 if k in PARAMS else dtype) for k, v in data.items()}
    ref = {k: None if v is None else ours[k].double().requires_grad_() for k, v in data.items()}
    y = forward(lib, **ours, delta_softplus=softplus, fp32_output=fp32_output)
    oracle = selective_scan_naive if shape[-1] <= 300 else _reference64
    y_ref = oracle(**ref, delta_softplus=softplus)
    assert y.dtype == (torch.float32 if fp32_output else dtype)
    assert _rel(y, y_ref) < TOL[dtype]
    grad = torch.randn_like(y_ref)
    got = backward(lib, grad.to(y.dtype), **ours, delta_softplus=softplus)
    names = [k for k in GRAD_ORDER if ref[k] is not None]
    want = dict(zip(names, torch.autograd.grad(y_ref, [ref[k] for k in names], grad)))
    for name, g in zip(GRAD_ORDER, got):
        if ref[name] is None:
            assert g is None, name
            continue
        assert g.dtype == ours[name].dtype and g.shape == ours[name].shape, name
        assert torch.isfinite(g).all(), name
        assert _rel(g, want[name]) < TOL[dtype] * 10, name


def _reference64(**kw):
    return selective_scan(**kw, backend="reference")


def test_emulated_backward_is_deterministic(lib):
    """Two runs give the same bits although the emulated threads interleave differently each time."""
    data = {k: v.float() for k, v in _inputs(1, 2, 20, 4, 270, seed=1).items()}
    grad = torch.randn(data["u"].shape)
    first = backward(lib, grad, **data, delta_softplus=True)
    second = backward(lib, grad, **data, delta_softplus=True)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
