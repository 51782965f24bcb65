"""``vmamba_zoo::ss2d_scan_fwd`` / ``_bwd``: the whole SS2D scan (cross-scan, delta projection, selective
scan, cross-merge) as one custom op, so a kernel can fuse it, and its backward as another (the reference
backward composes the finer ops; kernel backends fuse it too)."""
from __future__ import annotations

import functools
import math
import os
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import cuda_backend, reference
from .backends import cast, dense, plain_eager, register_backend, resolve
from .reference.cross_scan import SCAN_DIRECTIONS, scan_order
from .reference.ss2d import STATE_STEPS, state_count, states_shape

__all__ = ["STATE_STEPS", "in_scan_order", "ss2d_scan_projected", "ss2d_selective_scan", "state_count"]

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


# ------------------------------------------------------------------------------ from the pixel-order projection
def in_scan_order(proj: Tensor, directions: int) -> Tensor:
    """(batch, H, W, K, C) per-direction values of every pixel -> (batch, K, L, C): direction k's in its scan order.

    Views, one flip and one stack (the order of ``scan_order``): under torch.compile this is index arithmetic in one
    fused kernel, with a pointwise backward (a gather by ``scan_order`` needs a scatter-add back).
    """
    batch, height, width, _, channels = proj.shape
    planes = [proj[:, :, :, k] for k in range(directions)]
    if directions > 1:  # the reversed directions (the second half): one flip of both spatial dims
        half = directions // 2
        flipped = proj[:, :, :, half:].flip(1, 2)
        planes[half:] = [flipped[:, :, :, j] for j in range(directions - half)]
    if directions == 4:  # directions 1 and 3 walk columns
        planes[1::2] = [p.transpose(1, 2) for p in planes[1::2]]
    return torch.stack([p.reshape(batch, height * width, channels) for p in planes], dim=1)


