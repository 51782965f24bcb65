"""Step-by-step oracles of the token mixers, for tests only: Python loops over the positions of each scan
direction, in the visiting order of :func:`vmamba_zoo.ops.reference.cross_scan.scan_order` (not through
the cross_scan/cross_merge ops), reading the parameters of a built mixer. Autograd gives their gradients.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.reference.cross_scan import scan_order
from ..ops.reference.selective_scan import selective_scan_naive

__all__ = ["mamba_naive", "lstm_naive", "xlstm_naive", "attention_naive", "mlstm_recurrent", "slstm_recurrent"]


def _sequences(u: Tensor, directions: int):
    """(batch, H, W, C) -> [(order (L,), (batch, L, C) in that order)] for each direction."""
    batch, height, width, channels = u.shape
    flat = u.reshape(batch, height * width, channels)
    return [(order, flat[:, order]) for order in scan_order(height, width, directions)]


def _place(ys, shape) -> Tensor:
    """Sum direction outputs [(order, (batch, L, C))] back onto their pixels -> (batch, H, W, C)."""
    batch, height, width = shape
    out = 0
    for order, y in ys:
        out = out + torch.zeros_like(y).index_copy(1, order, y)
    return out.view(batch, height, width, -1)


def mamba_naive(mixer, x: Tensor) -> Tensor:
    batch, height, width, _ = x.shape
    k, d_inner = mixer.scan_directions, mixer.d_inner
    u, z = mixer.in_proj(x).chunk(2, dim=-1)
    weight, bias = mixer.conv1d.weight[:, 0], mixer.conv1d.bias  # (K*d_inner, width)
    ys = []
    for i, (order, seq) in enumerate(_sequences(u, k)):
        sl = slice(i * d_inner, (i + 1) * d_inner)
        w, kernel = weight[sl], weight.shape[-1]
        steps = []
        for t in range(seq.shape[1]):  # causal depthwise conv: taps on t-kernel+1 .. t
            acc = bias[sl]
            for j in range(kernel):
                if t - kernel + 1 + j >= 0:
                    acc = acc + w[:, j] * seq[:, t - kernel + 1 + j]
            steps.append(F.silu(acc))
        s = torch.stack(steps, dim=2)  # (batch, d_inner, L)
        x_dbl = torch.einsum("bdl,cd->bcl", s, mixer.x_proj_weight[i])
        dt, B, C = torch.split(x_dbl, [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=1)
        dt = torch.einsum("brl,dr->bdl", dt, mixer.dt_projs_weight[i])
        y = selective_scan_naive(s, dt, -torch.exp(mixer.A_logs[sl]), B[:, None], C[:, None], mixer.Ds[sl],
                                 None, mixer.dt_projs_bias[i], delta_softplus=True)
        ys.append((order, y.transpose(1, 2)))
    y = _place(ys, (batch, height, width)) / k
    return mixer.out_proj(y * F.silu(z))


def _lstm_dir(seq: Tensor, w_ih: Tensor, w_hh: Tensor, b: Tensor) -> Tensor:
    h = c = seq.new_zeros(seq.shape[0], w_hh.shape[1])
    outs = []
    for t in range(seq.shape[1]):
        i, f, g, o = (seq[:, t] @ w_ih.T + h @ w_hh.T + b).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, dim=1)


def lstm_naive(mixer, x: Tensor) -> Tensor:
    batch, height, width, _ = x.shape
    k = mixer.scan_directions
    # direction -> (LSTM, weight suffix) as cross_scan orders them: rows, cols, rows reversed, cols reversed
    owners = {1: [(0, "")], 2: [(0, ""), (0, "_reverse")], 4: [(0, ""), (1, ""), (0, "_reverse"), (1, "_reverse")]}
    ys = []
    for (order, seq), (index, suffix) in zip(_sequences(mixer.in_proj(x), k), owners[k]):
        lstm = mixer.lstms[index]
        p = {n: getattr(lstm, f"{n}_l0{suffix}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        ys.append((order, _lstm_dir(seq, p["weight_ih"], p["weight_hh"], p["bias_ih"] + p["bias_hh"])))
    return mixer.out_proj(mixer.out_norm(_place(ys, (batch, height, width))))


def mlstm_recurrent(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, fgate: Tensor) -> Tensor:
    """The mLSTM recurrence step by step: q, k, v (..., L, d), gate pre-activations (..., L)."""
    k = k / math.sqrt(k.shape[-1])
    C = q.new_zeros(*q.shape[:-2], v.shape[-1], k.shape[-1])
    n = q.new_zeros(*q.shape[:-2], k.shape[-1])
    m = q.new_full(q.shape[:-2], float("-inf"))
    outs = []
    for t in range(q.shape[-2]):
        log_f = F.logsigmoid(fgate[..., t])
        m_new = torch.maximum(log_f + m, igate[..., t])
        f, i = torch.exp(log_f + m - m_new), torch.exp(igate[..., t] - m_new)
        C = f[..., None, None] * C + i[..., None, None] * (v[..., t, :, None] * k[..., t, None, :])
        n = f[..., None] * n + i[..., None] * k[..., t, :]
        num = (C @ q[..., t, :, None])[..., 0]
        den = (n * q[..., t, :]).sum(-1)
        outs.append(num / torch.maximum(den.abs(), torch.exp(-m_new))[..., None])
        m = m_new
    return torch.stack(outs, dim=-2)


def slstm_recurrent(wx: Tensor, R: Tensor, heads: int) -> Tensor:
    """sLSTM step by step: wx (batch, L, heads*4*d) input pre-activations laid out (heads, gate i f z o, d),
    R (heads, 4*d, d) block-diagonal recurrent weights (applied as one dense matrix)."""
    batch, length, _ = wx.shape
    d = R.shape[-1]
    dense = torch.block_diag(*R)  # (heads*4d, heads*d)
    h = c = n = m = wx.new_zeros(batch, heads * d)
    outs = []
    for t in range(length):
        pre = (wx[:, t] + h @ dense.T).view(batch, heads, 4, d)
        i_pre, f_pre, z_pre, o_pre = (pre[:, :, g].reshape(batch, heads * d) for g in range(4))
        log_f = F.logsigmoid(f_pre)
        m_new = torch.maximum(log_f + m, i_pre)
        i, f = torch.exp(i_pre - m_new), torch.exp(log_f + m - m_new)
        c, n, m = f * c + i * torch.tanh(z_pre), f * n + i, m_new
        h = torch.sigmoid(o_pre) * c / n
        outs.append(h)
    return torch.stack(outs, dim=1)


def xlstm_naive(mixer, x: Tensor) -> Tensor:
    batch, height, width, _ = x.shape
    heads, inner = mixer.num_heads, mixer.inner
    u = mixer.in_proj(x)
    z = None
    if mixer.cell == "mlstm":
        u, z = u.split([3 * inner, inner], dim=-1)
    ys = []
    for i, (order, seq) in enumerate(_sequences(u, mixer.scan_directions)):
        if mixer.reverse:
            order, seq = order.flip(0), seq.flip(1)
        gates = seq @ mixer.gate_weight[i].T + mixer.gate_bias[i]  # (batch, L, G)
        if mixer.cell == "mlstm":
            q, k, v = (t.reshape(batch, -1, heads, inner // heads).transpose(1, 2) for t in seq.chunk(3, dim=-1))
            ig, fg = gates.transpose(1, 2).reshape(batch, 2, heads, -1).unbind(1)
            y = mlstm_recurrent(q, k, v, ig, fg).transpose(1, 2).reshape(batch, -1, inner)
        else:
            y = slstm_recurrent(gates, mixer.recurrent_weight[i], heads)
        ys.append((order, y))
    y = mixer._norm(_place(ys, (batch, height, width)))
    if z is not None:
        y = y * F.silu(z)
    return mixer.out_proj(y)


def attention_naive(mixer, x: Tensor) -> Tensor:
    """Explicit softmax(q k^T / sqrt(d)) v per query pixel over the pixels of its window (or the map)."""
    if mixer.pos is not None:
        x = x + mixer.pos(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    batch, height, width, dim = x.shape
    heads, ws = mixer.num_heads, mixer.window_size
    q, k, v = mixer.qkv(x).split([mixer.qk_dim, mixer.qk_dim, dim], dim=-1)
    q, k, v = (t.reshape(batch, height * width, heads, -1) for t in (q, k, v))
    rows, cols = torch.arange(height).repeat_interleave(width), torch.arange(width).repeat(height)
    outs = []
    for p in range(height * width):
        keys = torch.arange(height * width) if not ws else torch.nonzero(
            (rows // ws == rows[p] // ws) & (cols // ws == cols[p] // ws))[:, 0]
        logits = torch.einsum("bhd,bkhd->bhk", q[:, p], k[:, keys]) / math.sqrt(q.shape[-1])
        outs.append(torch.einsum("bhk,bkhd->bhd", logits.softmax(-1), v[:, keys]).reshape(batch, dim))
    return mixer.proj(torch.stack(outs, dim=1).view(batch, height, width, dim))
