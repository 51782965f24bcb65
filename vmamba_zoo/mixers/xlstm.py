"""xLSTM token mixer (Beck et al. 2024, arXiv 2405.04517; Vision-LSTM, arXiv 2406.04303): mLSTM or sLSTM
along the scan directions of a 2D map.

mLSTM (matrix memory, per head; q, k, v of head width d, k scaled by d^-1/2; gates from q, k, v):
    m_t = max(log sigmoid(f~_t) + m_{t-1}, i~_t)                 (stabiliser, m_{-1} = -inf)
    f_t = exp(log sigmoid(f~_t) + m_{t-1} - m_t),  i_t = exp(i~_t - m_t)
    C_t = f_t C_{t-1} + i_t v_t k_t^T,   n_t = f_t n_{t-1} + i_t k_t
    h_t = C_t q_t / max(|n_t . q_t|, exp(-m_t))
  Training/inference use the equivalent chunkwise-parallel form (:func:`mlstm_chunkwise`: quadratic
  within equal chunks of at most ``chunk_size`` steps, every chunk at once, the states entering the chunks as one weighted
  sum of the chunks' own states; one chunk = the fully parallel form); the step-by-step recurrence is the
  oracle in :mod:`vmamba_zoo.mixers.reference`.
sLSTM (scalar memory, block-diagonal recurrent weights R over ``num_heads`` heads):
    i~, f~, z~, o~ = W x_t + R h_{t-1} + b
    m_t = max(log sigmoid(f~_t) + m_{t-1}, i~_t)  (m_{-1} = 0),  i_t, f_t as above
    c_t = f_t c_{t-1} + i_t tanh(z~_t),  n_t = f_t n_{t-1} + i_t,  h_t = sigmoid(o~_t) c_t / n_t
  Recurrent by nature: one batched input projection, then the ``vmamba_zoo::slstm_fwd`` op over the positions
  (:mod:`vmamba_zoo.ops.slstm`: a PyTorch loop with the rest batched outside it; explicit backward).
Block: x -> in_proj -> cell along each scan direction -> sum on pixels -> per-head LayerNorm
[-> * SiLU(z), mLSTM] -> out_proj. With one direction, ``alternate`` reverses it on odd blocks
(``block_index``), as Vision-LSTM. FLOPs: all matmuls/einsums natively, the sLSTM recurrence's R h_{t-1}
by the op's formula (:mod:`vmamba_zoo.analysis.flops`); gate math not counted.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import Tensor

from ..ops import SCAN_DIRECTIONS, cross_merge, cross_scan
from ..ops.slstm import slstm_scan  # re-exported: the sLSTM recurrence over (batch, K, L, heads, 4, d)
from .base import TokenMixer, register_mixer

__all__ = ["XLSTMMixer", "mlstm_chunkwise", "slstm_scan"]


def mlstm_chunkwise(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, fgate: Tensor, chunk_size: int = 64) -> Tensor:
    """mLSTM outputs h (..., L, d) of q, k, v (..., L, d) and gate pre-activations (..., L); k unscaled.

    All chunks at once (a fixed number of ops whatever L, no loop over chunks): within a chunk the quadratic
    form; across chunks, each chunk's own state contribution S_j (stabilised at the end of chunk j) and the
    state entering chunk c as one (chunks x chunks) weighted sum of the S_j. The stabiliser m_t is the
    recurrence's own, max_{j<=t} (i~_j + sum_{j<s<=t} log f_s), from a cumulative max over chunk ends.
    """
    *lead, length, d = q.shape
    k = k * d ** -0.5
    chunks = -(-length // chunk_size)
    size = -(-length // chunks)  # equal chunks of at most chunk_size steps: less padding than chunk_size ones
    pad = chunks * size - length
    if pad:  # padded steps come last: no real step sees them (finite values: no NaN in any gradient)
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        igate, fgate = F.pad(igate, (0, pad)), F.pad(fgate, (0, pad))
    q, k, v = (t.reshape(*lead, chunks, size, d) for t in (q, k, v))
    ig = igate.reshape(*lead, chunks, size)
    b = F.logsigmoid(fgate).reshape(*lead, chunks, size).cumsum(-1)  # log decay from the chunk start to t
    # log weight of step j at step t in the chunk, -inf above the diagonal; one (size, size) tensor per chunk
    # is made here and in the weights below, as few as autograd allows: they dominate the memory traffic
    future = torch.ones(size, size, dtype=torch.bool, device=q.device).triu(1)
    log_d = ((ig - b)[..., None, :] + b[..., :, None]).masked_fill_(future, float("-inf"))
    m = log_d.amax(-1)  # (..., chunks, size): the stabiliser from the chunk's own steps
    if chunks > 1:
        # chunk-end stabilisers M_c = max(a_c, g_c + M_{c-1}) = G_c + cummax_{j<=c}(a_j - G_j), G = cumsum(g)
        g = b[..., -1]
        big_g = g.cumsum(-1)
        offset = (m[..., -1] - big_g).cummax(-1).values  # M_c - G_c
        m_end = big_g + offset
        m_prev = F.pad(m_end[..., :-1], (1, 0), value=float("-inf"))  # M_{c-1}; none before the first chunk
        m = torch.maximum(m, b + m_prev[..., None])
    s = (q @ k.transpose(-1, -2)) * (log_d - m[..., None]).exp_()
    num, den = s @ v, s.sum(-1)
    if chunks > 1:
        # chunk j's state S_j = sum_{s in j} exp(g_j - b_s + i~_s - M_j) v_s k_s^T (and n: k_s), as (d*d + d)
        w = torch.exp(g[..., None] - b + ig - m_end[..., None])[..., None]
        own = torch.cat([((v * w).transpose(-1, -2) @ k).flatten(-2), (k * w).sum(-2)], dim=-1)
        # state entering chunk c: sum_{j<c} exp((G_{c-1} - M_{c-1}) - (G_j - M_j)) S_j, weights <= 1
        p = -offset
        p_prev = F.pad(p[..., :-1], (1, 0))
        before = torch.ones(chunks, chunks, dtype=torch.bool, device=q.device).tril(-1)
        weights = torch.exp((p_prev[..., :, None] - p[..., None, :]).masked_fill(~before, float("-inf")))
        entering = weights @ own  # (..., chunks, d*d + d)
        C, n = entering[..., :d * d].unflatten(-1, (d, d)), entering[..., d * d:]
        scale = torch.exp(b + m_prev[..., None] - m)  # 0 in the first chunk
        num = num + scale[..., None] * (q @ C.transpose(-1, -2))
        den = den + scale * (q @ n[..., None])[..., 0]
    h = num / torch.maximum(den.abs(), torch.exp(-m))[..., None]
    return h.reshape(*lead, chunks * size, d)[..., :length, :]


@register_notrace_module  # shape arithmetic in forward: one leaf module under timm's fx tracing
@register_mixer("xlstm")
class XLSTMMixer(TokenMixer):
    """mLSTM or sLSTM over 1, 2 or 4 scan directions of a 2D map. See the module doc.

    Args:
        dim: input/output channels. cell: "mlstm" or "slstm".
        inner_ratio: cell width = int(inner_ratio * dim), split into ``num_heads`` heads.
        scan_directions: 1, 2 or 4 (cross_scan's orders). alternate: with 1 direction, odd
            ``block_index`` blocks scan in reverse (Vision-LSTM). chunk_size: mLSTM chunk length.
        proj_drop: dropout after out_proj. backend: backend of the sLSTM op ("auto", "reference").
    """

    model_options = ("block_index", "backend")

    def __init__(self, dim: int, cell: str = "mlstm", inner_ratio: float = 0.5, num_heads: int = 4,
                 scan_directions: int = 1, alternate: bool = True, chunk_size: int = 64, block_index: int = 0,
                 proj_drop: float = 0.0, backend: str = "auto", device=None, dtype=None):
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
        self.chunk_size, self.backend = chunk_size, backend
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

    def forward_tokens(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        (batch, length, _), (height, width) = x.shape, size
        k, heads, inner = self.scan_directions, self.num_heads, self.inner
        u = self.in_proj(x)
        z = None
        if self.cell == "mlstm":
            u, z = u.split([3 * inner, inner], dim=-1)
        us = cross_scan(u.contiguous().view(batch, height, width, -1), k, channels_last=True)  # (batch, K, C, L)
        if self.reverse:
            us = us.flip(-1)
        if self.cell == "mlstm":
            gates = torch.einsum("bkcl,kgc->bkgl", us, self.gate_weight) + self.gate_bias[None, :, :, None]
            q, kk, v = (t.reshape(batch, k, heads, -1, length).transpose(-1, -2) for t in us.chunk(3, dim=2))
            ig, fg = gates.float().view(batch, k, 2, heads, length).unbind(2)
            ys = mlstm_chunkwise(q.float(), kk.float(), v.float(), ig, fg, self.chunk_size)  # float32 state
            ys = ys.transpose(-1, -2).reshape(batch, k, inner, length)
        else:  # pre-activations position-major, as the recurrence reads them
            gates = torch.einsum("bkcl,kgc->bklg", us, self.gate_weight) + self.gate_bias[None, :, None, :]
            wx = gates.float().view(batch, k, length, heads, 4, inner // heads)
            ys = slstm_scan(wx, self.recurrent_weight.float(), self.backend)  # (batch, K, L, heads, d)
            ys = ys.reshape(batch, k, length, inner).transpose(-1, -2)
        if self.reverse:
            ys = ys.flip(-1)
        y = cross_merge(ys.contiguous(), height, width, k, channels_last=True).view(batch, length, inner)
        y = self._norm(y).to(x.dtype)
        if z is not None:
            y = y * F.silu(z)
        return self.proj_drop(self.out_proj(y))