def _gather_rows(height: int, width: int, directions: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    """Rows of a (batch, L*K, C) view of the pixel-order projection that :func:`in_scan_order` takes, in its output
    order (row k*L + t: direction k's step t), and the inverse permutation (the backward's gather). Cached per size
    and device, except while a CUDA graph is being captured (the capture only records the kernels that fill them)."""
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return _make_gather_rows(height, width, directions, device)
    return _cached_gather_rows(height, width, directions, device)


def _make_gather_rows(height: int, width: int, directions: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    # normal tensors even when first asked for under torch.inference_mode(): a later training step saves them
    with torch.inference_mode(False), torch.no_grad():
        order = scan_order(height, width, directions, device=device)
        rows = (order * directions + torch.arange(directions, device=device)[:, None]).reshape(-1)
        inverse = torch.empty_like(rows)
        inverse[rows] = torch.arange(rows.numel(), device=device)
    return rows, inverse


_cached_gather_rows = functools.lru_cache(maxsize=64)(_make_gather_rows)


def _split_scan_order(x_dbl: Tensor, rank: int, d_state: int) -> Tuple[Tensor, Tensor, Tensor]:
    """(batch, K, L, R+2N) -> the ops' dts (batch, K, R, L), Bs and Cs (batch, K, N, L), contiguous."""
    dts, Bs, Cs = torch.split(x_dbl.transpose(2, 3), [rank, d_state, d_state], dim=2)
    return dts.contiguous(), Bs.contiguous(), Cs.contiguous()


def _state_parameters(dt_bias: Tensor, A_logs: Tensor, Ds: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """The op's dt_bias (K*D,), A = -exp(A_logs) and Ds, in at least float32 (the SSM parameters' precision)."""
    state = torch.promote_types(A_logs.dtype, torch.float32)
    return cast(dt_bias.reshape(-1), state), -torch.exp(cast(A_logs, state)), cast(Ds, state)


def _projected_forward(x, proj, dt_weight, dt_bias, A_logs, Ds, k, rank, backend, save_states, height, width):
    """The eager path's forward: the merged scan and what its backward keeps."""
    batch, length = x.shape[0], height * width
    rows, inverse = _gather_rows(height, width, k, x.device)
    channels = proj.shape[-1] // k
    x_dbl = proj.reshape(batch, length * k, channels).index_select(1, rows).view(batch, k, length, channels)
    dts, Bs, Cs = _split_scan_order(x_dbl, rank, (channels - rank) // 2)
    bias, A, D = _state_parameters(dt_bias, A_logs, Ds)
    out, states = _forward(x, dts, dt_weight, bias, A, Bs, Cs, D, k, True, backend, save_states, width)
    return out, (x, dts, dt_weight, bias, A, Bs, Cs, D, states, inverse)


class _EagerProjectedScan(torch.autograd.Function):
    """The eager path of :func:`ss2d_scan_projected`: the reordering, ``A = -exp(A_logs)`` and the scan as one
    autograd node, each reordering one gather (forward and backward) instead of a dozen recorded views and copies."""

    @staticmethod
    def forward(ctx, x, proj, dt_weight, dt_bias, A_logs, Ds, directions, rank, backend, save_states, height, width):
        out, saved = _projected_forward(x, proj, dt_weight, dt_bias, A_logs, Ds, directions, rank, backend,
                                        save_states, height, width)
        ctx.save_for_backward(*saved)
        ctx.args = (directions, backend, width, proj.shape, A_logs.dtype, dt_bias.shape, dt_bias.dtype, Ds.dtype)
        return out

    @staticmethod
    def backward(ctx, dy):
        x, dts, dt_weight, bias, A, Bs, Cs, D, states, inverse = ctx.saved_tensors
        k, backend, width, proj_shape, A_logs_dtype, bias_shape, bias_dtype, Ds_dtype = ctx.args
        dx, ddts, ddt_weight, dbias, dA, dBs, dCs, dDs = _backward_grads(
            dense(dy), x, dts, dt_weight, bias, A, Bs, Cs, D, states, k, True, backend, width)
        batch, length = x.shape[0], x.shape[1]
        dx_dbl = torch.cat([ddts, dBs, dCs], dim=2).transpose(2, 3).reshape(batch, k * length, -1)
        dproj = dx_dbl.index_select(1, inverse).view(proj_shape)
        dA_logs = cast(dA.mul_(A), A_logs_dtype)  # d(-exp(a))/da = -exp(a) = A
        return (dx, dproj, ddt_weight, cast(dbias, bias_dtype).view(bias_shape), dA_logs, cast(dDs, Ds_dtype),
                None, None, None, None, None, None)


def _cuda_eager_op(x: Tensor, proj: Tensor, parameters: Tuple[Tensor, ...], directions: int, rank: int, d_state: int,
                   backend: str):
    """The CUDA extension's eager path (csrc/selective_scan/ss2d_eager.cpp: :class:`_EagerProjectedScan` as one C++
    autograd node, no Python in its forward or backward) where it computes the same: the cuda backend is the one
    chosen for the scan's forward and backward, x and proj share a dtype and the SSM parameters are float32 (the
    kernels' own); else None."""
    if (x.device.type != cuda_backend._DEVICE_TYPE or x.dtype != proj.dtype or d_state != 1
            or any(t.dtype != torch.float32 for t in parameters)):
        return None
    batch, length = x.shape[0], x.shape[1]
    with torch.no_grad():  # stand-ins with the shapes of the ops' dts and Bs / Cs, for choosing the backend
        dts = proj.as_strided((batch, directions, rank, length), (0, 0, 0, 0))
        Bs = proj.as_strided((batch, directions, d_state, length), (0, 0, 0, 0))
    if (resolve("ss2d_scan_fwd", backend, (x, dts, Bs, Bs)) is not cuda_backend.ss2d_scan_fwd
            or resolve("ss2d_scan_bwd", backend, (x, x, dts, Bs, Bs)) is not cuda_backend.ss2d_scan_bwd):
        return None
    return getattr(getattr(torch.ops, cuda_backend.OPS_NAMESPACE), "ss2d_projected", None)  # None: an older build


def ss2d_scan_projected(x: Tensor, proj: Tensor, dt_weight: Tensor, dt_bias: Tensor, A_logs: Tensor, Ds: Tensor,
                        size: Tuple[int, int], directions: int = 4, backend: str = "auto") -> Tensor:
    """The merged SS2D scan (float32, x's layout) of channel-last tokens ``x`` (batch, H*W, D) of a map of ``size``,
    from ``proj`` (batch, H*W, K*(R+2N)): every pixel's per-direction projection (dts | B | C of direction k in
    channels k*(R+2N) ...), in pixel order. dt_weight (K, D, R), dt_bias (K, D), A_logs (K*D, N) with
    A = -exp(A_logs), Ds (K*D); the SSM parameters run in at least float32.

    Each direction's projection is put in its scan order here (:func:`in_scan_order`), then the scan runs as
    :func:`ss2d_selective_scan`. In plain eager mode (:func:`vmamba_zoo.ops.backends.plain_eager`) that is one
    autograd node around the same backends (in C++ where the CUDA kernels run); elsewhere the ops compilers and
    tracers see. Same numbers either way.
    """
    height, width = size
    batch, length, k = x.shape[0], x.shape[1], directions
    rank, d_state = dt_weight.shape[2], A_logs.shape[1]
    if proj.shape != (batch, length, k * (rank + 2 * d_state)):
        raise ValueError(f"proj must be (batch, H*W, K*(R+2N)) = {(batch, length, k * (rank + 2 * d_state))}, got "
                         f"{tuple(proj.shape)}")
    tensors = (x, proj, dt_weight, dt_bias, A_logs, Ds)
    if plain_eager(tensors) and x.dim() == 3 and length == height * width:
        save_states = _needs_states(tensors, backend)
        one_node = _cuda_eager_op(x, proj, tensors[2:], k, rank, d_state, backend)
        if one_node is not None:
            rows, inverse = _gather_rows(height, width, k, x.device)
            return one_node(x, proj, dt_weight, dt_bias, A_logs, Ds, rows, inverse, k, int(width), save_states)
        args = (x, proj, dt_weight, dt_bias, A_logs, Ds, k, rank, backend, save_states, int(height), int(width))
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return _EagerProjectedScan.apply(*args)
        return _projected_forward(*args)[0]  # nothing to differentiate: no autograd node at all
    x_dbl = in_scan_order(proj.view(batch, height, width, k, rank + 2 * d_state), k)
    dts, Bs, Cs = _split_scan_order(x_dbl, rank, d_state)
    bias, A, D = _state_parameters(dt_bias, A_logs, Ds)
    return ss2d_selective_scan(x, dts, dt_weight, bias, A, Bs, Cs, D, k, channels_last=True, backend=backend,
                               size=size)
