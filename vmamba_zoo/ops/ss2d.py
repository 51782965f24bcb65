"""``vmamba_zoo::ss2d_scan_fwd`` / ``_bwd``: the whole SS2D scan (cross-scan, delta projection, selective
scan, cross-merge) as one custom op, so a kernel can fuse it, and its backward as another (the reference
backward composes the finer ops; kernel backends fuse it too)."""
from __future__ import annotations

import math
import os
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import reference
from .backends import dense, plain_eager, register_backend, resolve
from .reference.cross_scan import SCAN_DIRECTIONS
from .reference.ss2d import STATE_STEPS, state_count, states_shape

__all__ = ["STATE_STEPS", "ss2d_selective_scan", "state_count"]

register_backend("ss2d_scan_fwd", "reference", reference.ss2d.ss2d_scan_fwd, priority=0)
register_backend("ss2d_scan_bwd", "reference", reference.ss2d.ss2d_scan_bwd, priority=0)


def _as_image(x: Tensor, width: int) -> Tensor:
    """(batch, H*W, D) tokens -> their (batch, H, W, D) view when ``width`` > 0 (the ops' token form)."""
    return x.view(x.shape[0], x.shape[1] // width, width, x.shape[2]) if width else x


# width > 0: x is (batch, H*W, D) channel-last tokens of rows ``width`` wide, the models' layout; the image view
# is taken in here, where torch.compile's layout choice for 4D maps cannot reach it (see vmamba_zoo.mixers.base)
@torch.library.custom_op("vmamba_zoo::ss2d_scan_fwd", mutates_args=())
def _ss2d_scan_fwd(x: Tensor, dts: Tensor, dt_weight: Tensor, dt_bias: Tensor, A: Tensor, Bs: Tensor, Cs: Tensor,
                   Ds: Tensor, directions: int, channels_last: bool, backend: str, save_states: bool = False,
                   width: int = 0) -> tuple[Tensor, Tensor]:
    return _forward(x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last, backend, save_states,
                    width)


def _forward(x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last, backend, save_states, width):
    """The forward op's body, shared with the eager path."""
    fn = resolve("ss2d_scan_fwd", backend, (x, dts, Bs, Cs))
    out, states = fn(_as_image(x, width), dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last,
                     save_states=save_states)
    return out.view(x.shape), states


@_ss2d_scan_fwd.register_fake
def _(x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last, backend, save_states=False, width=0):
    return (x.new_empty(x.shape, dtype=torch.promote_types(x.dtype, torch.float32)),
            x.new_empty(states_shape(dts.shape[0], directions, dts.shape[3], A.shape[1],
                                     x.shape[-1] if channels_last else x.shape[1]) if save_states else (0,),
                        dtype=torch.promote_types(x.dtype, torch.float32)))


@torch.library.custom_op("vmamba_zoo::ss2d_scan_bwd", mutates_args=())
def _ss2d_scan_bwd(dy: Tensor, x: Tensor, dts: Tensor, dt_weight: Tensor, dt_bias: Tensor, A: Tensor, Bs: Tensor,
                   Cs: Tensor, Ds: Tensor, states: Tensor, directions: int, channels_last: bool, backend: str,
                   width: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _backward_grads(dy, x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, states, directions, channels_last, backend,
                           width)


def _backward_grads(dy, x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, states, directions, channels_last, backend,
                    width):
    """The backward op's body, shared with the eager path."""
    fn = resolve("ss2d_scan_bwd", backend, (dy, x, dts, Bs, Cs))
    grads = fn(_as_image(dy, width), _as_image(x, width), dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions,
               channels_last, states=states)
    return (dense(grads[0].reshape(x.shape)), *(dense(g) for g in grads[1:]))


@_ss2d_scan_bwd.register_fake
def _(dy, x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, states, directions, channels_last, backend, width=0):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format)
                 for t in (x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds))


def _setup(ctx, inputs, output):
    x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last, backend, _, width = inputs  # defaults filled
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, output[1])
    ctx.args = (directions, channels_last, backend, width)


def _backward(ctx, dy, _dstates):
    grads = torch.ops.vmamba_zoo.ss2d_scan_bwd(dense(dy), *ctx.saved_tensors, *ctx.args)
    return (*grads, None, None, None, None, None)


_ss2d_scan_fwd.register_autograd(_backward, setup_context=_setup)


