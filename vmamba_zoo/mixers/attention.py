"""Multi-head self-attention token mixer, global or in non-overlapping windows: the baseline mixer.

    x' = x + DWConv3x3(x)                          (conditional position encoding, ``pos_conv``)
    q, k, v = split(qkv(x'));  per head: softmax(q k^T / sqrt(d_qk)) v   (scaled_dot_product_attention)
    out = proj(concat of heads)
``window_size`` 0 attends over the whole map; w > 0 within w x w windows (the map is zero-padded to a
multiple of w; padded keys are masked out). ``qk_ratio`` < 1 narrows queries and keys only (LeViT-style),
to trade attention parameters for the same value width. FLOPs: the projections natively, the attention
as sdpa's formula (FlopCounterMode; fvcore through the handle in vmamba_zoo.analysis.flops).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import Tensor

from .base import TokenMixer, register_mixer, to_image, to_tokens

__all__ = ["Attention"]


@register_notrace_module  # shape arithmetic in forward: one leaf module under timm's fx tracing
@register_mixer("attention")
class Attention(TokenMixer):
    """Global or windowed multi-head self-attention on a 2D map. See the module doc.

    Args:
        dim: input/output channels. num_heads: default ``dim // head_dim`` (at least 1).
        window_size: 0 = global; w > 0 = w x w windows. qk_ratio: query/key width = qk_ratio * dim.
        qkv_bias: bias on the qkv projection. pos_conv: the depthwise 3x3 position encoding.
        attn_drop: attention dropout (training only). proj_drop: dropout after proj.
    """

    def __init__(self, dim: int, num_heads: Optional[int] = None, head_dim: int = 32, window_size: int = 0,
                 qk_ratio: float = 1.0, qkv_bias: bool = True, pos_conv: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        heads = num_heads or max(1, dim // head_dim)
        qk_dim = max(heads, round(qk_ratio * dim / heads) * heads)
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads={heads}")
        self.num_heads, self.qk_dim, self.window_size, self.attn_drop = heads, qk_dim, window_size, attn_drop
        # without it attention is blind to positions inside a stage (a permutation-equivariant mixer)
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, **dd) if pos_conv else None
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def _attend(self, tokens: Tensor, mask: Optional[Tensor]) -> Tensor:
        groups, length, _ = tokens.shape
        q, k, v = self.qkv(tokens).split([self.qk_dim, self.qk_dim, tokens.shape[-1]], dim=-1)
        q, k, v = (t.view(groups, length, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        return out.transpose(1, 2).reshape(groups, length, -1)

    def forward_tokens(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        if self.pos is not None:
            x = x + to_tokens(self.pos(to_image(x, size)))[0]
        (batch, length, dim), (height, width) = x.shape, size
        ws = self.window_size
        if not ws:
            return self.proj_drop(self.proj(self._attend(x, None)))
        pad_h, pad_w = -height % ws, -width % ws
        x = F.pad(x.view(batch, height, width, dim), (0, 0, 0, pad_w, 0, pad_h))
        rows, cols = (height + pad_h) // ws, (width + pad_w) // ws
        windows = x.view(batch, rows, ws, cols, ws, dim).transpose(2, 3).reshape(-1, ws * ws, dim)
        mask = None
        if pad_h or pad_w:  # padded pixels are no keys: (windows, 1, 1, ws*ws), repeated over the batch
            valid = F.pad(x.new_ones(height, width, dtype=torch.bool), (0, pad_w, 0, pad_h))
            mask = valid.view(rows, ws, cols, ws).transpose(1, 2).reshape(1, rows * cols, 1, 1, ws * ws)
            mask = mask.expand(batch, -1, -1, -1, -1).reshape(batch * rows * cols, 1, 1, ws * ws)
        out = self._attend(windows, mask).view(batch, rows, cols, ws, ws, dim).transpose(2, 3)
        out = out.reshape(batch, rows * ws, cols * ws, dim)[:, :height, :width].reshape(batch, length, dim)
        return self.proj_drop(self.proj(out))
