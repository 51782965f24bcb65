"""The CUDA selective-scan backend on the GPU against the float64 oracle, forward and backward.

Run on the device machine: ``pytest -m gpu tests/gpu/test_cuda_backend.py``. The first test builds the
extension just in time unless it was built at install (a minute or two). Every call here asks for
backend="cuda" with RuntimeWarnings turned into errors, so a silent fallback to another backend fails.
"""
import itertools
import os
import warnings

import pytest
import torch

from vmamba_zoo.analysis.benchmark import scan_inputs
from vmamba_zoo.ops import cuda_backend, reference, selective_scan
from vmamba_zoo.ops.reference import selective_scan_naive

pytestmark = pytest.mark.gpu

FWD_TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
GRAD_TOL = {torch.float32: 1e-4, torch.float16: 1e-1, torch.bfloat16: 1e-1}
GRAD_ORDER = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
# where the tensors go; tests/test_cuda_backend_emulated.py runs some of these tests on "cpu" against the
# same host code and kernels, emulated
DEVICE = "cuda"
PARAMS = ("A", "D", "delta_bias")


@pytest.fixture(scope="module", autouse=True)
def _extension():
    if not torch.cuda.is_available():
        pytest.fail("the gpu suite needs a CUDA device (run it on the device machine)")
    if not cuda_backend.load_extension():
        pytest.fail(f"the CUDA selective scan did not load: {cuda_backend.extension_status()}")
    assert torch.ops.vmamba_zoo_cuda.kernels_available(torch.cuda.current_device())


def _inputs(batch, groups, group_size, d_state, length, seed, positive_delta=False):
    return scan_inputs(batch, groups, group_size, d_state, length, seed, positive_delta)


