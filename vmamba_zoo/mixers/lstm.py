"""LSTM token mixer: ``nn.LSTM`` (cuDNN on CUDA) along the scan directions of a 2D map, merged like SS2D.

Per direction k (the orders of ``vmamba_zoo.ops.cross_scan``: 1 = rows; 2 = rows both ways;
4 = rows, columns and both reversed), with u = in_proj(x) of ``hidden`` channels and its own weights:
    i, f, g, o = sigmoid/sigmoid/tanh/sigmoid(W u_t + R h_{t-1} + b)
    c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)           (PyTorch's nn.LSTM, h_{-1} = c_{-1} = 0)
    out = out_proj(LayerNorm(sum_k h^k on its pixels))
A direction and its reverse run as one bidirectional nn.LSTM (one cuDNN call, separate weights).
The LSTMs are :class:`ScanLSTM`: nn.LSTM's parameters, init, cuDNN weight layout and kernel (``torch.lstm``), in a
module torch.compile can trace (dynamo refuses nn.LSTM instances). Eager calls run the kernel under autograd as
nn.LSTM does; under ``torch.compile`` and on the meta device (where the kernel would unroll step by step) it runs
as the custom op of :mod:`vmamba_zoo.ops.lstm`, whose backward recomputes it.
FLOPs: projections natively; the LSTM's L * 4h * (in + h) MACs per direction by the formulas of
:mod:`vmamba_zoo.analysis.flops` (aten::lstm for fvcore; oneDNN / cuDNN kernels and the custom op for
FlopCounterMode); its elementwise gate math is not counted.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from timm.layers import register_notrace_module

from ..ops import SCAN_DIRECTIONS
from ..ops.lstm import lstm_scan
from .base import TokenMixer, register_mixer

__all__ = ["LSTMMixer", "ScanLSTM"]


class ScanLSTM(nn.RNNBase):
    """``nn.LSTM(input_size, hidden_size, batch_first=True, bidirectional=...)`` from zero states, returning only
    the outputs (batch, L, hidden * directions): the same parameters (names, init, cuDNN flat layout through
    RNNBase) and the same kernel. Not an ``nn.LSTM`` instance, which dynamo refuses to trace; under
    ``torch.compile`` and on the meta device the kernel runs as one custom op (:func:`lstm_scan`)."""

    def __init__(self, input_size: int, hidden_size: int, bidirectional: bool = False, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, batch_first=True, bidirectional=bidirectional,
                         device=device, dtype=dtype)

    def flat_weights(self) -> List[torch.Tensor]:  # nn.LSTM's order: w_ih, w_hh, b_ih, b_hh per direction
        return [getattr(self, name) for name in self._flat_weights_names]

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() or seq.device.type == "meta":
            return lstm_scan(seq, self.flat_weights(), bidirectional=self.bidirectional)
        self._update_flat_weights()  # as nn.LSTM.forward: re-flattens for cuDNN if a weight was replaced
        states = (2 if self.bidirectional else 1, seq.shape[0], self.hidden_size)
        zeros = seq.new_zeros(states)
        return torch.lstm(seq, (zeros, zeros), self._flat_weights, True, 1, 0.0, self.training,
                          self.bidirectional, True)[0]


@register_notrace_module  # shape arithmetic in forward: one leaf module under timm's fx tracing
@register_mixer("lstm")
class LSTMMixer(TokenMixer):
    """LSTMs over 1, 2 or 4 scan directions of a 2D map. See the module doc.

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
        self.lstms = nn.ModuleList([ScanLSTM(hidden, hidden, bidirectional=bidirectional, **dd)
                                    for _ in range(2 if scan_directions == 4 else 1)])
        self.out_norm = nn.LayerNorm(hidden, **dd)
        self.out_proj = nn.Linear(hidden, dim, bias=False, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def _run(self, lstm: ScanLSTM, seq: torch.Tensor) -> torch.Tensor:
        out = lstm(seq)  # (batch, L, hidden * (2 if bidirectional)); the reverse outputs sit at their pixels
        return out[..., :self.hidden_size] + out[..., self.hidden_size:] if lstm.bidirectional else out

    def forward_tokens(self, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        (batch, length, _), (height, width) = x.shape, size
        u = self.in_proj(x)
        y = self._run(self.lstms[0], u)
        if self.scan_directions == 4:  # columns: the map transposed, and the outputs back onto their pixels
            cols = self._run(self.lstms[1], u.view(batch, height, width, -1).transpose(1, 2).reshape(batch, length, -1))
            y = y + cols.view(batch, width, height, -1).transpose(1, 2).reshape(batch, length, -1)
        return self.proj_drop(self.out_proj(self.out_norm(y)))
