"""Pure-PyTorch selective scan (Mamba S6), any device.

Shapes (K groups of D channels share B and C; L = sequence length, N = d_state):
    u, delta, z: (batch, K*D, L)     A: (K*D, N)     B, C: (batch, K, N, L)
    D, delta_bias: (K*D,)
Recurrence per channel c = k*D + d, with delta = softplus(delta + delta_bias) when asked:
    h_t = exp(delta_t * A_c) * h_{t-1} + delta_t * B_t * u_t,  h_{-1} = 0
    y_t = <C_t, h_t> + D_c * u_t            (then y_t *= silu(z_t) when z is given)
The state and every sum are kept in at least float32.

``selective_scan_fwd``/``selective_scan_bwd`` evaluate the recurrence with a parallel
(log-depth) linear scan and an explicit backward; ``selective_scan_naive`` is the
step-by-step loop, differentiable by autograd, used only as a test oracle.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def linear_scan(a: Tensor, b: Tensor) -> Tensor:
    """h_t = a_t * h_{t-1} + b_t along the last dim (h_{-1} = 0), in log2(L) parallel steps.

    Hillis-Steele doubling on (a, b) pairs: after the step with offset s every position holds the
    composition of the last 2s steps. Multiplying decays in (0, 1] keeps it stable, unlike
    cumsum-of-logs forms that divide by vanishing products.
    """
    length = a.shape[-1]
    offset = 1
    while offset < length:
        b = torch.cat([b[..., :offset], torch.addcmul(b[..., offset:], a[..., offset:], b[..., :-offset])], dim=-1)
        if offset * 2 < length:  # the last step's products are never used
            a = torch.cat([a[..., :offset], a[..., offset:] * a[..., :-offset]], dim=-1)
        offset *= 2
    return b


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _expand_groups(bc: Tensor, channels: int) -> Tensor:
    """(batch, K, N, L) -> (batch, K*D, N, L), each group shared by its D channels."""
    batch, groups, n, length = bc.shape
    return bc.unsqueeze(2).expand(batch, groups, channels // groups, n, length).reshape(batch, channels, n, length)


def _sum_groups(x: Tensor, groups: int) -> Tensor:
    """(batch, K*D, N, L) -> (batch, K, N, L), the adjoint of ``_expand_groups``."""
    batch, channels, n, length = x.shape
    return x.view(batch, groups, channels // groups, n, length).sum(2)


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    dtype = _compute_dtype(u, delta, A, B, C)
    u_f, delta_raw = u.to(dtype), delta.to(dtype)
    if delta_bias is not None:
        delta_raw = delta_raw + delta_bias.to(dtype)[:, None]
    delta_f = F.softplus(delta_raw) if delta_softplus else delta_raw
    channels = u.shape[1]
    B_x = _expand_groups(B.to(dtype), channels)
    C_x = _expand_groups(C.to(dtype), channels)
    decay = torch.exp(delta_f.unsqueeze(2) * A.to(dtype)[None, :, :, None])  # (batch, KD, N, L)
    drive = (delta_f * u_f).unsqueeze(2) * B_x
    return dtype, u_f, delta_raw, delta_f, B_x, C_x, decay, drive


# Positions per saved state of selective_scan_fwd_states: the state at every STATES_CHUNK-th position is what the
# CUDA backward needs (its kernels' chunk); every backend gives the same states, so any backward may take them.
STATES_CHUNK = 256


def chunk_starts(states: Tensor) -> Tensor:
    """(batch, KD, N, L) states h_t -> (batch, KD, ceil(L / STATES_CHUNK), N): the state before each chunk's first
    position (0 for the first chunk)."""
    ends = states[..., STATES_CHUNK - 1:-1:STATES_CHUNK]  # h at the last position of every chunk but the last
    return torch.cat([torch.zeros_like(states[..., :1]), ends], dim=-1).transpose(-1, -2).contiguous()


def selective_scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                       z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                       fp32_output: bool) -> Tensor:
    return selective_scan_fwd_states(u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output,
                                     keep_states=False)[0]


def selective_scan_fwd_states(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                              z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                              fp32_output: bool, keep_states: bool = True) -> tuple[Tensor, Optional[Tensor]]:
    """(y, the states at the chunk starts (see chunk_starts), in the state precision; None unless keep_states)."""
    dtype, u_f, _, _, _, C_x, decay, drive = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    states = linear_scan(decay, drive)
    y = (states * C_x).sum(2)
    if D is not None:
        y = y + D.to(dtype)[:, None] * u_f
    if z is not None:
        y = y * F.silu(z.to(dtype))
    # fp32_output: keep the state precision (float32, float64 for float64 inputs) instead of u's dtype
    return y.to(dtype if fp32_output else u.dtype), chunk_starts(states) if keep_states else None


def selective_scan_bwd(dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                       delta_softplus: bool, saved_states: Optional[Tensor] = None):
    """Gradients of ``selective_scan_fwd``: (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias).

    The states are recomputed (cheap), ``saved_states`` (the forward's chunk starts) unused. The adjoint state
    g_t = dy_t C_t + decay_{t+1} g_{t+1} is the same linear scan run backwards in time.
    ``dD``/``dz``/``ddelta_bias`` are None when the input was None.
    """
    dtype, u_f, delta_raw, delta_f, B_x, C_x, decay, drive = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    states = linear_scan(decay, drive)
    dy = dout.to(dtype)
    dz = None
    if z is not None:
        z_f = z.to(dtype)
        y = (states * C_x).sum(2)
        if D is not None:
            y = y + D.to(dtype)[:, None] * u_f
        sig = torch.sigmoid(z_f)
        dz = (dy * y * sig * (1 + z_f * (1 - sig))).to(z.dtype)
        dy = dy * z_f * sig
    dD = None
    du = torch.zeros_like(u_f)
    if D is not None:
        dD = (dy * u_f).sum((0, 2)).to(D.dtype)
        du = dy * D.to(dtype)[:, None]
    dC = _sum_groups(states * dy.unsqueeze(2), C.shape[1]).to(C.dtype)
    # adjoint scan, reversed in time: g_t = decay_{t+1} * g_{t+1} + dy_t * C_t
    next_decay = F.pad(decay[..., 1:], (0, 1))
    adj = linear_scan(next_decay.flip(-1), (dy.unsqueeze(2) * C_x).flip(-1)).flip(-1)
    prev_states = F.pad(states[..., :-1], (1, 0))
    ddecay = adj * prev_states * decay  # d/d(delta*A) of the decay term
    adj_B = (adj * B_x).sum(2)
    ddelta = (ddecay * A.to(dtype)[None, :, :, None]).sum(2) + adj_B * u_f
    du = du + adj_B * delta_f
    dA = (ddecay * delta_f.unsqueeze(2)).sum((0, 3)).to(A.dtype)
    dB = _sum_groups(adj * (delta_f * u_f).unsqueeze(2), B.shape[1]).to(B.dtype)
    if delta_softplus:
        ddelta = ddelta * torch.sigmoid(delta_raw)
    ddelta_bias = ddelta.sum((0, 2)).to(delta_bias.dtype) if delta_bias is not None else None
    return du.to(u.dtype), ddelta.to(delta.dtype), dA, dB, dC, dD, dz, ddelta_bias


def selective_scan_naive(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
                         z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None,
                         delta_softplus: bool = False) -> Tensor:
    """Step-by-step oracle (a Python loop over L); autograd gives its gradients. Tests only."""
    dtype = _compute_dtype(u, delta, A, B, C)
    u_f, dt = u.to(dtype), delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    channels, length = u.shape[1], u.shape[2]
    B_x, C_x = _expand_groups(B.to(dtype), channels), _expand_groups(C.to(dtype), channels)
    A_f = A.to(dtype)
    h = u_f.new_zeros(u.shape[0], channels, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, :, t, None] * A_f) * h + (dt[:, :, t] * u_f[:, :, t])[..., None] * B_x[..., t]
        ys.append((h * C_x[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(dtype)[:, None] * u_f
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y
