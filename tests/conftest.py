import os
import shutil
from pathlib import Path

# Without a GPU, Triton kernels can only run in its interpreter, which must be on before triton is first
# imported (its own library functions are decorated at import). Kernels are used on the CPU only when a
# test asks for backend="triton"; auto dispatch never picks the interpreter.
if "TRITON_INTERPRET" not in os.environ and shutil.which("nvidia-smi") is None:
    os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# parity data from the original release lives beside the clone (../shared/reference)
REFERENCE_DIR = Path(os.environ.get("VMAMBA_ZOO_REFERENCE", REPO_ROOT.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE_DIR / "summary.json").is_file():
        pytest.fail(f"reference data not found at {REFERENCE_DIR} (expected ../shared/reference beside the "
                    f"repository, or set VMAMBA_ZOO_REFERENCE)")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def emulated_ops():
    """torch.ops.vmamba_zoo_cuda_emulated: the CUDA extension's host code and kernels built for the CPU."""
    import cuda_emulation
    if cuda_emulation.compiler() is None:
        pytest.fail("no C++ compiler (g++) for the CUDA emulation")
    cuda_emulation.build_ops()


@pytest.fixture
def cuda_on_cpu(emulated_ops, monkeypatch):
    """The cuda backends pointed at the emulated extension (CPU tensors)."""
    import cuda_emulation
    from vmamba_zoo.ops import cuda_backend
    monkeypatch.setattr(cuda_backend, "OPS_NAMESPACE", cuda_emulation.OPS_NAMESPACE)
    monkeypatch.setattr(cuda_backend, "_DEVICE_TYPE", "cpu")
    monkeypatch.setattr(cuda_backend, "load_extension", lambda: True)
    monkeypatch.setattr(cuda_backend, "_device_ok", lambda device: True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
