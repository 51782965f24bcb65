"""Ops: cross-scan, selective scan and cross-merge as ``torch.library`` custom ops.

Each op has a pure-PyTorch reference backend (any device) and room for kernel backends;
see :mod:`vmamba_zoo.ops.backends` for how one is chosen.
"""
from . import cuda_backend  # noqa: F401  (CUDA selective scan, built ahead of time or on first use)
from . import triton_backend  # noqa: F401  (registers the Triton kernels when triton is installed)
from . import triton_cross_scan_backend  # noqa: F401  (Triton cross-scan / cross-merge)
from .backends import available_backends, register_backend
from .cross_scan import SCAN_DIRECTIONS, cross_merge, cross_scan
from .layer_norm import LayerNorm, layer_norm  # noqa: F401  (fast LayerNorm over the last dim)
from .selective_scan import selective_scan
from .ss2d import ss2d_selective_scan

__all__ = ["SCAN_DIRECTIONS", "available_backends", "cross_merge", "cross_scan", "register_backend",
           "selective_scan", "ss2d_selective_scan"]
