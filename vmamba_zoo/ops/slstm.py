"""``vmamba_zoo::slstm_fwd`` / ``slstm_bwd``: the sLSTM recurrence (xLSTM's scalar-memory cell) as custom ops.

For every sequence (batch b, direction k) and head, with input pre-activations wx_t (4 gates i, f, z, o of
width d) and the head's recurrent weights R (4d, d):
    i~, f~, z~, o~ = wx_t + R h_{t-1}
    m_t = max(log sigmoid(f~) + m_{t-1}, i~)       (stabiliser; m_{-1} = h_{-1} = c_{-1} = n_{-1} = 0)
    i_t = exp(i~ - m_t),  f_t = exp(log sigmoid(f~) + m_{t-1} - m_t)
    c_t = f_t c_{t-1} + i_t tanh(z~),  n_t = f_t n_{t-1} + i_t,  h_t = sigmoid(o~) c_t / n_t
h does not depend on the stabiliser (c and n carry the same factor exp(-m_t)), so the backward treats m as a
constant: the exact gradient, without the terms through m that cancel. The forward returns the states
(h, c, n, m) the backward needs; the backward recomputes the pre-activations from them in one batched matmul,
runs the reverse recurrence of the gate gradients, and forms dR in one more matmul.

Backend (:mod:`vmamba_zoo.ops.backends`): ``reference``, PyTorch loops over the positions with everything
else (the input projection, the gate math of the backward that does not depend on the reverse carry) batched
outside them. (A Triton kernel, one launch per direction, was removed: on nvidia-h200 it needed 520 KB of
shared memory at vmamba_tiny_xlstm's shapes, limit 227 KB, and gave NaN at the smallest one.)
Layout: wx (batch, K, L, heads, 4, d), R (K, heads, 4d, d), states (batch, K, L, heads, d), all float32/64.
FLOPs: ``slstm_macs``, the recurrent matmul (batch*K*L*heads*4d*d); formulas in :mod:`vmamba_zoo.analysis.flops`.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .backends import register_backend, resolve

__all__ = ["slstm_scan", "slstm_macs", "slstm_fwd_reference", "slstm_bwd_reference"]


def slstm_macs(wx_shape: Sequence[int]) -> int:
    """Multiply-adds of the recurrent matmul R h_{t-1} over a (batch, K, L, heads, 4, d) input."""
    batch, k, length, heads, gates, d = wx_shape
    return batch * k * length * heads * gates * d * d


# ------------------------------------------------------------------------------------------ reference
def _time_major(t: Tensor) -> Tensor:
    """(batch, K, L, heads, ...) -> (L, K*heads, batch, prod(...)) contiguous: one step = one bmm operand."""
    batch, k, length, heads = t.shape[:4]
    return t.permute(2, 1, 3, 0, *range(4, t.dim())).reshape(length, k * heads, batch, -1).contiguous()


def _batch_major(t: Tensor, batch: int, k: int, heads: int, *tail: int) -> Tensor:
    """Inverse of :func:`_time_major`."""
    length = t.shape[0]
    return t.view(length, k, heads, batch, *tail).permute(3, 1, 0, 2, *range(4, 4 + len(tail))).contiguous()


def slstm_fwd_reference(wx: Tensor, R: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    batch, k, length, heads, _, d = wx.shape
    pre_in = _time_major(wx)                                   # (L, G, batch, 4d)
    r_t = R.reshape(k * heads, 4 * d, d).transpose(1, 2)        # (G, d, 4d): h @ r_t = (R h)^T
    states = [wx.new_empty(length, k * heads, batch, d) for _ in range(4)]  # h, c, n, m of every step
    h_all, c_all, n_all, m_all = states
    h = c = n = m = wx.new_zeros(k * heads, batch, d)
    for t in range(length):
        i, f, z, o = torch.baddbmm(pre_in[t], h, r_t).view(k * heads, batch, 4, d).unbind(2)
        log_f = F.logsigmoid(f) + m
        m = torch.maximum(log_f, i, out=m_all[t])
        i, f = torch.exp(i - m), torch.exp(log_f - m)
        c = torch.addcmul(f * c, i, torch.tanh(z), out=c_all[t])
        n = torch.addcmul(i, f, n, out=n_all[t])
        h = torch.mul(torch.sigmoid(o), c / n, out=h_all[t])
    # separate tensors: a custom op's outputs may not alias each other (the permute can be a no-op view)
    return tuple(_batch_major(s, batch, k, heads, d) for s in states)


def _shifted(t: Tensor) -> Tensor:
    """The previous step's value at each step of a time-major tensor (zeros before the first)."""
    return torch.cat([torch.zeros_like(t[:1]), t[:-1]])


def _gate_terms(wx: Tensor, R: Tensor, h: Tensor, c: Tensor, n: Tensor, m: Tensor):
    """Time-major factors of the gate gradients that do not depend on the reverse carry."""
    batch, k, length, heads, _, d = wx.shape
    h, c, n, m = (_time_major(s) for s in (h, c, n, m))       # (L, G, batch, d)
    h_prev, c_prev, n_prev, m_prev = (_shifted(s) for s in (h, c, n, m))
    r_t = R.reshape(k * heads, 4 * d, d).transpose(1, 2)
    pre = _time_major(wx) + h_prev @ r_t                         # (L, G, batch, 4d): all steps in one matmul
    i, f, z, o = pre.view(length, k * heads, batch, 4, d).unbind(3)
    i_gate = torch.exp(i - m)
    f_gate = torch.exp(F.logsigmoid(f) + m_prev - m)
    tz, so = torch.tanh(z), torch.sigmoid(o)
    return dict(h_prev=h_prev, c_prev=c_prev, n_prev=n_prev, f_gate=f_gate, tz=tz,
                dh_to_c=so / n,                                  # dh -> dc
                dh_to_n=so * c / (n * n),                        # dh -> -dn
                dh_to_o=c / n * so * (1 - so),                   # dh -> d o~
                to_i=i_gate,                                     # (dc tanh z~ + dn) -> d i~
                to_f=f_gate * torch.sigmoid(-f),                 # (dc c_{t-1} + dn n_{t-1}) -> d f~
                to_z=i_gate * (1 - tz * tz))                     # dc -> d z~


