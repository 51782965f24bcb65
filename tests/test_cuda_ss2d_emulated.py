"""The fused SS2D CUDA kernels (vmamba_zoo/ops/csrc/selective_scan/ss2d_kernel.cuh) and their host code
(ss2d.cpp), run on the CPU through the thread-per-CUDA-thread emulation (tests/cuda_emulation), behind the
package's op (backend="cuda"), against the float64 composition of the reference ops: forward and every
gradient. Shapes cover spare lanes (channels not a multiple of 32), several segments per block, sub-chunks
cut short, 1/2/4 directions, ranks in each kernel build, channels-first input, fp16/bf16.
"""
import contextlib

import pytest
import torch

from vmamba_zoo.ops import cuda_backend, ss2d_selective_scan
from vmamba_zoo.ops.backends import resolve

import cuda_emulation

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
PARAMS = ("dt_weight", "dt_bias", "A", "Ds")


@pytest.fixture(params=["directions", "segments"])
def fwd_kernel(request, monkeypatch):
    """Each forward kernel: by direction (the default; atomic adds) and by segments (deterministic mode's)."""
    monkeypatch.setenv("VMAMBA_ZOO_SS2D_FWD_KERNEL", request.param)
    return request.param


@contextlib.contextmanager
def deterministic_algorithms():
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


def _data(batch, directions, hw, channels, rank, channels_last=True, seed=0):
    h, w = hw
    length = h * w
    g = torch.Generator().manual_seed(seed)
    f = dict(dtype=torch.float64, generator=g)
    x = torch.randn(batch, h, w, channels, **f) if channels_last else torch.randn(batch, channels, h, w, **f)
    return dict(x=x, dts=torch.randn(batch, directions, rank, length, **f),
                dt_weight=0.5 * torch.randn(directions, channels, rank, **f),
                dt_bias=0.3 * torch.randn(directions * channels, **f),
                A=-torch.exp(torch.randn(directions * channels, 1, **f)),
                Bs=torch.randn(batch, directions, 1, length, **f), Cs=torch.randn(batch, directions, 1, length, **f),
                Ds=torch.randn(directions * channels, **f))