class _EagerSS2DScan(torch.autograd.Function):
    """The ops' eager path (:func:`vmamba_zoo.ops.backends.plain_eager`): the same backends, no custom-op dispatch."""

    @staticmethod
    def forward(ctx, x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last, backend, save_states,
                width):
        out, states = _forward(x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last, backend,
                               save_states, width)
        ctx.save_for_backward(x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, states)
        ctx.args = (directions, channels_last, backend, width)
        return out

    @staticmethod
    def backward(ctx, dy):
        x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, states = ctx.saved_tensors
        directions, channels_last, backend, width = ctx.args
        grads = _backward_grads(dense(dy), x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, states, directions,
                                channels_last, backend, width)
        return (*grads, None, None, None, None, None)


# VMAMBA_ZOO_SS2D_SAVE_STATES=0: never save states by default (1/8 of a float32 state map per direction, about
# 0.4 GiB for VMamba-T at batch 128), the CUDA backward then re-walks the forward (about twice its time).
# Read once at import, so torch.compile sees a constant.
SAVE_STATES_BY_DEFAULT = os.environ.get("VMAMBA_ZOO_SS2D_SAVE_STATES", "1").strip() != "0"


def _needs_states(tensors, backend: str) -> bool:
    """Whether a backward will follow that can start from saved states: on CUDA, with autograd recording."""
    return (SAVE_STATES_BY_DEFAULT and backend != "reference" and tensors[0].device.type == "cuda"
            and torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def ss2d_selective_scan(x: Tensor, dts: Tensor, dt_weight: Tensor, dt_bias: Tensor, A: Tensor, Bs: Tensor,
                        Cs: Tensor, Ds: Tensor, directions: int = 4, channels_last: bool = False,
                        backend: str = "auto", save_states: Optional[bool] = None,
                        size: Optional[Tuple[int, int]] = None) -> Tensor:
    """Merged SS2D scan output (float32) of an image ``x`` (batch, D, H, W), or (batch, H, W, D) when
    ``channels_last``, in the same layout. With ``size=(H, W)``, x is a token map (batch, H*W, D) (channel-last).

    dts (batch, K, R, L): per-direction low-rank delta inputs in scan order; dt_weight (K, D, R);
    dt_bias (K*D,); A (K*D, N); Bs, Cs (batch, K, N, L) in scan order; Ds (K*D,). Delta is
    softplus(dt_weight @ dts + dt_bias).

    save_states: keep the state before every 8th step for the backward (float32, 1/8 of the states; the CUDA
    backward then skips its forward re-walk). None: when autograd records on CUDA and backend isn't "reference"
    (and VMAMBA_ZOO_SS2D_SAVE_STATES is not 0).
    """
    if directions not in SCAN_DIRECTIONS:
        raise ValueError(f"scan_directions must be one of {SCAN_DIRECTIONS}, got {directions}")
    width = 0
    if size is not None:
        if x.dim() != 3 or not channels_last or x.shape[1] != size[0] * size[1]:
            raise ValueError(f"with size={tuple(size)}, ss2d_selective_scan expects channel-last tokens "
                             f"(batch, {size[0] * size[1]}, D), got shape {tuple(x.shape)}")
        width = int(size[1])
    elif x.dim() != 4:
        raise ValueError(f"ss2d_selective_scan expects a 4D image (or tokens with size=(H, W)), got shape "
                         f"{tuple(x.shape)}")
    channels = x.shape[-1] if channels_last else x.shape[1]
    length = math.prod(x.shape[1:-1]) if channels_last else x.shape[2] * x.shape[3]
    if dts.dim() != 4 or dts.shape[1] != directions or dts.shape[3] != length:
        raise ValueError(f"dts must be (batch, {directions}, R, {length}), got {tuple(dts.shape)}")
    if dt_weight.shape != (directions, channels, dts.shape[2]):
        raise ValueError(f"dt_weight must be ({directions}, {channels}, {dts.shape[2]}), got {tuple(dt_weight.shape)}")
    tensors = (x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds)
    if save_states is None:
        save_states = _needs_states(tensors, backend)
    if plain_eager(tensors):
        return _EagerSS2DScan.apply(*tensors, directions, channels_last, backend, bool(save_states), width)
    out, _ = torch.ops.vmamba_zoo.ss2d_scan_fwd(*tensors, directions, channels_last, backend, bool(save_states),
                                                width)
    return out
