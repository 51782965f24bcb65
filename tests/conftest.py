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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
