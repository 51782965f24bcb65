"""Registers the Triton kernels as the ``triton`` backend of the ops, imported on first use.

The kernels run on CUDA tensors; on the CPU only under ``TRITON_INTERPRET=1`` (tests) and only when
asked for by name, so the interpreter is never picked automatically for real work. The interpreter
must be switched on before ``triton`` is first imported (tests/conftest.py does so on CPU machines).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Sequence

import torch

from .backends import lazy_backend, register_backend

TRITON_PRIORITY = 10
_KERNELS = "vmamba_zoo.ops.kernels.triton_selective_scan"
_SS2D_KERNELS = "vmamba_zoo.ops.kernels.triton_ss2d"


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _on_cuda(tensors: Sequence[torch.Tensor]) -> bool:
    return {t.device.type for t in tensors} == {"cuda"}


def _device_ok(tensors: Sequence[torch.Tensor]) -> bool:
    return _on_cuda(tensors) or ({t.device.type for t in tensors} == {"cpu"} and _interpreting())


# the kernels tile the state dimension: d_state must be a power of two (other sizes use the reference)
def _scan_supports(tensors):  # (u, delta, A, B, C) / (dout, u, delta, A, B, C)
    return _device_ok(tensors) and _pow2(tensors[-3].shape[1])


def _scan_auto(tensors):
    return _on_cuda(tensors) and _scan_supports(tensors)


def _ss2d_supports(tensors):  # (x, dts, Bs, Cs) / (dy, x, dts, Bs, Cs)
    return _device_ok(tensors) and _pow2(tensors[-2].shape[2])


def _ss2d_auto(tensors):
    return _on_cuda(tensors) and _ss2d_supports(tensors)


# the fused backward walks the low-rank projection rank by rank; on nvidia-h200 (2026-11-22, session 4) it beat
# the unfused composition up to dt_rank 12 (VMamba-T stage 0: 5.3 vs 10.5 ms, stage 1: 3.3 vs 4.9 ms) and lost
# from 16 on (VMamba-B stage 1: 6.0 vs 5.6 ms, T stage 3 at rank 48: 5.2 vs 2.2 ms), so auto mode uses it for
# small ranks only; where the CUDA extension is built, its fused backward (higher priority) runs instead
FUSED_BWD_MAX_RANK = 12


def _ss2d_bwd_auto(tensors):  # (dy, x, dts, Bs, Cs)
    return _ss2d_auto(tensors) and tensors[2].shape[2] <= FUSED_BWD_MAX_RANK



if triton_available():
    for _op in ("selective_scan_fwd", "selective_scan_fwd_states", "selective_scan_bwd"):
        register_backend(_op, "triton", lazy_backend(_KERNELS, _op), priority=TRITON_PRIORITY,
                         supports=_scan_supports, auto_supports=_scan_auto)
    for _op, _kernel, _auto in (("ss2d_scan_fwd", "ss2d_scan_fwd", _ss2d_auto),
                                ("ss2d_scan_bwd", "ss2d_scan_bwd", _ss2d_bwd_auto)):
        register_backend(_op, "triton", lazy_backend(_SS2D_KERNELS, _kernel), priority=TRITON_PRIORITY,
                         supports=_ss2d_supports, auto_supports=_auto)
