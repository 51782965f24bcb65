"""Triton selective-scan kernels on the CPU through TRITON_INTERPRET=1, against the float64 oracle."""
import importlib
import os

import pytest
import torch

from vmamba_zoo.ops import selective_scan
from vmamba_zoo.ops.reference import selective_scan_naive

KERNELS = "vmamba_zoo.ops.kernels.triton_selective_scan"


@pytest.fixture
def interpreter():
    """The kernels module, which must run in Triton's interpreter here (tests/conftest.py turns it on)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.fail("TRITON_INTERPRET=1 must be set before triton is imported (see tests/conftest.py)")
    return importlib.import_module(KERNELS)


def _inputs(batch, groups, group_size, d_state, length, seed):
    g = torch.Generator().manual_seed(seed)
    f = dict(dtype=torch.float64, generator=g)
    channels = groups * group_size
    return dict(
        u=torch.randn(batch, channels, length, **f), delta=0.5 * torch.randn(batch, channels, length, **f),
        A=-torch.exp(torch.randn(channels, d_state, **f)), B=torch.randn(batch, groups, d_state, length, **f),
        C=torch.randn(batch, groups, d_state, length, **f), D=torch.randn(channels, **f),
        z=torch.randn(batch, channels, length, **f), delta_bias=0.3 * torch.randn(channels, **f))


@pytest.mark.parametrize("batch,groups,group_size,d_state,length,options", [
    (2, 2, 4, 1, 37, "all"),        # VMamba v2: d_state 1, 2 chunks not needed
    (1, 4, 2, 4, 20, "bare"),       # no D, z, bias, softplus
    (2, 1, 8, 2, 130, "all"),       # several chunks (BLOCK_L = 128)
    (1, 2, 3, 16, 17, "no_z"),      # odd group size -> one-channel blocks, d_state 16
])
def test_triton_matches_oracle_fwd_bwd(interpreter, batch, groups, group_size, d_state, length, options):
    """Forward and every gradient of the Triton kernels equal the step-by-step float64 oracle (fp32 inputs)."""
    data = _inputs(batch, groups, group_size, d_state, length, seed=length)
    if options == "bare":
        data.update(D=None, z=None, delta_bias=None)
    if options == "no_z":
        data.update(z=None)
    softplus = options != "bare"
    ours = {k: None if v is None else v.float().requires_grad_() for k, v in data.items()}
    ref = {k: None if v is None else v.clone().requires_grad_() for k, v in data.items()}
    y = selective_scan(**ours, delta_softplus=softplus, backend="triton")
    y_ref = selective_scan_naive(**ref, delta_softplus=softplus)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5 * y_ref.abs().max().item())
    grad = torch.randn_like(y_ref)
    names = [k for k, v in ours.items() if v is not None]
    got = torch.autograd.grad(y, [ours[k] for k in names], grad.float())
    want = torch.autograd.grad(y_ref, [ref[k] for k in names], grad)
    for name, a, b in zip(names, got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5 * b.abs().max().item(), msg=name)


def test_triton_runs_interpreted(interpreter):
    """Guard: the kernels really are interpreter functions here (so the test above ran Triton code)."""
    assert type(interpreter._ss_fwd_kernel).__name__ == "InterpretedFunction"


def test_triton_is_not_picked_automatically_on_cpu(interpreter):
    """Auto mode on CPU tensors never chooses the Triton interpreter; asking by name does."""
    from vmamba_zoo.ops import reference
    from vmamba_zoo.ops.backends import resolve
    x = torch.zeros(1)
    assert resolve("selective_scan_fwd", "auto", (x,)) is reference.selective_scan_fwd
    assert resolve("selective_scan_fwd", "triton", (x,)) is not reference.selective_scan_fwd