def _rel(a, b):
    return ((a.double().cpu() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _oracle(length):
    if length <= 300:
        return selective_scan_naive
    return lambda **kw: selective_scan(**kw, backend="reference")  # float64 on the CPU: log-depth scan


def _run_cuda(ours, softplus, fp32_output=True):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would be a warning: fail instead
        return selective_scan(**ours, delta_softplus=softplus, fp32_output=fp32_output, backend="cuda")


def _check(shape, dtype, optionals=("D", "z", "delta_bias"), softplus=True, fp32_output=True, seed=0):
    batch, groups, group_size, d_state, length = shape
    data = _inputs(*shape, seed=seed + length, positive_delta=not softplus)
    for name in ("D", "z", "delta_bias"):
        if name not in optionals:
            data[name] = None
    ours = {k: None if v is None else v.to(DEVICE, torch.float32 if k in PARAMS else dtype).requires_grad_()
            for k, v in data.items()}
    ref = {k: None if v is None else ours[k].detach().double().cpu().requires_grad_() for k, v in data.items()}
    y = _run_cuda(ours, softplus, fp32_output)
    y_ref = _oracle(length)(**ref, delta_softplus=softplus)
    assert y.dtype == (torch.float32 if fp32_output else dtype) and y.shape == y_ref.shape
    assert torch.isfinite(y).all()
    assert _rel(y, y_ref) < FWD_TOL[dtype], "forward"
    grad = torch.randn_like(y_ref)
    names = [k for k in GRAD_ORDER if ours[k] is not None]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = torch.autograd.grad(y, [ours[k] for k in names], grad.to(DEVICE, y.dtype))
    want = torch.autograd.grad(y_ref, [ref[k] for k in names], grad)
    for name, a, b in zip(names, got, want):
        assert a.dtype == ours[name].dtype and a.shape == ours[name].shape, name
        assert torch.isfinite(a).all(), name
        assert _rel(a, b) < GRAD_TOL[dtype], name


# (batch, groups, group_size, d_state, length): every length / d_state / group count of the brief, around
# the kernels' 256-position chunk, with group sizes that leave spare warps or need several blocks
SHAPES = ([(2, 2, 3, 4, length) for length in (1, 33, 257, 1000, 4097)]
          + [(2, groups, 8, d_state, 130) for groups, d_state in itertools.product((1, 2, 4), (1, 4, 16, 64))]
          + [(2, 4, 96, 1, 3136 // 16), (1, 2, 20, 16, 513), (3, 1, 64, 1, 1000), (1, 1, 40, 64, 300)])
OPTIONALS = {"all": ("D", "z", "delta_bias"), "none": (), "D_only": ("D",), "z_bias": ("z", "delta_bias")}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cuda_matches_oracle(shape, dtype):
    _check(shape, dtype)


@pytest.mark.parametrize("options", list(OPTIONALS))
@pytest.mark.parametrize("softplus", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_optional_inputs(options, softplus, dtype):
    _check((2, 2, 5, 4, 300), dtype, optionals=OPTIONALS[options], softplus=softplus)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_output_in_input_dtype(dtype):
    """fp32_output=False: y (and the incoming gradient) in the activations' dtype."""
    _check((2, 2, 3, 4, 257), dtype, fp32_output=False)


@pytest.mark.parametrize("shape", [(4, 4, 96, 1, 3136), (2, 4, 40, 16, 1000), (2, 1, 24, 64, 600)],
                         ids=lambda s: "x".join(map(str, s)))
def test_cuda_backward_is_deterministic(shape):
    """Two backward runs give the same bits (fixed-order partial sums, no atomics)."""
    data = _inputs(*shape, seed=1)
    ours = {k: v.to(DEVICE, torch.float32 if k in PARAMS else torch.float16).requires_grad_() for k, v in data.items()}
    y = _run_cuda(ours, True)
    grad = torch.randn_like(y)
    first = torch.autograd.grad(y, list(ours.values()), grad, retain_graph=True)
    second = torch.autograd.grad(y, list(ours.values()), grad)
    for name, a, b in zip(ours, first, second):
        assert torch.equal(a, b), name
    assert torch.equal(y, _run_cuda(ours, True))


def test_cuda_mixed_dtypes():
    """fp16 activations with fp32 B/C and dout (as autocast can produce): the exact float32 route."""
    data = _inputs(2, 2, 6, 4, 200, seed=3)
    ours = {k: v.to(DEVICE, torch.float16 if k in ("u", "delta", "z") else torch.float32).requires_grad_()
            for k, v in data.items()}
    ref = {k: ours[k].detach().double().cpu().requires_grad_() for k in data}
    y = _run_cuda(ours, True)
    y_ref = selective_scan_naive(**ref, delta_softplus=True)
    assert _rel(y, y_ref) < 1e-5
    grad = torch.randn_like(y_ref)
    got = torch.autograd.grad(y, list(ours.values()), grad.to(DEVICE, torch.float32))
    want = torch.autograd.grad(y_ref, list(ref.values()), grad)
    for name, a, b in zip(ours, got, want):
        assert a.dtype == ours[name].dtype, name
        assert _rel(a, b) < 1e-2, name


def test_cuda_non_contiguous_inputs_and_side_stream():
    """Strided inputs (made contiguous by the op) on a non-default stream give the oracle's result."""
    data = {k: v.to(DEVICE, torch.float32) for k, v in _inputs(2, 2, 4, 4, 160, seed=5).items()}
    # every other position of a twice-as-long copy: stride 2 along L (sliced on the GPU, so it stays strided)
    ours = {k: torch.cat([v, v], dim=-1)[..., ::2] if v.dim() >= 3 else v for k, v in data.items()}
    assert not ours["u"].is_contiguous() and not ours["B"].is_contiguous()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y = _run_cuda(ours, True)
    torch.cuda.current_stream().wait_stream(stream)
    y_ref = selective_scan_naive(**{k: v.double().cpu() for k, v in ours.items()}, delta_softplus=True)
    assert _rel(y, y_ref) < 1e-5


@pytest.mark.parametrize("warps", ["1", "4", "16"])
def test_cuda_backward_block_width_override(warps, monkeypatch):
    """VMAMBA_ZOO_CUDA_BWD_WARPS (a tuning knob) changes only how dB/dC partial sums are split."""
    monkeypatch.setenv("VMAMBA_ZOO_CUDA_BWD_WARPS", warps)
    _check((2, 2, 40, 4, 300), torch.float32)


def test_cuda_backend_is_auto_choice():
    """Auto mode picks the cuda backend for CUDA inputs (it outranks triton)."""
    from vmamba_zoo.ops.backends import resolve
    u = torch.randn(1, 4, 8, device=DEVICE)
    A = -torch.rand(4, 2, device=DEVICE)
    B = torch.randn(1, 2, 2, 8, device=DEVICE)
    assert resolve("selective_scan_fwd", "auto", (u, u, A, B, B)) is cuda_backend.selective_scan_fwd


def test_cuda_empty_length():
    u = torch.randn(2, 4, 0, device=DEVICE, requires_grad=True)
    A = -torch.rand(4, 3, device=DEVICE, requires_grad=True)
    B = torch.randn(2, 2, 3, 0, device=DEVICE, requires_grad=True)
    y = _run_cuda(dict(u=u, delta=u, A=A, B=B, C=B), True)
    assert y.shape == (2, 4, 0)
    (dA,) = torch.autograd.grad(y.sum(), [A], allow_unused=True)
    assert dA is None or torch.count_nonzero(dA) == 0


@pytest.mark.parametrize("shape", [(2, 2, 3, 4, 600), (1, 4, 8, 1, 1000), (1, 2, 20, 2, 257)],
                         ids=lambda s: "x".join(map(str, s)))
def test_cuda_saved_states(shape):
    """The training forward's chunk-start states equal the reference's, and the backward from them equals the one
    that recomputes them (the kernels' first pass) to float32 rounding."""
    data = {k: None if v is None else v.to(DEVICE, torch.float32)
            for k, v in _inputs(*shape, seed=shape[-1]).items()}
    args = [data[k] for k in GRAD_ORDER] + [True, True]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        y, states = cuda_backend.selective_scan_fwd_states(*args)
        y_ref, states_ref = reference.selective_scan_fwd_states(
            *[None if a is None else a.double().cpu() for a in args[:8]], True, True)
        assert states.dtype == torch.float32 and states.shape == states_ref.shape
        assert _rel(y, y_ref) < 1e-5 and _rel(states, states_ref) < 1e-5
        dout = torch.randn_like(y)
        recomputed = cuda_backend.selective_scan_bwd(dout, *args[:9])
        saved = cuda_backend.selective_scan_bwd(dout, *args[:9], saved_states=states)
    for name, a, b in zip(GRAD_ORDER, saved, recomputed):
        assert _rel(a, b.double().cpu()) < 1e-5, name
    with pytest.raises(RuntimeError, match="saved_states must have shape"):
        cuda_backend.selective_scan_bwd(dout, *args[:9], saved_states=states[:, :, :1].contiguous())


# d_state 16: spare lanes and a second (and third) slice, a span cut by the sequence's end, states at three chunk starts
FWD_LANES_SHAPES = [(2, 2, 40, 16, 203), (1, 1, 7, 16, 600)]


@pytest.mark.parametrize("kernel", ["lanes", "lane_pairs"])
@pytest.mark.parametrize("shape", FWD_LANES_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cuda_lanes_forward(shape, dtype, kernel, monkeypatch):
    """VMAMBA_ZOO_CUDA_FWD_KERNEL=lanes / lane_pairs: the forward with one channel a lane or a pair of lanes (d_state
    16) matches the oracle, and so do the gradients the chunked backward takes from the states it saved, with and
    without the optional inputs."""
    monkeypatch.setenv("VMAMBA_ZOO_CUDA_FWD_KERNEL", kernel)
    _check(shape, dtype)
    _check(shape, dtype, optionals=OPTIONALS["none"], softplus=False, fp32_output=dtype == torch.float32)


def test_cuda_lanes_forward_states_and_switch(monkeypatch):
    """Each lanes forward's saved states equal the reference's, its output is another kernel's (the summation order
    differs in the last bits over 600 steps and 16 states), and an unknown kernel name is refused."""
    data = {k: None if v is None else v.to(DEVICE, torch.float32) for k, v in _inputs(1, 2, 5, 16, 600, 9).items()}
    args = [data[k] for k in GRAD_ORDER] + [True, True]
    y_ref, states_ref = reference.selective_scan_fwd_states(
        *[None if a is None else a.double().cpu() for a in args[:8]], True, True)
    ys = {}
    for kernel in ("chunks", "lanes", "lane_pairs"):
        monkeypatch.setenv("VMAMBA_ZOO_CUDA_FWD_KERNEL", kernel)
        ys[kernel], states = cuda_backend.selective_scan_fwd_states(*args)
        assert states.shape == states_ref.shape == (1, 10, 3, 16)
        assert _rel(ys[kernel], y_ref) < 1e-5 and _rel(states, states_ref) < 1e-5, kernel
    assert not torch.equal(ys["lanes"], ys["chunks"]) and not torch.equal(ys["lane_pairs"], ys["lanes"])
    monkeypatch.setenv("VMAMBA_ZOO_CUDA_FWD_KERNEL", "warp")
    with pytest.raises(RuntimeError, match="FWD_KERNEL must be 'auto', 'chunks', 'lanes' or 'lane_pairs', got 'warp'"):
        cuda_backend.selective_scan_fwd_states(*args)


def _multiprocessors():
    # the emulated extension reports 2 (host_common.h's multiprocessor_count)
    return torch.cuda.get_device_properties(DEVICE).multi_processor_count if DEVICE == "cuda" else 2


def test_cuda_auto_picks_lanes_forward_by_warps_an_sm(monkeypatch):
    """Unset or "auto", the forward at d_state 16 runs the chunked kernel below 2 of lane_pairs' one-warp blocks (16
    channels of a group each) an SM, lane_pairs from there up to the 12 blocks an SM that fit at once, and the
    one-lane kernel above (selective_scan.cpp, lanes_forward): bit for bit each kernel's output. d_state 8 always
    takes the chunked kernel, which has no lanes build."""
    sms = _multiprocessors()
    # groups of 40 channels: 3 pair warps (one with 16 spare lanes) per group and batch; 2 x sms of them from
    # ceil(2 sms / 3) groups, 12 x sms at 4 sms groups
    least = -(-2 * sms // 3)
    cases = ((1, least - 1, "chunks"), (1, least, "lane_pairs"), (2, least, "lane_pairs"), (1, 4 * sms, "lane_pairs"),
             (1, 4 * sms + 1, "lanes"))
    for batch, groups, expect in cases:
        data = {k: None if v is None else v.to(DEVICE, torch.float32)
                for k, v in _inputs(batch, groups, 40, 16, 40, 3).items()}
        args = [data[k] for k in GRAD_ORDER] + [True, True]
        outputs = {}
        for kernel in ("chunks", "lanes", "lane_pairs", "auto"):
            monkeypatch.setenv("VMAMBA_ZOO_CUDA_FWD_KERNEL", kernel)
            outputs[kernel] = cuda_backend.selective_scan_fwd(*args)
        monkeypatch.delenv("VMAMBA_ZOO_CUDA_FWD_KERNEL")
        # the three kernels are told apart
        assert not torch.equal(outputs["chunks"], outputs["lane_pairs"])
        assert not torch.equal(outputs["lanes"], outputs["lane_pairs"])
        assert not torch.equal(outputs["lanes"], outputs["chunks"])
        assert torch.equal(outputs["auto"], outputs[expect]), (batch, groups)
        assert torch.equal(cuda_backend.selective_scan_fwd(*args), outputs[expect]), (batch, groups)
    data = {k: None if v is None else v.to(DEVICE, torch.float32)
            for k, v in _inputs(2, sms, 40, 8, 40, 3).items()}
    args = [data[k] for k in GRAD_ORDER] + [True, True]
    monkeypatch.setenv("VMAMBA_ZOO_CUDA_FWD_KERNEL", "chunks")
    chunks = cuda_backend.selective_scan_fwd(*args)
    for kernel in ("lanes", "lane_pairs"):
        monkeypatch.setenv("VMAMBA_ZOO_CUDA_FWD_KERNEL", kernel)
        assert torch.equal(cuda_backend.selective_scan_fwd(*args), chunks), kernel


@pytest.mark.skipif(os.environ.get("VMAMBA_ZOO_GPU_LARGE") != "1", reason="set VMAMBA_ZOO_GPU_LARGE=1 (several GiB)")
def test_cuda_offsets_past_2_31():
    """More than 2^31 elements in u: 64-bit offsets. Checked on the last channel against the oracle."""
    batch, channels, length = 2, 1024, 2 ** 20 + 7
    u = torch.randn(batch, channels, length, device="cuda", dtype=torch.float16)
    delta = torch.rand_like(u)
    A = -torch.rand(channels, 1, device="cuda")
    B = torch.randn(batch, 1, 1, length, device="cuda", dtype=torch.float16)
    y = _run_cuda(dict(u=u, delta=delta, A=A, B=B, C=B), True)
    last = slice(channels - 1, channels)
    y_ref = selective_scan(u[:, last].double().cpu(), delta[:, last].double().cpu(), A[last].double().cpu(),
                           B.double().cpu(), B.double().cpu(), delta_softplus=True, backend="reference")
    assert _rel(y[:, last], y_ref) < 1e-4
