"""The whole 'cuda' backend path on the CPU: selective_scan(..., backend="cuda") -> the custom op -> the Python
backend (vmamba_zoo/ops/cuda_backend.py) -> the extension's host code (selective_scan.cpp, built with the
kernels emulated: tests/cuda_emulation) -> the kernels' own code. Runs a selection of the GPU suite's checks
(tests/gpu/test_cuda_backend.py) with its device switched to the CPU, so its test logic is exercised too.
"""
import importlib.util
from pathlib import Path

import pytest
import torch


import cuda_emulation

GPU_TESTS = Path(__file__).resolve().parent / "gpu" / "test_cuda_backend.py"


@pytest.fixture(scope="module")
def gpu_suite():
    if cuda_emulation.compiler() is None:
        pytest.skip("no C++ compiler (g++) for the CUDA emulation")
    from torch.utils.cpp_extension import is_ninja_available
    if not is_ninja_available():
        pytest.skip("ninja is needed to build the emulated extension")
    cuda_emulation.build_ops()
    spec = importlib.util.spec_from_file_location("gpu_test_cuda_backend", GPU_TESTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def suite(gpu_suite, cuda_on_cpu, monkeypatch):
    """The GPU suite's module, on the CPU, with the backend pointed at the emulated extension."""
    monkeypatch.setattr(gpu_suite, "DEVICE", "cpu")
    return gpu_suite


# the emulation runs each CUDA thread as an OS thread: small shapes (17 channels at d_state 16: backward
# blocks of 9 warps, one spare)
@pytest.mark.parametrize("shape", [(2, 2, 3, 4, 1), (2, 2, 3, 4, 257), (1, 4, 2, 16, 130), (1, 1, 17, 16, 270)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_emulated_matches_oracle(suite, shape, dtype):
    suite._check(shape, dtype)


@pytest.mark.parametrize("options", ["none", "D_only", "z_bias"])
def test_emulated_optional_inputs(suite, options):
    suite._check((2, 2, 5, 4, 300), torch.float32, optionals=suite.OPTIONALS[options], softplus=options != "none")


def test_emulated_output_in_input_dtype(suite):
    suite.test_cuda_output_in_input_dtype(torch.float16)


def test_emulated_mixed_dtypes(suite):
    suite.test_cuda_mixed_dtypes()


def test_emulated_block_width_override(suite, monkeypatch):
    monkeypatch.setenv("VMAMBA_ZOO_CUDA_BWD_WARPS", "3")  # 10 channels: blocks of 3, 3, 3 and 1 (+2 spare) warps
    suite._check((1, 1, 10, 2, 270), torch.float32)


def test_emulated_empty_length(suite):
    suite.test_cuda_empty_length()


@pytest.mark.parametrize("shape", [(2, 2, 3, 4, 600), (1, 2, 20, 2, 257)], ids=lambda s: "x".join(map(str, s)))
def test_emulated_saved_states(suite, shape):
    suite.test_cuda_saved_states(shape)


@pytest.mark.parametrize("shape", [(2, 2, 40, 16, 203), (1, 1, 7, 16, 600)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kernel", ["lanes", "lane_pairs"])
def test_emulated_lanes_forward(suite, shape, dtype, kernel, monkeypatch):
    suite.test_cuda_lanes_forward(shape, dtype, kernel, monkeypatch)


def test_emulated_lanes_forward_states_and_switch(suite, monkeypatch):
    suite.test_cuda_lanes_forward_states_and_switch(monkeypatch)


def test_emulated_auto_picks_lanes_forward_by_warps_an_sm(suite, monkeypatch):
    suite.test_cuda_auto_picks_lanes_forward_by_warps_an_sm(monkeypatch)


def test_emulated_backward_is_deterministic(suite):
    suite.test_cuda_backward_is_deterministic((1, 2, 12, 2, 270))


def test_emulated_op_checks_inputs(suite):
    """The host code refuses bad inputs with a clear message instead of launching."""
    ops = getattr(torch.ops, cuda_emulation.OPS_NAMESPACE)
    u = torch.randn(1, 4, 10)
    A = -torch.rand(4, 2)
    B = torch.randn(1, 2, 2, 10)
    with pytest.raises(RuntimeError, match="A must be float32"):
        ops.selective_scan_fwd(u, u, A.double(), B, B, None, None, None, True, True)
    with pytest.raises(RuntimeError, match="must have u's dtype"):
        ops.selective_scan_fwd(u, u, A, B.half(), B, None, None, None, True, True)
    with pytest.raises(RuntimeError, match="do not split into 3 groups"):
        ops.selective_scan_fwd(u, u, A, torch.randn(1, 3, 2, 10), torch.randn(1, 3, 2, 10), None, None, None, True,
                               True)
    with pytest.raises(RuntimeError, match="d_state must be in"):
        ops.selective_scan_fwd(u, u, -torch.rand(4, 300), torch.randn(1, 2, 300, 10), torch.randn(1, 2, 300, 10),
                               None, None, None, True, True)
    with pytest.raises(RuntimeError, match=r"D must have shape \[4\], got \[3\]"):
        ops.selective_scan_fwd(u, u, A, B, B, torch.randn(3), None, None, True, True)
    with pytest.raises(RuntimeError, match=r"B must have shape \[1, 2, 2, 10\], got \[1, 2, 2, 9\]"):
        ops.selective_scan_fwd(u, u, A, B[..., :9].contiguous(), B, None, None, None, True, True)
    with pytest.raises(RuntimeError, match=r"u must be \(batch, K\*D, L\), got shape \[4, 10\]"):
        ops.selective_scan_fwd(u[0], u[0], A, B, B, None, None, None, True, True)


def test_emulated_empty_channels_and_batch(suite):
    """No channels or no batch: empty outputs and zero gradients, nothing launched."""
    ops = getattr(torch.ops, cuda_emulation.OPS_NAMESPACE)
    for batch, channels in ((0, 4), (2, 0)):
        u = torch.randn(batch, channels, 5)
        A = -torch.rand(channels, 2)
        B = torch.randn(batch, 2, 2, 5)
        assert ops.selective_scan_fwd(u, u, A, B, B, None, None, None, True, True).shape == u.shape
        du, ddelta, dA, dB, dC, dD, dz, dbias = ops.selective_scan_bwd(u, u, u, A, B, B, None, None, None, True)
        assert du.shape == u.shape and dA.shape == A.shape and dB.shape == B.shape
        assert not dA.any() and not dB.any() and dD.numel() == 0 and dz.numel() == 0
