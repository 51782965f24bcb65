"""SS2D scan as one op: cross-scan -> delta projection -> selective scan -> cross-merge.

The reference composes the finer custom ops (each dispatching to its best backend); kernel
backends of ``ss2d_scan_fwd`` fuse the whole chain so that the K directional copies of the map, the
(K, D, L) delta tensor and the K output sequences are never written to memory.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .selective_scan import _compute_dtype, _expand_groups, linear_scan


def _scan_inputs(x: Tensor, dts: Tensor, dt_weight: Tensor, directions: int, channels_last: bool):
    """Sizes, and the selective scan's u (the directional copies) and delta, both (batch, K*D, L)."""
    height, width = (x.shape[1], x.shape[2]) if channels_last else (x.shape[2], x.shape[3])
    batch, k, _, length = dts.shape
    channels = dt_weight.shape[1]
    xs = torch.ops.vmamba_zoo.cross_scan(x, directions, channels_last, "auto")
    delta = torch.einsum("bkrl,kdr->bkdl", dts, dt_weight.to(dts.dtype))
    return (batch, k, channels, length, height, width, xs.reshape(batch, k * channels, length),
            delta.reshape(batch, k * channels, length))


# Saved states, what every forward backend writes for a training step (ss2d_scan_fwd with save_states): the state
# before every STATE_STEPS-th step (kSS2DSubSteps of the CUDA kernels), float32 or wider, in states_shape.
STATE_STEPS = 8


def state_count(length: int) -> int:
    return -(-length // STATE_STEPS)


def states_shape(batch: int, directions: int, length: int, d_state: int, channels: int) -> tuple:
    return (batch, directions, state_count(length), d_state, channels)


def saved_states(u: Tensor, delta: Tensor, A: Tensor, Bs: Tensor, dt_bias: Tensor, directions: int) -> Tensor:
    """The state before every STATE_STEPS-th step, (batch, K, ceil(L / STATE_STEPS), N, D), from the whole state
    sequence (u, delta: (batch, K*D, L) in scan order, delta before bias and softplus)."""
    batch, kd, length = u.shape
    dtype = _compute_dtype(u, delta, A, Bs)
    dt = F.softplus(delta.to(dtype) + dt_bias.to(dtype)[:, None])
    a = torch.exp(dt[:, :, None] * A.to(dtype)[None, :, :, None])
    h = linear_scan(a, dt[:, :, None] * _expand_groups(Bs.to(dtype), kd) * u.to(dtype)[:, :, None])
    count = state_count(length)
    states = torch.cat([torch.zeros_like(h[..., :1]), h[..., STATE_STEPS - 1::STATE_STEPS][..., :count - 1]], -1)
    n = A.shape[1]
    return states.view(batch, directions, kd // directions, n, count).permute(0, 1, 4, 3, 2).contiguous()


def ss2d_scan_fwd(x: Tensor, dts: Tensor, dt_weight: Tensor, dt_bias: Tensor, A: Tensor, Bs: Tensor, Cs: Tensor,
                  Ds: Tensor, directions: int, channels_last: bool, save_states: bool = False):
    """(merged output, saved states or an empty tensor)."""
    ops = torch.ops.vmamba_zoo
    batch, k, channels, length, height, width, u, delta = _scan_inputs(x, dts, dt_weight, directions, channels_last)
    ys = ops.selective_scan_fwd(u, delta, A, Bs, Cs, Ds, None, dt_bias, True, True, "auto")
    out = ops.cross_merge(ys.view(batch, k, channels, length), height, width, directions, channels_last, "auto")
    states = saved_states(u, delta, A, Bs, dt_bias, directions) if save_states else out.new_empty(0)
    return out, states


def ss2d_scan_bwd(dy: Tensor, x: Tensor, dts: Tensor, dt_weight: Tensor, dt_bias: Tensor, A: Tensor, Bs: Tensor,
                  Cs: Tensor, Ds: Tensor, directions: int, channels_last: bool, states: Optional[Tensor] = None):
    """Gradients (dx, ddts, ddt_weight, ddt_bias, dA, dBs, dCs, dDs), recomputing the directional copies (saved
    states, which only the CUDA backward reads, are not needed)."""
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
