"""LSTM token mixer: ``nn.LSTM`` (cuDNN on CUDA) along the scan directions of a 2D map, merged like SS2D.

Per direction k (the orders of ``vmamba_zoo.ops.cross_scan``: 1 = rows; 2 = rows both ways;
4 = rows, columns and both reversed), with u = in_proj(x) of ``hidden`` channels and its own weights:
    i, f, g, o = sigmoid/sigmoid/tanh/sigmoid(W u_t + R h_{t-1} + b)
    c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)           (PyTorch's nn.LSTM, h_{-1} = c_{-1} = 0)
    out = out_proj(LayerNorm(sum_k h^k on its pixels))
A direction and its reverse run as one bidirectional nn.LSTM (one cuDNN call, separate weights).
FLOPs: projections natively; the LSTM's L * 4h * (in + h) MACs per direction are counted by FlopCounterMode on
the meta device (count_macs_torch's way), where the mixer runs it as one matmul per weight: fused cuDNN / oneDNN
LSTM kernels on real tensors are opaque to the counter (fvcore, too, skips aten::lstm).
"""
from __future__ import annotations

from typing import Optional

import torch.nn as nn
from timm.layers import register_notrace_module
from torch import Tensor

from ..ops import SCAN_DIRECTIONS
from .base import TokenMixer, register_mixer

__all__ = ["LSTMMixer"]


@register_notrace_module  # shape arithmetic in forward: one leaf module under timm's fx tracing
@register_mixer("lstm")
class LSTMMixer(TokenMixer):
    """LSTMs over 1, 2 or 4 scan directions of a (batch, H, W, dim) map. See the module doc.

    Args:
        dim: input/output channels. hidden_size: LSTM width (default ``round(hidden_ratio * dim)``).
        scan_directions: 1 (rows), 2 (rows, both ways) or 4 (rows and columns, both ways).
        proj_drop: dropout after out_proj.
    """

    def __init__(self, dim: int, hidden_ratio: float = 0.25, hidden_size: Optional[int] = None,
                 scan_directions: int = 4, proj_drop: float = 0.0, device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if scan_directions not in SCAN_DIRECTIONS:
            raise ValueError(f"scan_directions must be one of {SCAN_DIRECTIONS}, got {scan_directions}")
        hidden = int(hidden_size) if hidden_size else max(1, round(hidden_ratio * dim))
        self.hidden_size, self.scan_directions = hidden, scan_directions
        self.in_proj = nn.Linear(dim, hidden, bias=False, **dd)
        bidirectional = scan_directions > 1
        # rows (and columns with 4 directions); the reversed directions are the bidirectional halves
        self.lstms = nn.ModuleList([nn.LSTM(hidden, hidden, batch_first=True, bidirectional=bidirectional, **dd)
                                    for _ in range(2 if scan_directions == 4 else 1)])
        self.out_norm = nn.LayerNorm(hidden, **dd)
        self.out_proj = nn.Linear(hidden, dim, bias=False, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def _run(self, lstm: nn.LSTM, seq: Tensor) -> Tensor:
        if seq.device.type == "meta":
            # no values on meta, and nn.LSTM would decompose into L steps there (minutes at 224): one matmul per
            # weight gives the same shapes and the same FLOPs (L * 4h * (in + h) per direction)
            out = 0
            for suffix in ("", "_reverse")[:1 + lstm.bidirectional]:
                w_ih, w_hh = getattr(lstm, f"weight_ih_l0{suffix}"), getattr(lstm, f"weight_hh_l0{suffix}")
                state = seq.new_empty(*seq.shape[:-1], w_hh.shape[1])
                out = out + (seq @ w_ih.T + state @ w_hh.T)[..., :self.hidden_size]
            return out
        out = lstm(seq)[0]  # (batch, L, hidden * (2 if bidirectional)); reverse outputs sit at their pixels
        return out[..., :self.hidden_size] + out[..., self.hidden_size:] if lstm.bidirectional else out

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, _ = x.shape
        u = self.in_proj(x)
        y = self._run(self.lstms[0], u.reshape(batch, height * width, -1)).view(batch, height, width, -1)
        if self.scan_directions == 4:
            cols = self._run(self.lstms[1], u.transpose(1, 2).reshape(batch, height * width, -1))
            y = y + cols.view(batch, width, height, -1).transpose(1, 2)
        return self.proj_drop(self.out_proj(self.out_norm(y)))
