"""``vmamba_zoo::selective_scan_fwd`` / ``_fwd_states`` / ``_bwd`` custom ops and the public ``selective_scan``.

The ops are opaque to torch.compile (fake implementations give the shapes) and differentiable
through ``register_autograd``, whose backward is itself a custom op, so a CUDA or Triton
backend plugs into both directions by registering under the names ``selective_scan_fwd``,
``selective_scan_fwd_states`` and ``selective_scan_bwd`` (see :mod:`vmamba_zoo.ops.backends`).

``selective_scan_fwd_states`` is the training forward: it also returns the state at every 256-position chunk start
(``reference.STATES_CHUNK``), which autograd hands to the backward, so a backend whose backward would otherwise
recompute them (the CUDA kernel: a pass over u, delta and B) reads them instead.
"""
from __future__ import annotations

import functools
import inspect
import os
from typing import Optional

import torch
from torch import Tensor

from . import reference
from .backends import available_backends, register_backend, requested_backend, resolve
from .reference.selective_scan import _compute_dtype

__all__ = ["selective_scan"]

register_backend("selective_scan_fwd", "reference", reference.selective_scan_fwd, priority=0)
register_backend("selective_scan_fwd_states", "reference", reference.selective_scan_fwd_states, priority=0)
register_backend("selective_scan_bwd", "reference", reference.selective_scan_bwd, priority=0)


def _out_dtype(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, fp32_output: bool) -> torch.dtype:
    # as the reference: the state precision, promoted over all of u, delta, A, B, C (at least float32)
    return _compute_dtype(u, delta, A, B, C) if fp32_output else u.dtype


@torch.library.custom_op("vmamba_zoo::selective_scan_fwd", mutates_args=())
def _selective_scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                        z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                        fp32_output: bool, backend: str) -> Tensor:
    fn = resolve("selective_scan_fwd", backend, (u, delta, A, B, C))
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output)


@_selective_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output, backend):
    return u.new_empty(u.shape, dtype=_out_dtype(u, delta, A, B, C, fp32_output))


@torch.library.custom_op("vmamba_zoo::selective_scan_fwd_states", mutates_args=())
def _selective_scan_fwd_states(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                               z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                               fp32_output: bool, backend: str) -> tuple[Tensor, Tensor]:
    fn = resolve("selective_scan_fwd_states", _training_forward_backend(backend), (u, delta, A, B, C))
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output)


def _training_forward_backend(backend: str) -> str:
    """The backend the training forward is asked for: the argument, its own
    VMAMBA_ZOO_SELECTIVE_SCAN_FWD_STATES_BACKEND, else what the forward would be asked for (VMAMBA_ZOO_SELECTIVE_SCAN_FWD_BACKEND, then VMAMBA_ZOO_BACKEND), so an
    override of the forward holds in training too."""
    if backend and backend != "auto":
        return backend
    return (os.environ.get("VMAMBA_ZOO_SELECTIVE_SCAN_FWD_STATES_BACKEND", "")
            or requested_backend("selective_scan_fwd", backend))


def _states_forward_covers_forward() -> bool:
    """Whether every selective_scan_fwd backend has a training forward too. A backend registered for the plain
    forward alone (a plug-in that predates selective_scan_fwd_states) must stay the forward that training runs."""
    return set(available_backends("selective_scan_fwd")) <= set(available_backends("selective_scan_fwd_states"))


@_selective_scan_fwd_states.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output, backend):
    batch, channels, length = u.shape
    chunks = -(-length // reference.STATES_CHUNK)
    return (u.new_empty(u.shape, dtype=_out_dtype(u, delta, A, B, C, fp32_output)),
            u.new_empty((batch, channels, chunks, A.shape[1]), dtype=_compute_dtype(u, delta, A, B, C)))


@functools.lru_cache(maxsize=None)
def _takes_saved_states(fn) -> bool:
    """Whether a selective_scan_bwd backend accepts ``saved_states`` (by name or as a keyword of **kwargs)."""
    params = inspect.signature(fn).parameters.values()
    return any(p.name == "saved_states" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _empty(ref: Tensor) -> Tensor:
    return ref.new_empty(0)


@torch.library.custom_op("vmamba_zoo::selective_scan_bwd", mutates_args=())
def _selective_scan_bwd(dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                        D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                        delta_softplus: bool, backend: str, saved_states: Optional[Tensor] = None
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    fn = resolve("selective_scan_bwd", backend, (dout, u, delta, A, B, C))
    if saved_states is not None and _takes_saved_states(fn):
        grads = fn(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, saved_states=saved_states)
    else:  # a backend registered without the argument recomputes the states
        grads = fn(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    # optional inputs that were absent get an empty gradient (custom ops return tensors only);
    # contiguous whatever the backend's layout, as the fake implementation promises
    return tuple(_empty(u) if g is None else g.contiguous() for g in grads)


@_selective_scan_bwd.register_fake
def _(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend, saved_states=None):
    def like(t):
        return torch.empty_like(t, memory_format=torch.contiguous_format)
    return (like(u), like(delta), like(A), like(B), like(C), _empty(u) if D is None else like(D),
            _empty(u) if z is None else like(z), _empty(u) if delta_bias is None else like(delta_bias))


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output, backend = inputs
    states = output[1] if isinstance(output, tuple) else None  # selective_scan_fwd_states's
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
    ctx.delta_softplus, ctx.backend = delta_softplus, backend


def _backward(ctx, dout, dstates=None):  # dstates: the saved states are not differentiable (no gradient flows)
    u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
    grads = torch.ops.vmamba_zoo.selective_scan_bwd(dout.contiguous(), u, delta, A, B, C, D, z, delta_bias,
                                                    ctx.delta_softplus, ctx.backend, states)
    du, ddelta, dA, dB, dC, dD, dz, ddelta_bias = grads
    return (du, ddelta, dA, dB, dC, None if D is None else dD, None if z is None else dz,
            None if delta_bias is None else ddelta_bias, None, None, None)


_selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)
_selective_scan_fwd_states.register_autograd(_backward, setup_context=_setup_context)


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
                   z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                   fp32_output: bool = True, backend: str = "auto") -> Tensor:
    """Selective scan over ``u`` (batch, K*D, L) with B, C (batch, K, N, L) shared per group of D channels.

    Returns y (batch, K*D, L), in float32 (float64 for float64 inputs) when ``fp32_output``, else
    in ``u``'s dtype. See :mod:`vmamba_zoo.ops.reference.selective_scan` for the recurrence.
    ``backend``: "auto", "reference", or a registered kernel backend.
    """
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, K*D, L), got shape {tuple(u.shape)}")
    batch, channels, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta shape {tuple(delta.shape)} != u shape {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"selective_scan: A must be ({channels}, d_state), got {tuple(A.shape)}")
    d_state = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() != 4 or t.shape[0] != batch or t.shape[2] != d_state or t.shape[3] != length:
            raise ValueError(f"selective_scan: {name} must be ({batch}, K, {d_state}, {length}), got {tuple(t.shape)}")
        if channels % t.shape[1]:
            raise ValueError(f"selective_scan: {channels} channels do not split into {t.shape[1]} groups of {name}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (channels,):
            raise ValueError(f"selective_scan: {name} must be ({channels},), got {tuple(t.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"selective_scan: z shape {tuple(z.shape)} != u shape {tuple(u.shape)}")
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output, backend)
    if (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args[:8])
            and _states_forward_covers_forward()):
        return torch.ops.vmamba_zoo.selective_scan_fwd_states(*args)[0]  # its states spare the backward a pass
    return torch.ops.vmamba_zoo.selective_scan_fwd(*args)
