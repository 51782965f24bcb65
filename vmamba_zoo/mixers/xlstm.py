"""xLSTM token mixer (Beck et al. 2024, arXiv 2405.04517; Vision-LSTM, arXiv 2406.04303): mLSTM or sLSTM
along the scan directions of a 2D map.

mLSTM (matrix memory, per head; q, k, v of head width d, k scaled by d^-1/2; gates from q, k, v):
    m_t = max(log sigmoid(f~_t) + m_{t-1}, i~_t)                 (stabiliser, m_{-1} = -inf)
    f_t = exp(log sigmoid(f~_t) + m_{t-1} - m_t),  i_t = exp(i~_t - m_t)
    C_t = f_t C_{t-1} + i_t v_t k_t^T,   n_t = f_t n_{t-1} + i_t k_t
    h_t = C_t q_t / max(|n_t . q_t|, exp(-m_t))
  Training/inference use the equivalent chunkwise-parallel form (:func:`mlstm_chunkwise`: quadratic
  within chunks of ``chunk_size`` steps, the (C, n, m) state carried between chunks; one chunk = the
  fully parallel form); the step-by-step recurrence is the oracle in :mod:`vmamba_zoo.mixers.reference`.
sLSTM (scalar memory, block-diagonal recurrent weights R over ``num_heads`` heads):
    i~, f~, z~, o~ = W x_t + R h_{t-1} + b
    m_t = max(log sigmoid(f~_t) + m_{t-1}, i~_t)  (m_{-1} = 0),  i_t, f_t as above
    c_t = f_t c_{t-1} + i_t tanh(z~_t),  n_t = f_t n_{t-1} + i_t,  h_t = sigmoid(o~_t) c_t / n_t
  Recurrent by nature: a loop over positions after one batched input projection.
Block: x -> in_proj -> cell along each scan direction -> sum on pixels -> per-head LayerNorm
[-> * SiLU(z), mLSTM] -> out_proj. With one direction, ``alternate`` reverses it on odd blocks
(``block_index``), as Vision-LSTM. FLOPs: all matmuls/einsums, counted natively by FlopCounterMode.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import Tensor

from ..ops import SCAN_DIRECTIONS, cross_merge, cross_scan
from .base import TokenMixer, register_mixer

__all__ = ["XLSTMMixer", "mlstm_chunkwise", "slstm_scan"]


def mlstm_chunkwise(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, fgate: Tensor, chunk_size: int = 64) -> Tensor:
    """mLSTM outputs h (..., L, d) of q, k, v (..., L, d) and gate pre-activations (..., L); k unscaled."""
    k = k * k.shape[-1] ** -0.5
    log_f = F.logsigmoid(fgate)
    length = q.shape[-2]
    C = n = m = None
    outs = []
    for start in range(0, length, chunk_size):
        qc, kc, vc = (t[..., start:start + chunk_size, :] for t in (q, k, v))
        ic, b = igate[..., start:start + chunk_size], log_f[..., start:start + chunk_size].cumsum(-1)
        size = b.shape[-1]
        causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
        log_d = (b[..., :, None] - b[..., None, :] + ic[..., None, :]).masked_fill(~causal, float("-inf"))
        m_t = log_d.amax(-1)  # (..., c): the stabiliser the recurrence would have
        if C is not None:
            inter = b + m[..., None]  # log-weight of the carried state at each step
            m_t = torch.maximum(m_t, inter)
        s = (qc @ kc.transpose(-1, -2)) * torch.exp(log_d - m_t[..., None])
        num, den = s @ vc, s.sum(-1)
        if C is not None:
            scale = torch.exp(inter - m_t)
            num = num + scale[..., None] * (qc @ C.transpose(-1, -2))
            den = den + scale * (qc @ n[..., None])[..., 0]
        outs.append(num / torch.maximum(den.abs(), torch.exp(-m_t))[..., None])
        m_end = m_t[..., -1]
        w = torch.exp(b[..., -1:] - b + ic - m_end[..., None])[..., None]  # each step's weight in the new state
        C_new, n_new = (vc * w).transpose(-1, -2) @ kc, (kc * w).sum(-2)
        if C is not None:
            decay = torch.exp(b[..., -1] + m - m_end)
            C_new, n_new = C_new + decay[..., None, None] * C, n_new + decay[..., None] * n
        C, n, m = C_new, n_new, m_end
    return torch.cat(outs, dim=-2)


def slstm_scan(wx: Tensor, R: Tensor) -> Tensor:
    """sLSTM outputs (batch, K, heads, d, L) of input pre-activations wx (batch, K, heads, 4, d, L) (gates
    i, f, z, o) and recurrent weights R (K, heads, 4*d, d)."""
    batch, k, heads, _, d, length = wx.shape
    h = c = n = m = wx.new_zeros(batch, k, heads, d)
    outs = []
    for t in range(length):
        pre = wx[..., t] + torch.einsum("bkhe,khge->bkhg", h, R).view(batch, k, heads, 4, d)
        i_pre, f_pre, z_pre, o_pre = pre.unbind(3)
        log_f = F.logsigmoid(f_pre)
        m_new = torch.maximum(log_f + m, i_pre)
        i, f = torch.exp(i_pre - m_new), torch.exp(log_f + m - m_new)
        c, n, m = f * c + i * torch.tanh(z_pre), f * n + i, m_new
        h = torch.sigmoid(o_pre) * c / n
        outs.append(h)
    return torch.stack(outs, dim=-1)


@register_notrace_module  # python loops over positions: one leaf module under timm's fx tracing
@register_mixer("xlstm")
class XLSTMMixer(TokenMixer):
    """mLSTM or sLSTM over 1, 2 or 4 scan directions of a (batch, H, W, dim) map. See the module doc.

    Args:
        dim: input/output channels. cell: "mlstm" or "slstm".
        inner_ratio: cell width = int(inner_ratio * dim), split into ``num_heads`` heads.
        scan_directions: 1, 2 or 4 (cross_scan's orders). alternate: with 1 direction, odd
            ``block_index`` blocks scan in reverse (Vision-LSTM). chunk_size: mLSTM chunk length.
        proj_drop: dropout after out_proj.
    """

    model_options = ("block_index",)

    def __init__(self, dim: int, cell: str = "mlstm", inner_ratio: float = 0.5, num_heads: int = 4,
                 scan_directions: int = 1, alternate: bool = True, chunk_size: int = 64, block_index: int = 0,
                 proj_drop: float = 0.0, device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if cell not in ("mlstm", "slstm"):
            raise ValueError(f"cell must be 'mlstm' or 'slstm', got {cell!r}")
        if scan_directions not in SCAN_DIRECTIONS:
            raise ValueError(f"scan_directions must be one of {SCAN_DIRECTIONS}, got {scan_directions}")
        inner = int(inner_ratio * dim)
        if inner % num_heads:
            raise ValueError(f"cell width {inner} (inner_ratio * dim) must be divisible by num_heads={num_heads}")
        k = scan_directions
        self.cell, self.inner, self.num_heads, self.scan_directions = cell, inner, num_heads, k
        self.reverse = alternate and k == 1 and block_index % 2 == 1
        self.chunk_size = chunk_size
        head_dim = inner // num_heads
        if cell == "mlstm":
            self.in_proj = nn.Linear(dim, 4 * inner, bias=False, **dd)  # q, k, v and the output gate z
            self.gate_weight = nn.Parameter(torch.zeros(k, 2 * num_heads, 3 * inner, **dd))  # i, f from q, k, v
            self.gate_bias = nn.Parameter(torch.empty(k, 2 * num_heads, **dd))
        else:
            self.in_proj = nn.Linear(dim, inner, bias=False, **dd)
            self.gate_weight = nn.Parameter(torch.empty(k, 4 * inner, inner, **dd))  # W: (heads, i f z o, d)
            self.gate_bias = nn.Parameter(torch.empty(k, 4 * inner, **dd))
            self.recurrent_weight = nn.Parameter(torch.empty(k, num_heads, 4 * head_dim, head_dim, **dd))
        self.norm_weight = nn.Parameter(torch.ones(inner, **dd))
        self.norm_bias = nn.Parameter(torch.zeros(inner, **dd))
        self.out_proj = nn.Linear(inner, dim, bias=False, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        self.reset_cell_parameters()

    @torch.no_grad()
    def reset_cell_parameters(self) -> None:
        """xLSTM's gate init: forget biases spread over [3, 6] (long memory at start), input biases ~ 0."""
        if self.gate_bias.device.type == "meta":
            return
        heads, k = self.num_heads, self.scan_directions
        if self.cell == "mlstm":
            self.gate_weight.zero_()
            self.gate_bias[:, :heads].normal_(0.0, 0.1)
            self.gate_bias[:, heads:].copy_(torch.linspace(3.0, 6.0, heads))
        else:
            head_dim = self.inner // heads
            nn.init.normal_(self.gate_weight, 0.0, self.inner ** -0.5)
            nn.init.normal_(self.recurrent_weight, 0.0, head_dim ** -0.5)
            bias = self.gate_bias.view(k, heads, 4, head_dim)
            bias.zero_()
            bias[:, :, 1].copy_(torch.linspace(3.0, 6.0, heads * head_dim).view(heads, head_dim))

    def _norm(self, y: Tensor) -> Tensor:  # LayerNorm per head, one affine per channel (xLSTM's MultiHeadLayerNorm)
        shape = y.shape
        y = F.layer_norm(y.reshape(*shape[:-1], self.num_heads, -1), (shape[-1] // self.num_heads,))
        return y.reshape(shape) * self.norm_weight + self.norm_bias

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, _ = x.shape
        length, k, heads, inner = height * width, self.scan_directions, self.num_heads, self.inner
        u = self.in_proj(x)
        z = None
        if self.cell == "mlstm":
            u, z = u.split([3 * inner, inner], dim=-1)
        us = cross_scan(u.contiguous(), k, channels_last=True)  # (batch, K, C, L)
        if self.reverse:
            us = us.flip(-1)
        gates = torch.einsum("bkcl,kgc->bkgl", us, self.gate_weight) + self.gate_bias[None, :, :, None]
        if self.cell == "mlstm":
            q, kk, v = (t.reshape(batch, k, heads, -1, length).transpose(-1, -2) for t in us.chunk(3, dim=2))
            ig, fg = gates.float().view(batch, k, 2, heads, length).unbind(2)
            ys = mlstm_chunkwise(q.float(), kk.float(), v.float(), ig, fg, self.chunk_size)  # float32 state
            ys = ys.transpose(-1, -2).reshape(batch, k, inner, length)
        else:
            wx = gates.float().view(batch, k, heads, 4, inner // heads, length)
            ys = slstm_scan(wx, self.recurrent_weight.float()).reshape(batch, k, inner, length)
        if self.reverse:
            ys = ys.flip(-1)
        y = self._norm(cross_merge(ys.contiguous(), height, width, k, channels_last=True)).to(x.dtype)
        if z is not None:
            y = y * F.silu(z)
        return self.proj_drop(self.out_proj(y))
