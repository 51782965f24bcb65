"""LayerNorm over the last dimension as ``vmamba_zoo::layer_norm_fwd`` / ``_bwd`` custom ops, and a drop-in
``LayerNorm`` module whose output under autocast is already in the autocast dtype.

Why. VMamba normalises channel-last maps (B, H, W, C) with C = 96..1024: millions of short rows, for
which torch's LayerNorm kernel runs far below the memory bandwidth. And under autocast LayerNorm
returns float32, which the following ``nn.Linear`` then casts to float16/bfloat16 in a separate pass.
The ``triton`` backend (:mod:`vmamba_zoo.ops.kernels.triton_layer_norm`) tiles many rows per program
and writes the autocast dtype directly, saving that pass.

Semantics (every backend): statistics and normalisation in float32 (float64 for float64 inputs), biased
variance, ``eps`` inside the square root, as ``torch.nn.functional.layer_norm``; the result is rounded
once to the output dtype. The op also returns the per-row mean and 1/std (float32, shape
``x.shape[:-1]``), which the backward reuses.

Backends: ``reference`` (torch's own ``native_layer_norm`` and its backward in the compute dtype, any
device), ``triton`` (CUDA; on the CPU only under ``TRITON_INTERPRET=1`` and only when asked for by
name) and, for the forward, ``cuda`` (the extension's kernel, :mod:`vmamba_zoo.ops.cuda_backend`), chosen as
:mod:`vmamba_zoo.ops.backends` describes (``VMAMBA_ZOO_LAYER_NORM_FWD_BACKEND`` ...). In auto mode the custom op
(what torch.compile sees) never picks ``cuda``, while :func:`layer_norm`'s plain eager path picks it wherever it runs
(see ``_eager_forward_backend``).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from . import cuda_backend
from .backends import (autocast_dtype, cast, dense, lazy_backend, plain_eager, register_backend, requested_backend,
                       resolve)

__all__ = ["LayerNorm", "layer_norm"]

TRITON_PRIORITY = 10  # as vmamba_zoo.ops.triton_backend: above the reference
_KERNELS = "vmamba_zoo.ops.kernels.triton_layer_norm"
# copies of the kernel module's SUPPORTED_DTYPES / MAX_COLUMNS, so choosing a backend does not import
# triton (tests check they agree)
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TRITON_MAX_COLUMNS = 16384


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _without_autocast():
    # the ops run inside the caller's autocast region (custom ops have no autocast rule, the key falls
    # through); the reference calls aten ops that autocast would otherwise re-cast. torch's guard masks the autocast
    # keys in under a microsecond (torch.autocast(enabled=False) takes several)
    return torch._C._DisableAutocast()


# ------------------------------------------------------------------------------------ reference backend
def reference_layer_norm_fwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                             out_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """torch's LayerNorm in the compute dtype, rounded once to ``out_dtype``."""
    compute = _compute_dtype(x)
    with _without_autocast():
        y, mean, rstd = torch.native_layer_norm(cast(x, compute), [x.shape[-1]], cast(weight, compute),
                                                cast(bias, compute), eps)
    stats_shape = x.shape[:-1]
    return dense(y, out_dtype), mean.view(stats_shape), rstd.view(stats_shape)


def reference_layer_norm_bwd(dy: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                             mean: Tensor, rstd: Tensor) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    compute = _compute_dtype(x)
    stats_shape = (*x.shape[:-1], 1)
    with _without_autocast():
        dx, dweight, dbias = torch.ops.aten.native_layer_norm_backward(
            cast(dy, compute), cast(x, compute), [x.shape[-1]], cast(mean, compute).reshape(stats_shape),
            cast(rstd, compute).reshape(stats_shape), cast(weight, compute), cast(bias, compute),
            [True, weight is not None, bias is not None])
    return (cast(dx, x.dtype), None if weight is None else cast(dweight, weight.dtype),
            None if bias is None else cast(dbias, bias.dtype))


register_backend("layer_norm_fwd", "reference", reference_layer_norm_fwd, priority=0)
register_backend("layer_norm_bwd", "reference", reference_layer_norm_bwd, priority=0)


# ------------------------------------------------------------------------------------ triton backend
# Same rules as vmamba_zoo.ops.triton_backend: CUDA tensors, or CPU tensors in the interpreter when the
# backend is named; auto mode picks it on CUDA only.
def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_supports(tensors: Sequence[Tensor]) -> bool:  # (x, ...) / (dy, x, ...): x's last dim is C
    devices = {t.device.type for t in tensors}
    device_ok = devices == {"cuda"} or (devices == {"cpu"} and _interpreting())
    return (device_ok and all(t.dtype in _TRITON_DTYPES for t in tensors)
            and 1 <= tensors[0].shape[-1] <= _TRITON_MAX_COLUMNS)


