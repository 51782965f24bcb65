"""Triton selective-scan kernels on the CPU through TRITON_INTERPRET=1, against the float64 oracle."""
import importlib
import os

import pytest
import torch

from vmamba_zoo.analysis.benchmark import scan_inputs
from vmamba_zoo.ops import reference, selective_scan
from vmamba_zoo.ops.reference import selective_scan_naive

KERNELS = "vmamba_zoo.ops.kernels.triton_selective_scan"


@pytest.fixture
def interpreter():
    """The kernels module, which must run in Triton's interpreter here (tests/conftest.py turns it on)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.fail("TRITON_INTERPRET=1 must be set before triton is imported (see tests/conftest.py)")
    return importlib.import_module(KERNELS)


def _inputs(batch, groups, group_size, d_state, length, seed):
    return scan_inputs(batch, groups, group_size, d_state, length, seed)


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


@pytest.mark.parametrize("length", [200, 600])
def test_triton_fwd_states_are_the_reference_chunk_states(interpreter, length):
    """The Triton training forward's states (its chunk starts at every 256th position) equal the reference's."""
    data = {k: None if v is None else v.float() for k, v in _inputs(1, 2, 2, 2, length, seed=length).items()}
    args = [data[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")] + [True, True]
    y, states = interpreter.selective_scan_fwd_states(*args)
    y_ref, states_ref = reference.selective_scan_fwd_states(*[None if a is None else a.double() for a in args[:8]],
                                                            True, True)
    assert states.shape == states_ref.shape == (1, 4, -(-length // 256), 2) and states.dtype == torch.float32
    torch.testing.assert_close(states.double(), states_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5 * y_ref.abs().max().item())


def test_non_power_of_two_state_falls_back_to_reference(interpreter):
    """d_state 3 cannot be tiled by the kernels: a request for Triton runs the reference, with a warning."""
    data = _inputs(1, 2, 2, 3, 9, seed=3)
    with pytest.warns(RuntimeWarning, match="'triton' cannot run selective_scan_fwd"):
        y = selective_scan(**{k: v.float() for k, v in data.items()}, delta_softplus=True, backend="triton")
    ref = selective_scan_naive(**data, delta_softplus=True)
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-5)


def test_triton_runs_interpreted(interpreter):
    """Guard: the kernels really are interpreter functions here (so the test above ran Triton code)."""
    assert type(interpreter._ss_fwd_kernel).__name__ == "InterpretedFunction"


def test_triton_is_not_picked_automatically_on_cpu(interpreter):
    """Auto mode on CPU tensors never chooses the Triton interpreter; asking by name does."""
    from vmamba_zoo.ops import reference
    from vmamba_zoo.ops.backends import resolve
    u, A, B = torch.zeros(1, 2, 3), torch.zeros(2, 4), torch.zeros(1, 1, 4, 3)
    assert resolve("selective_scan_fwd", "auto", (u, u, A, B, B)) is reference.selective_scan_fwd
    assert resolve("selective_scan_fwd", "triton", (u, u, A, B, B)) is not reference.selective_scan_fwd


@pytest.mark.parametrize("directions", [1, 2, 4])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("hw,channels,d_state,dt_rank", [((5, 7), 4, 1, 3), ((3, 12), 2, 4, 2), ((6, 6), 8, 2, 1)])
def test_triton_fused_ss2d_matches_reference(directions, channels_last, hw, channels, d_state, dt_rank):
    """The fused SS2D forward (gather by index map, delta on the fly, merged in place) equals the composition
    of the reference ops; its backward (which composes the finer ops) gives the reference gradients."""
    from vmamba_zoo.ops import ss2d_selective_scan
    h, w = hw
    g = torch.Generator().manual_seed(h * w + directions)
    batch, k, length = 2, directions, h * w
    x = torch.randn(batch, h, w, channels, generator=g) if channels_last else torch.randn(batch, channels, h, w,
                                                                                          generator=g)
    args = dict(dts=torch.randn(batch, k, dt_rank, length, generator=g),
                dt_weight=0.5 * torch.randn(k, channels, dt_rank, generator=g),
                dt_bias=0.3 * torch.randn(k * channels, generator=g),
                A=-torch.exp(torch.randn(k * channels, d_state, generator=g)),
                Bs=torch.randn(batch, k, d_state, length, generator=g),
                Cs=torch.randn(batch, k, d_state, length, generator=g), Ds=torch.randn(k * channels, generator=g))
    outs, grads = {}, {}
    grad_out = torch.randn(x.shape, generator=g)
    for backend in ("reference", "triton"):
        inputs = {"x": x.clone().requires_grad_(), **{n: t.clone().requires_grad_() for n, t in args.items()}}
        y = ss2d_selective_scan(inputs["x"], **{n: inputs[n] for n in args}, directions=directions,
                                channels_last=channels_last, backend=backend)
        outs[backend] = y
        grads[backend] = torch.autograd.grad(y, list(inputs.values()), grad_out)
    torch.testing.assert_close(outs["triton"], outs["reference"], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads["triton"], grads["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("directions,hw,channels,d_state", [(4, (5, 7), 4, 1), (2, (4, 10), 2, 2), (1, (3, 3), 4, 1)])
def test_triton_fused_ss2d_saves_step_states(directions, hw, channels, d_state):
    """With save_states the Triton forward also leaves the state before every 8th step (inside its 16-step chunks
    and at their starts, the last cut short), as the reference computes it from the whole state sequence."""
    h, w = hw
    g = torch.Generator().manual_seed(directions + channels)
    k, length = directions, h * w
    args = [torch.randn(2, h, w, channels, generator=g), torch.randn(2, k, 3, length, generator=g),
            0.5 * torch.randn(k, channels, 3, generator=g), 0.3 * torch.randn(k * channels, generator=g),
            -torch.exp(torch.randn(k * channels, d_state, generator=g)),
            torch.randn(2, k, d_state, length, generator=g), torch.randn(2, k, d_state, length, generator=g),
            torch.randn(k * channels, generator=g)]
    out, states = torch.ops.vmamba_zoo.ss2d_scan_fwd(*args, directions, True, "triton", True)
    out_ref, states_ref = torch.ops.vmamba_zoo.ss2d_scan_fwd(*args, directions, True, "reference", True)
    assert states.shape == states_ref.shape == (2, k, -(-length // 8), d_state, channels)
    torch.testing.assert_close(states, states_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    assert torch.ops.vmamba_zoo.ss2d_scan_fwd(*args, directions, True, "triton", False)[1].numel() == 0


def test_fused_ss2d_backward_is_the_triton_kernel(interpreter):
    """Asking for "triton" runs the fused backward kernel, not the reference composition."""
    from vmamba_zoo.ops import reference
    from vmamba_zoo.ops.backends import resolve
    from vmamba_zoo.ops.kernels import triton_ss2d
    x, dts, Bs = torch.zeros(1, 2, 3, 4), torch.zeros(1, 4, 1, 6), torch.zeros(1, 4, 2, 6)
    fn = resolve("ss2d_scan_bwd", "triton", (x, x, dts, Bs, Bs))
    assert fn is not reference.ss2d.ss2d_scan_bwd and fn.__name__ == "ss2d_scan_bwd"
    assert type(triton_ss2d._ss2d_bwd_kernel).__name__ == "InterpretedFunction"