def slstm_bwd_reference(dh: Tensor, wx: Tensor, R: Tensor, h: Tensor, c: Tensor, n: Tensor, m: Tensor
                        ) -> Tuple[Tensor, Tensor]:
    batch, k, length, heads, _, d = wx.shape
    g = _gate_terms(wx, R, h, c, n, m)
    dh = _time_major(dh)
    r = R.reshape(k * heads, 4 * d, d)
    dpre = wx.new_empty(length, k * heads, batch, 4, d)
    dc = dn = dpre_next = None
    for t in range(length - 1, -1, -1):
        dh_t = dh[t] if dpre_next is None else torch.baddbmm(dh[t], dpre_next, r)  # + R^T dpre_{t+1}
        dc_t = dh_t * g["dh_to_c"][t] if dc is None else torch.addcmul(dc, dh_t, g["dh_to_c"][t])
        dn_t = -dh_t * g["dh_to_n"][t] if dn is None else torch.addcmul(dn, dh_t, g["dh_to_n"][t], value=-1)
        di, df, dz, do = dpre[t].unbind(2)
        torch.mul(torch.addcmul(dn_t, dc_t, g["tz"][t]), g["to_i"][t], out=di)
        torch.mul(torch.addcmul(dc_t * g["c_prev"][t], dn_t, g["n_prev"][t]), g["to_f"][t], out=df)
        torch.mul(dc_t, g["to_z"][t], out=dz)
        torch.mul(dh_t, g["dh_to_o"][t], out=do)
        dc, dn = dc_t * g["f_gate"][t], dn_t * g["f_gate"][t]
        dpre_next = dpre[t].view(k * heads, batch, 4 * d)
    dpre = dpre.view(length, k * heads, batch, 4 * d)
    # dR[g] = sum over steps and batch of dpre_t h_{t-1}^T
    d_r = torch.einsum("tgbe,tgbd->ged", dpre, g["h_prev"]).reshape(k, heads, 4 * d, d)
    return _batch_major(dpre, batch, k, heads, 4, d), d_r


# -------------------------------------------------------------------------------------------- backends
register_backend("slstm_fwd", "reference", slstm_fwd_reference, priority=0)
register_backend("slstm_bwd", "reference", slstm_bwd_reference, priority=0)


# ------------------------------------------------------------------------------------------ custom ops
@torch.library.custom_op("vmamba_zoo::slstm_fwd", mutates_args=())
def _slstm_fwd(wx: Tensor, R: Tensor, backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return tuple(s.contiguous() for s in resolve("slstm_fwd", backend, (wx, R))(wx, R))


@_slstm_fwd.register_fake
def _(wx, R, backend):
    shape = wx.shape[:4] + wx.shape[5:]
    return tuple(wx.new_empty(shape) for _ in range(4))


@torch.library.custom_op("vmamba_zoo::slstm_bwd", mutates_args=())
def _slstm_bwd(dh: Tensor, wx: Tensor, R: Tensor, h: Tensor, c: Tensor, n: Tensor, m: Tensor, backend: str
               ) -> Tuple[Tensor, Tensor]:
    dwx, d_r = resolve("slstm_bwd", backend, (wx, R, dh))(dh, wx, R, h, c, n, m)
    return dwx.contiguous(), d_r.contiguous()


@_slstm_bwd.register_fake
def _(dh, wx, R, h, c, n, m, backend):
    return torch.empty_like(wx, memory_format=torch.contiguous_format), torch.empty_like(
        R, memory_format=torch.contiguous_format)


def _setup(ctx, inputs, output):
    wx, R, backend = inputs
    ctx.save_for_backward(wx, R, *output)
    ctx.backend = backend


def _backward(ctx, dh, dc, dn, dm):
    # only h leaves the public function: c, n and m are the backward's saved states (their gradients are None)
    wx, R, h, c, n, m = ctx.saved_tensors
    dwx, d_r = torch.ops.vmamba_zoo.slstm_bwd(dh.contiguous(), wx, R, h, c, n, m, ctx.backend)
    return dwx, d_r, None


_slstm_fwd.register_autograd(_backward, setup_context=_setup)


def slstm_scan(wx: Tensor, R: Tensor, backend: str = "auto") -> Tensor:
    """sLSTM outputs h (batch, K, L, heads, d) of input pre-activations wx (batch, K, L, heads, 4, d) (gates
    i, f, z, o; K independent directions) and recurrent weights R (K, heads, 4*d, d). See the module doc."""
    if wx.dim() != 6 or wx.shape[4] != 4:
        raise ValueError(f"slstm_scan: wx must be (batch, K, L, heads, 4, d), got {tuple(wx.shape)}")
    batch, k, length, heads, _, d = wx.shape
    if R.shape != (k, heads, 4 * d, d):
        raise ValueError(f"slstm_scan: R must be ({k}, {heads}, {4 * d}, {d}), got {tuple(R.shape)}")
    if R.dtype != wx.dtype:
        raise ValueError(f"slstm_scan: wx and R dtypes differ ({wx.dtype}, {R.dtype})")
    return torch.ops.vmamba_zoo.slstm_fwd(wx.contiguous(), R.contiguous(), backend)[0]