# Auto mode runs the Triton forward on maps of at least this many elements, torch's below. The kernel's gain shrinks
# with the map (VMamba-T at batch 128, fp16 out, nvidia-h200: 56x56x96 0.66 -> 0.10 ms, 28x28x192 0.20 -> 0.05,
# 14x14x384 0.07 -> 0.04: benchmarks/layer_norm_kernels_h200_2026-11-22.txt) while its launch from Python costs the
# host tens of microseconds more than torch's, which bounds eager steps on small maps.
TRITON_AUTO_MIN_ELEMENTS = 1 << 24


def _triton_auto(tensors: Sequence[Tensor]) -> bool:
    return (tensors[0].numel() >= TRITON_AUTO_MIN_ELEMENTS and {t.device.type for t in tensors} == {"cuda"}
            and _triton_supports(tensors))


if importlib.util.find_spec("triton") is not None:
    register_backend("layer_norm_fwd", "triton", lazy_backend(_KERNELS, "layer_norm_fwd"),
                     priority=TRITON_PRIORITY, supports=_triton_supports, auto_supports=_triton_auto)
    # the Triton backward is slower than torch's on every VMamba-T shape (nvidia-h200, 2026-11-22:
    # benchmarks/layer_norm_kernels_h200_2026-11-22.txt), so auto mode keeps torch's; asked by name it runs
    register_backend("layer_norm_bwd", "triton", lazy_backend(_KERNELS, "layer_norm_bwd"),
                     priority=TRITON_PRIORITY, supports=_triton_supports, auto_supports=lambda tensors: False)


# ------------------------------------------------------------------------------------ custom ops
def _present(*tensors: Optional[Tensor]) -> tuple[Tensor, ...]:
    return tuple(t for t in tensors if t is not None)


def _empty(ref: Tensor) -> Tensor:
    return ref.new_empty(0)


@torch.library.custom_op("vmamba_zoo::layer_norm_fwd", mutates_args=())
def _layer_norm_fwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                    out_dtype: torch.dtype, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return _forward(x, weight, bias, eps, out_dtype, backend)


def _forward(x, weight, bias, eps, out_dtype, backend):  # the op's body, shared with the eager path
    fn = resolve("layer_norm_fwd", backend, _present(x, weight, bias))
    y, mean, rstd = fn(x, weight, bias, eps, out_dtype)
    return y, mean, rstd


@_layer_norm_fwd.register_fake
def _(x, weight, bias, eps, out_dtype, backend):
    stats = x.new_empty(x.shape[:-1], dtype=_compute_dtype(x))
    return x.new_empty(x.shape, dtype=out_dtype), stats, torch.empty_like(stats)


@torch.library.custom_op("vmamba_zoo::layer_norm_bwd", mutates_args=())
def _layer_norm_bwd(dy: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor,
                    rstd: Tensor, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias); ``bias`` is only asked for its presence and dtype. Absent weight / bias get an
    empty gradient (custom ops return tensors only)."""
    dx, dweight, dbias = _backward_grads(dy, x, weight, bias, mean, rstd, backend)
    return (dense(dx), _empty(x) if dweight is None else dense(dweight), _empty(x) if dbias is None else dense(dbias))


def _backward_grads(dy, x, weight, bias, mean, rstd, backend):  # the op's body, shared with the eager path
    fn = resolve("layer_norm_bwd", backend, _present(dy, x, weight, bias))
    return fn(dy, x, weight, bias, mean, rstd)


@_layer_norm_bwd.register_fake
def _(dy, x, weight, bias, mean, rstd, backend):
    def like(t):
        return torch.empty_like(t, memory_format=torch.contiguous_format)
    return like(x), _empty(x) if weight is None else like(weight), _empty(x) if bias is None else like(bias)


def _setup_context(ctx, inputs, output):
    x, weight, bias, eps, out_dtype, backend = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, bias, mean, rstd)
    ctx.backend = backend


def _backward(ctx, dy, _dmean, _drstd):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    dx, dweight, dbias = torch.ops.vmamba_zoo.layer_norm_bwd(dense(dy), x, weight, bias, mean, rstd,
                                                             ctx.backend)
    return dx, None if weight is None else dweight, None if bias is None else dbias, None, None, None


_layer_norm_fwd.register_autograd(_backward, setup_context=_setup_context)


class _EagerLayerNorm(torch.autograd.Function):
    """The ops' eager path (:func:`vmamba_zoo.ops.backends.plain_eager`): the same backends, no custom-op dispatch."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype, backend):
        y, mean, rstd = _forward(x, weight, bias, eps, out_dtype, backend)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.backend = backend
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        dx, dweight, dbias = _backward_grads(dense(dy), x, weight, bias, mean, rstd, ctx.backend)
        return dx, dweight, dbias, None, None, None


