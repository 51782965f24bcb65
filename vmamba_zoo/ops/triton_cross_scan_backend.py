"""Registers the Triton cross-scan / cross-merge kernels as the ``triton`` backend of those two ops.

Same rules as :mod:`vmamba_zoo.ops.triton_backend`: CUDA tensors are picked automatically; CPU tensors
only under ``TRITON_INTERPRET=1`` (tests) and only when asked for by name; the kernel module (and so
triton) is imported on first use. Each op is the other's backward, so both directions of autograd run
the kernels once both are registered.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Sequence

import torch

from .backends import lazy_backend, register_backend

# Auto-picked on CUDA. If the H200 benchmark (benchmarks/cross_scan_kernels.py) shows these kernels slower
# than the reference's torch copies, lower this below the reference's 0 rather than deleting the backend.
CROSS_SCAN_TRITON_PRIORITY = 10
_KERNELS = "vmamba_zoo.ops.kernels.triton_cross_scan"
# the kernels' dtypes (listed here so checking support does not import triton)
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _devices(tensors: Sequence[torch.Tensor]) -> set:
    return {t.device.type for t in tensors}


def _supports(tensors: Sequence[torch.Tensor]) -> bool:
    devices_ok = _devices(tensors) == {"cuda"} or (_devices(tensors) == {"cpu"} and _interpreting())
    return devices_ok and all(t.dtype in _DTYPES for t in tensors)


def _auto_supports(tensors: Sequence[torch.Tensor]) -> bool:
    return _devices(tensors) == {"cuda"} and _supports(tensors)


# nvidia-h200, 2026-12-03 (benchmarks/cross_scan_kernels_h200_2026-12-03.txt, VMamba-T shapes): both kernels
# beat torch's copies at every stage and layout; so auto picks them on CUDA
if importlib.util.find_spec("triton") is not None:
    for _op in ("cross_scan", "cross_merge"):
        register_backend(_op, "triton", lazy_backend(_KERNELS, _op), priority=CROSS_SCAN_TRITON_PRIORITY,
                         supports=_supports, auto_supports=_auto_supports)
