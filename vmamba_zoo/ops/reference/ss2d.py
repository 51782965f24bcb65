"""SS2D scan as one op: cross-scan -> delta projection -> selective scan -> cross-merge.

The reference composes the finer custom ops (each dispatching to its best backend); kernel
backends of ``ss2d_scan_fwd`` fuse the whole chain so that the K directional copies of the map, the
(K, D, L) delta tensor and the K output sequences are never written to memory.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _scan_inputs(x: Tensor, dts: Tensor, dt_weight: Tensor, directions: int, channels_last: bool):
    """Sizes, and the selective scan's u (the directional copies) and delta, both (batch, K*D, L)."""
    height, width = (x.shape[1], x.shape[2]) if channels_last else (x.shape[2], x.shape[3])
    batch, k, _, length = dts.shape
    channels = dt_weight.shape[1]
    xs = torch.ops.vmamba_zoo.cross_scan(x, directions, channels_last, "auto")
    delta = torch.einsum("bkrl,kdr->bkdl", dts, dt_weight.to(dts.dtype))
    return (batch, k, channels, length, height, width, xs.reshape(batch, k * channels, length),
            delta.reshape(batch, k * channels, length))


def ss2d_scan_fwd(x: Tensor, dts: Tensor, dt_weight: Tensor, dt_bias: Tensor, A: Tensor, Bs: Tensor, Cs: Tensor,
                  Ds: Tensor, directions: int, channels_last: bool) -> Tensor:
    ops = torch.ops.vmamba_zoo
    batch, k, channels, length, height, width, u, delta = _scan_inputs(x, dts, dt_weight, directions, channels_last)
    ys = ops.selective_scan_fwd(u, delta, A, Bs, Cs, Ds, None, dt_bias, True, True, "auto")
    return ops.cross_merge(ys.view(batch, k, channels, length), height, width, directions, channels_last, "auto")


def ss2d_scan_bwd(dy: Tensor, x: Tensor, dts: Tensor, dt_weight: Tensor, dt_bias: Tensor, A: Tensor, Bs: Tensor,
                  Cs: Tensor, Ds: Tensor, directions: int, channels_last: bool):
    """Gradients (dx, ddts, ddt_weight, ddt_bias, dA, dBs, dCs, dDs), recomputing the directional copies."""
    ops = torch.ops.vmamba_zoo
    batch, k, channels, length, height, width, u, delta = _scan_inputs(x, dts, dt_weight, directions, channels_last)
    dys = ops.cross_scan(dy.contiguous(), directions, channels_last, "auto")  # cross-merge's adjoint
    du, ddelta, dA, dB, dC, dD, _, dbias = ops.selective_scan_bwd(
        dys.reshape(batch, k * channels, length), u, delta, A, Bs, Cs, Ds, None, dt_bias, True, "auto")
    dx = ops.cross_merge(du.view(batch, k, channels, length), height, width, directions, channels_last, "auto")
    # the two projections' gradients in the activations' dtype, as autograd of the forward einsum would
    ddelta = ddelta.view(batch, k, channels, length).to(dts.dtype)
    ddts = torch.einsum("bkdl,kdr->bkrl", ddelta, dt_weight.to(dts.dtype))
    ddt_weight = torch.einsum("bkdl,bkrl->kdr", ddelta, dts).to(dt_weight.dtype)
    return dx.to(x.dtype), ddts, ddt_weight, dbias, dA, dB, dC, dD