def _torch_path(x: Tensor, fwd: Callable, bwd: Callable) -> bool:
    """Whether the eager path may run torch's own LayerNorm under autograd: the reference backends are the ones chosen
    (``fwd``, ``bwd``: the resolved kernels; autograd through torch's LayerNorm reproduces them exactly), and x is in
    the compute dtype or is a half x whose float32 copy the saved-tensor hooks of :func:`_torch_layer_norm` can keep
    out of the saved activations (not while the caller's own hooks are active, e.g. activation checkpointing or
    offloading: theirs must see every saved tensor)."""
    if fwd is not reference_layer_norm_fwd or bwd is not reference_layer_norm_bwd:
        return False
    return x.dtype == _compute_dtype(x) or (x.dtype in _HALF_DTYPES and _no_saved_tensor_hooks())


def _eager_forward_backend(present: Sequence[Tensor], backend: str) -> str:
    """The forward backend of the plain eager path: in auto mode the CUDA kernel wherever it runs, unlike the custom op
    (torch.compile), which keeps the registry's choice. Eager steps are bound by the host launching kernels, and the
    CUDA forward is launched from C++ and writes the autocast dtype itself (no cast kernel): VMamba-T training 1710 ->
    1817 img/s, inference 5918 -> 6679 (nvidia-h200, benchmarks/layer_norm_cuda_2026-12-06_session19.md), even
    where the Triton kernel alone is faster (56x56x96: 0.10 against 0.19 ms)."""
    if requested_backend("layer_norm_fwd", backend) == "auto" and cuda_backend.layer_norm_supports(present):
        return "cuda"
    return backend


def _cuda_eager_node(fwd: Callable, bwd: Callable):
    """The CUDA extension's eager path (csrc/selective_scan/layer_norm.cpp: the CUDA forward and the reference
    backward as one C++ autograd node) where those are the kernels chosen (``fwd``, ``bwd``); else None."""
    if fwd is not cuda_backend.layer_norm_fwd or bwd is not reference_layer_norm_bwd:
        return None
    return getattr(getattr(torch.ops, cuda_backend.OPS_NAMESPACE), "layer_norm_eager", None)  # None: an older build


_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _no_saved_tensor_hooks() -> bool:
    autograd = torch._C._autograd
    return autograd._saved_tensors_hooks_is_enabled() and autograd._top_saved_tensors_default_hooks(False) is None


def _torch_layer_norm(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                      out_dtype: torch.dtype) -> Tensor:
    """The reference backends' numbers through torch's autograd: the same native kernels on the same compute-dtype
    inputs, rounded once, with backward nodes in C++ (no Python between the backward's kernels).

    A half x is normalised as its float32 copy, as the reference does; autograd would keep that copy for the
    backward (twice x's bytes, per LayerNorm of the residual stream), so saved-tensor hooks keep x instead and make
    the copy again in the backward, checking that x was not modified in place meanwhile."""
    compute = _compute_dtype(x)
    weight, bias = cast(weight, compute), cast(bias, compute)
    if x.dtype == compute:
        return cast(nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps), out_dtype)
    copy = [x.to(compute)]  # emptied after the forward: autograd keeps the hooks, which must not keep the copy

    def pack(t: Tensor):
        kept = x if copy and t is copy[0] else t
        return kept, kept._version

    def unpack(packed) -> Tensor:
        kept, version = packed
        if kept._version != version:
            raise RuntimeError("vmamba_zoo layer_norm: one of the variables needed for gradient computation has been "
                               "modified by an inplace operation (the LayerNorm's input or parameters)")
        return kept.to(compute) if kept is x else kept

    torch._C._autograd._push_saved_tensors_default_hooks(pack, unpack)
    try:
        y = nn.functional.layer_norm(copy[0], (x.shape[-1],), weight, bias, eps)
    finally:
        torch._C._autograd._pop_saved_tensors_default_hooks()
        copy.clear()
    return cast(y, out_dtype)