def _rel(a, b):
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _check(shape, dtype=torch.float32, channels_last=True, seed=0, save_states=True):
    """save_states: the backward from the forward's saved states (as on a GPU in training), else the one
    re-walking the forward."""
    batch, directions, hw, channels, rank = shape
    data = _data(batch, directions, hw, channels, rank, channels_last, seed)
    ours = {n: t.to(torch.float32 if n in PARAMS else dtype).requires_grad_() for n, t in data.items()}
    ref = {n: ours[n].detach().double().requires_grad_() for n in data}
    y = ss2d_selective_scan(**ours, directions=directions, channels_last=channels_last, backend="cuda",
                            save_states=save_states)
    y_ref = ss2d_selective_scan(**ref, directions=directions, channels_last=channels_last, backend="reference")
    assert y.dtype == torch.float32 and y.shape == y_ref.shape
    assert _rel(y, y_ref) < TOL[dtype]
    grad = torch.randn(y_ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    got = torch.autograd.grad(y, list(ours.values()), grad.float())
    want = torch.autograd.grad(y_ref, list(ref.values()), grad)
    for name, a, b in zip(ours, got, want):
        assert a.dtype == ours[name].dtype and a.shape == b.shape, name
        assert _rel(a, b) < TOL[dtype] * 10, name  # gradients sum over L or channels: one more digit


# (batch, directions, (H, W), channels, dt_rank). The emulation runs a CUDA thread per OS thread: small shapes.
# 7x9 = 63 steps: 1 segment, its last sub-chunk cut short; 16x12 = 192: 6 segments of 32 steps forward, 4 of 48
# backward; 40 channels: a second tile with 24 spare lanes; ranks 3, 12, 24, 30, 48, 60 hit each kernel build
# (8/16/24/32/48/64).
SHAPES = [(1, 4, (7, 9), 32, 3), (2, 4, (16, 12), 40, 12), (1, 2, (5, 13), 8, 24), (1, 1, (3, 11), 33, 48),
          (1, 4, (1, 1), 4, 1), (1, 4, (13, 1), 16, 2), (1, 4, (6, 7), 8, 30), (1, 2, (4, 9), 8, 60)]


@pytest.mark.parametrize("save_states", [True, False], ids=["from_states", "rewalk"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"b{s[0]}k{s[1]}_{s[2][0]}x{s[2][1]}_d{s[3]}r{s[4]}")
def test_emulated_ss2d_matches_reference_fp32(cuda_on_cpu, fwd_kernel, shape, save_states):
    _check(shape, seed=shape[3], save_states=save_states)


@pytest.mark.parametrize("save_states", [True, False], ids=["from_states", "rewalk"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_emulated_ss2d_half_types(cuda_on_cpu, fwd_kernel, dtype, save_states):
    _check((1, 4, (9, 10), 24, 6), dtype, save_states=save_states)


def test_emulated_ss2d_channels_first(cuda_on_cpu):
    _check((1, 4, (6, 11), 16, 4), channels_last=False)
    _check((1, 4, (6, 11), 16, 4), channels_last=False, save_states=False)


@pytest.mark.parametrize("shape", [(2, 4, (16, 12), 40, 12), (1, 2, (5, 13), 8, 24), (1, 1, (3, 3), 4, 2)],
                         ids=["4dir_6seg", "2dir", "9steps"])
def test_emulated_ss2d_saved_states_match_reference(cuda_on_cpu, fwd_kernel, shape):
    """The state before every 8th step, as the forward saves it (several segments, a short last sub-chunk)."""
    batch, directions, hw, channels, rank = shape
    data = _data(batch, directions, hw, channels, rank)
    args = [data[n].float() for n in ("x", "dts", "dt_weight", "dt_bias", "A", "Bs", "Cs", "Ds")]
    out, states = torch.ops.vmamba_zoo.ss2d_scan_fwd(*args, directions, True, "cuda", True)
    out_ref, states_ref = torch.ops.vmamba_zoo.ss2d_scan_fwd(*data.values(), directions, True, "reference", True)
    length = hw[0] * hw[1]
    assert states.shape == states_ref.shape == (batch, directions, -(-length // 8), 1, channels)
    assert states.dtype == torch.float32 and states_ref.dtype == torch.float64
    assert torch.all(states[:, :, 0] == 0)
    assert _rel(states, states_ref) < 1e-5 and _rel(out, out_ref) < 1e-5
    _, none = torch.ops.vmamba_zoo.ss2d_scan_fwd(*args, directions, True, "cuda", False)
    assert none.numel() == 0


def test_emulated_ss2d_is_deterministic(cuda_on_cpu):
    """In deterministic mode (the forward by segments) every output and gradient has the same bits run after run;
    the backward always does (the emulation runs blocks one after another, so the atomics' order cannot vary)."""
    data = {n: t.float().requires_grad_() for n, t in _data(1, 4, (12, 12), 40, 5).items()}
    runs = []
    for _ in range(2):
        with deterministic_algorithms():
            y = ss2d_selective_scan(**data, directions=4, channels_last=True, backend="cuda", save_states=True)
            runs.append([y.detach()] + list(torch.autograd.grad(y, list(data.values()), torch.ones_like(y))))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_ss2d_cuda_backend_scope(cuda_on_cpu):
    """The fused CUDA kernels run d_state 1 and ranks up to 64, and step aside otherwise. Auto mode picks the
    backward wherever it runs, and the forward too; in deterministic mode the forward only for sequences one warp
    walks whole (below 64 steps)."""
    x = torch.zeros(1, 4, 4, 8)
    small = (x, torch.zeros(1, 4, 6, 16), torch.zeros(1, 4, 1, 16), torch.zeros(1, 4, 1, 16))
    assert cuda_backend.ss2d_supports(small)
    assert resolve("ss2d_scan_fwd", "auto", small) is cuda_backend.ss2d_scan_fwd
    assert resolve("ss2d_scan_bwd", "auto", (x,) + small) is cuda_backend.ss2d_scan_bwd
    x_long = torch.zeros(1, 8, 8, 8)
    long = (x_long, torch.zeros(1, 4, 6, 64), torch.zeros(1, 4, 1, 64), torch.zeros(1, 4, 1, 64))
    assert resolve("ss2d_scan_fwd", "auto", long) is cuda_backend.ss2d_scan_fwd
    with deterministic_algorithms():
        assert resolve("ss2d_scan_fwd", "auto", small) is cuda_backend.ss2d_scan_fwd
        assert resolve("ss2d_scan_fwd", "auto", long) is not cuda_backend.ss2d_scan_fwd
    assert resolve("ss2d_scan_fwd", "cuda", long) is cuda_backend.ss2d_scan_fwd
    assert resolve("ss2d_scan_bwd", "auto", (x_long,) + long) is cuda_backend.ss2d_scan_bwd
    for other in ((x, torch.zeros(1, 4, 6, 16), torch.zeros(1, 4, 4, 16), torch.zeros(1, 4, 4, 16)),  # d_state 4
                  (x, torch.zeros(1, 4, 65, 16), small[2], small[3]),  # dt_rank 65
                  (x.double(), small[1].double(), small[2].double(), small[3].double())):  # float64
        assert not cuda_backend.ss2d_supports(other)
        assert resolve("ss2d_scan_fwd", "auto", other) is not cuda_backend.ss2d_scan_fwd


def test_ss2d_host_code_rejects_bad_input(cuda_on_cpu):
    ops = getattr(torch.ops, cuda_emulation.OPS_NAMESPACE)
    d = {n: t.float() for n, t in _data(1, 4, (4, 4), 8, 2).items()}
    args = [d[n] for n in ("x", "dts", "dt_weight", "dt_bias", "A", "Bs", "Cs", "Ds")]
    with pytest.raises(RuntimeError, match="d_state 1"):
        ops.ss2d_fwd(*args[:4], torch.zeros(32, 4), torch.zeros(1, 4, 4, 16), torch.zeros(1, 4, 4, 16), args[7], 4)
    with pytest.raises(RuntimeError, match="scan_directions must be 1, 2 or 4"):
        ops.ss2d_fwd(*args, 3)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VMAMBA_ZOO_SS2D_FWD_KERNEL", "atomic")
        with pytest.raises(RuntimeError, match="VMAMBA_ZOO_SS2D_FWD_KERNEL must be 'segments' or 'directions'"):
            ops.ss2d_fwd(*args, 4)
    with pytest.raises(RuntimeError, match="dts must have x's dtype"):
        ops.ss2d_fwd(args[0], args[1].half(), *args[2:], 4)
    with pytest.raises(RuntimeError, match="dy must be float32"):
        ops.ss2d_bwd(torch.zeros(1, 4, 4, 8, dtype=torch.float16), *args, torch.zeros(0), 4)
    with pytest.raises(RuntimeError, match="states must have shape"):  # saved for another image size
        ops.ss2d_bwd(torch.zeros(1, 4, 4, 8), *args, torch.zeros(1, 4, 3, 1, 8), 4)


@pytest.mark.parametrize("save_states", [False, True], ids=["rewalk", "states"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_emulated_ss2d_projected_eager_paths_equal_the_custom_op(cuda_on_cpu, monkeypatch, dtype, save_states):
    """The kernels behind ss2d_scan_projected (the mixer's entry): plain eager mode's one-node paths - the extension's
    C++ node (ss2d_eager.cpp) and the Python autograd.Function - and the custom ops' path give the same forward and
    gradients, bit for bit; without gradients the C++ op makes no node."""
    import vmamba_zoo.ops.ss2d as ss2d_module

    size, directions, channels, rank = (5, 6), 4, 40, 3
    g = torch.Generator().manual_seed(3)
    data = dict(x=torch.randn(2, 30, channels, generator=g).to(dtype),
                proj=torch.randn(2, 30, directions * (rank + 2), generator=g).to(dtype),
                dt_weight=0.5 * torch.randn(directions, channels, rank, generator=g),
                dt_bias=0.3 * torch.randn(directions, channels, generator=g),
                A_logs=0.5 * torch.randn(directions * channels, 1, generator=g),
                Ds=torch.randn(directions * channels, generator=g))

    monkeypatch.setattr(ss2d_module, "_needs_states", lambda tensors, backend: save_states)  # as on a GPU

    def run(node):
        leaves = {n: t.clone().requires_grad_() for n, t in data.items()}
        y = ss2d_module.ss2d_scan_projected(**leaves, size=size, directions=directions, backend="cuda")
        assert node in y.grad_fn.name()
        return y, torch.autograd.grad(y, list(leaves.values()), torch.ones_like(y) + y.detach())

    with deterministic_algorithms():  # the forward by segments: no atomics, the same sums every run
        with torch.no_grad():
            y_plain = ss2d_module.ss2d_scan_projected(**data, size=size, directions=directions, backend="cuda")
        with torch.inference_mode():
            y_inference = ss2d_module.ss2d_scan_projected(**data, size=size, directions=directions, backend="cuda")
        assert y_plain.grad_fn is None and torch.equal(y_plain, y_inference)
        leaves = {n: t.clone().requires_grad_() for n, t in data.items()}
        y = ss2d_module.ss2d_scan_projected(**leaves, size=size, directions=directions, backend="cuda")
        with pytest.raises(RuntimeError, match="double backward"):
            torch.autograd.grad(y.square().sum(), [leaves["x"]], create_graph=True)
        results = {"cpp": run("SS2DProjected")}
        with monkeypatch.context() as python_only:
            python_only.setattr(ss2d_module, "_cuda_eager_op", lambda *args: None)
            results["function"] = run("_EagerProjectedScanBackward")
        monkeypatch.setattr(ss2d_module, "plain_eager", lambda tensors: False)
        results["op"] = run("ss2d_scan_fwd")
    y_op, grads_op = results["op"]
    assert torch.equal(y_plain, y_op)
    for path in ("cpp", "function"):
        y_eager, grads_eager = results[path]
        assert torch.equal(y_eager, y_op), path
        for name, a, b in zip(data, grads_eager, grads_op):
            assert a.dtype == data[name].dtype and torch.equal(a, b), (path, name)
