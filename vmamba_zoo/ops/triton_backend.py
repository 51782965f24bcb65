"""Registers the Triton kernels as the ``triton`` backend of the ops, imported on first use.

The kernels run on CUDA tensors; on the CPU only under ``TRITON_INTERPRET=1`` (tests) and only when
asked for by name, so the interpreter is never picked automatically for real work. The interpreter
must be switched on before ``triton`` is first imported (tests/conftest.py does so on CPU machines).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Sequence

import torch

from .backends import register_backend

TRITON_PRIORITY = 10
_KERNELS = "vmamba_zoo.ops.kernels.triton_selective_scan"


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _on_cuda(tensors: Sequence[torch.Tensor]) -> bool:
    return {t.device.type for t in tensors} == {"cuda"}


def _supports(tensors: Sequence[torch.Tensor]) -> bool:
    return _on_cuda(tensors) or ({t.device.type for t in tensors} == {"cpu"} and _interpreting())


def _lazy(name: str):
    def call(*args):
        return getattr(importlib.import_module(_KERNELS), name)(*args)
    call.__name__ = name
    return call


if triton_available():
    register_backend("selective_scan_fwd", "triton", _lazy("selective_scan_fwd"), priority=TRITON_PRIORITY,
                     supports=_supports, auto_supports=_on_cuda)
    register_backend("selective_scan_bwd", "triton", _lazy("selective_scan_bwd"), priority=TRITON_PRIORITY,
                     supports=_supports, auto_supports=_on_cuda)