# ------------------------------------------------------------------------------------ public API
def layer_norm(x: Tensor, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, eps: float = 1e-5, *,
               out_dtype: Optional[torch.dtype] = None, backend: str = "auto") -> Tensor:
    """LayerNorm of ``x`` (..., C) over its last dimension, with optional ``weight`` / ``bias`` of shape (C,).

    Computed in float32 (float64 for float64 inputs) as ``torch.nn.functional.layer_norm`` and rounded
    once to the output dtype: ``out_dtype`` if given, else the autocast dtype when autocast is enabled on
    ``x``'s device, else ``x.dtype``. Under autocast this differs from ``F.layer_norm`` (which returns
    float32) in dtype only: the values are exactly what an ``nn.Linear`` after it would see once it has
    cast its input to the autocast dtype. ``backend``: "auto", "reference", "triton", "cuda" (the forward).
    """
    if not (x.is_floating_point() and x.dim() >= 1):
        raise ValueError(f"layer_norm: expected a floating-point tensor of at least one dimension, "
                         f"got {x.dtype} of shape {tuple(x.shape)}")
    columns = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (columns,):
            raise ValueError(f"layer_norm: {name} must have shape ({columns},) to match the last dimension of "
                             f"the input {tuple(x.shape)}, got {tuple(t.shape)}")
    if out_dtype is None:
        out_dtype = autocast_dtype(x) or x.dtype
    if plain_eager((x, weight, bias)):
        present = _present(x, weight, bias)
        forward_backend = _eager_forward_backend(present, backend)
        if not (torch.is_grad_enabled() and (x.requires_grad or any(t is not None and t.requires_grad
                                                                    for t in (weight, bias)))):
            return _forward(x, weight, bias, float(eps), out_dtype, forward_backend)[0]  # nothing to differentiate
        # resolved once here (host time: eager steps are bound by the host launching kernels)
        fwd = resolve("layer_norm_fwd", forward_backend, present)
        bwd = resolve("layer_norm_bwd", backend, (x, *present))
        if _torch_path(x, fwd, bwd):
            return _torch_layer_norm(x, weight, bias, float(eps), out_dtype)
        node = _cuda_eager_node(fwd, bwd)
        if node is not None:
            return node(x, weight, bias, float(eps), out_dtype)
        return _EagerLayerNorm.apply(x, weight, bias, float(eps), out_dtype, backend)
    y, _, _ = torch.ops.vmamba_zoo.layer_norm_fwd(x, weight, bias, float(eps), out_dtype, backend)
    return y


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension on the ``vmamba_zoo::layer_norm_fwd`` op.

    Same constructor, parameters and state_dict keys as ``nn.LayerNorm`` (checkpoints load either way),
    plus ``backend`` ("auto", "reference", "triton", "cuda"; also settable as an attribute). Only a single
    normalised dimension is supported (that is what channel-last maps need).

    Output dtype: outside autocast the input's dtype, exactly as ``nn.LayerNorm``. Under autocast on the
    input's device, the autocast dtype (``nn.LayerNorm`` returns float32 there): normalised in float32,
    rounded once. With torch's forward (the reference, the custom op's choice below 2^24 elements) that is bit for
    bit what the ``nn.Linear`` that follows each norm in VMamba sees after its own cast; the Triton and CUDA
    forwards (the eager path's choice where the extension runs) may differ from it in the last bit of the float32
    statistics. Either way the separate float32 -> float16 cast pass (and the float32 write and read) disappears.
    Use it only where the consumer casts to the autocast dtype anyway (a Linear, a matmul), not where float32 output
    matters (e.g. a norm feeding a reduction).
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None, backend: str = "auto") -> None:
        super().__init__(normalized_shape, eps=eps, elementwise_affine=elementwise_affine, bias=bias,
                         device=device, dtype=dtype)
        if len(self.normalized_shape) != 1:
            raise ValueError(f"vmamba_zoo LayerNorm normalises the last dimension only; got normalized_shape "
                             f"{tuple(self.normalized_shape)} (use torch.nn.LayerNorm for several dimensions)")
        self.backend = backend

    def forward(self, x: Tensor) -> Tensor:
        channels = self.normalized_shape[0]
        if x.dim() == 0 or x.shape[-1] != channels:
            raise ValueError(f"LayerNorm({channels}): expected an input whose last dimension is {channels}, "
                             f"got shape {tuple(x.shape)}")
        if self.backend == "auto" and torch.compiler.is_compiling():
            # under torch.compile, inductor fuses a plain LayerNorm with its neighbours (residual adds, casts),
            # which an opaque op would prevent
            out_dtype = autocast_dtype(x)
            y = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            return y if out_dtype is None else y.to(out_dtype)
        return layer_norm(x, self.weight, self.bias, self.eps, backend=self.backend)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.backend == "auto" else f", backend={self.backend!r}")
