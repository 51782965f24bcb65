"""``vmamba_zoo::cross_scan`` / ``cross_merge`` custom ops: each is the other's backward."""
from __future__ import annotations

import torch
from torch import Tensor

from . import reference
from .backends import register_backend, resolve
from .reference.cross_scan import SCAN_DIRECTIONS

__all__ = ["cross_scan", "cross_merge", "SCAN_DIRECTIONS"]

register_backend("cross_scan", "reference", reference.cross_scan, priority=0)
register_backend("cross_merge", "reference", reference.cross_merge, priority=0)


@torch.library.custom_op("vmamba_zoo::cross_scan", mutates_args=())
def _cross_scan(x: Tensor, directions: int, channels_last: bool, backend: str) -> Tensor:
    return resolve("cross_scan", backend, (x,))(x, directions, channels_last)


@_cross_scan.register_fake
def _(x, directions, channels_last, backend):
    batch = x.shape[0]
    channels, length = (x.shape[3], x.shape[1] * x.shape[2]) if channels_last else (x.shape[1], x.shape[2] * x.shape[3])
    return x.new_empty(batch, directions, channels, length)


@torch.library.custom_op("vmamba_zoo::cross_merge", mutates_args=())
def _cross_merge(y: Tensor, height: int, width: int, directions: int, channels_last: bool, backend: str) -> Tensor:
    return resolve("cross_merge", backend, (y,))(y, height, width, directions, channels_last)


@_cross_merge.register_fake
def _(y, height, width, directions, channels_last, backend):
    batch, _, channels, _ = y.shape
    shape = (batch, height, width, channels) if channels_last else (batch, channels, height, width)
    return y.new_empty(shape)


def _scan_setup(ctx, inputs, output):
    x, directions, channels_last, backend = inputs
    height, width = (x.shape[1], x.shape[2]) if channels_last else (x.shape[2], x.shape[3])
    ctx.args = (height, width, directions, channels_last, backend)


def _scan_backward(ctx, grad):
    return torch.ops.vmamba_zoo.cross_merge(grad.contiguous(), *ctx.args), None, None, None


def _merge_setup(ctx, inputs, output):
    _, _, _, directions, channels_last, backend = inputs
    ctx.args = (directions, channels_last, backend)


def _merge_backward(ctx, grad):
    return torch.ops.vmamba_zoo.cross_scan(grad.contiguous(), *ctx.args), None, None, None, None, None


_cross_scan.register_autograd(_scan_backward, setup_context=_scan_setup)
_cross_merge.register_autograd(_merge_backward, setup_context=_merge_setup)


def _check_directions(directions: int) -> None:
    if directions not in SCAN_DIRECTIONS:
        raise ValueError(f"scan_directions must be one of {SCAN_DIRECTIONS}, got {directions}")


def cross_scan(x: Tensor, directions: int = 4, channels_last: bool = False, backend: str = "auto") -> Tensor:
    """Image (batch, C, H, W), or (batch, H, W, C) when ``channels_last``, -> (batch, K, C, H*W)."""
    _check_directions(directions)
    if x.dim() != 4:
        raise ValueError(f"cross_scan expects a 4D image tensor, got shape {tuple(x.shape)}")
    return torch.ops.vmamba_zoo.cross_scan(x, directions, channels_last, backend)


def cross_merge(y: Tensor, height: int, width: int, directions: int = 4, channels_last: bool = False,
                backend: str = "auto") -> Tensor:
    """(batch, K, C, H*W) -> image (batch, C, H, W) or (batch, H, W, C), summing the K directions."""
    _check_directions(directions)
    if y.dim() != 4 or y.shape[1] != directions or y.shape[3] != height * width:
        raise ValueError(f"cross_merge expects (batch, {directions}, C, {height}*{width}), got {tuple(y.shape)}")
    return torch.ops.vmamba_zoo.cross_merge(y, height, width, directions, channels_last, backend)
