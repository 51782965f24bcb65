"""``vmamba_zoo::lstm_fwd`` / ``lstm_bwd``: ``torch.lstm`` (what ``nn.LSTM`` runs: cuDNN, oneDNN or the
native loop) as custom ops, so ``torch.compile(fullgraph=True)`` and the meta device see one opaque op.

Dynamo does not trace into ``nn.LSTM`` (its fused kernels have no decomposition it can follow), and on the
meta device ``torch.lstm`` unrolls into one small op per step. Here the forward runs the very kernel
``nn.LSTM`` runs, without autograd; the backward op recomputes that forward under autograd and calls
``torch.autograd.grad`` on it, so values and gradients are those of ``nn.LSTM`` (the fused kernels keep
no graph a custom op could hand from forward to backward: the price is one more forward in training).
FLOPs: ``lstm_macs`` (the matmuls, tokens * every weight matrix's size), registered for both counters in
:mod:`vmamba_zoo.analysis.flops`.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

from .backends import autocast_dtype

__all__ = ["lstm_scan", "lstm_macs"]


def lstm_macs(input_shape: Sequence[int], weight_shapes: Sequence[Sequence[int]]) -> int:
    """Multiply-adds of an LSTM/GRU/RNN over ``input_shape`` (..., features): every token meets every weight
    matrix once (W_ih x_t and W_hh h_{t-1}: 4 gates * hidden * (in + hidden) per LSTM step and direction,
    stacked layers and projections included). Biases and elementwise gate math are not counted."""
    tokens = 1
    for size in input_shape[:-1]:
        tokens *= size
    return tokens * sum(s[0] * s[1] for s in weight_shapes if s is not None and len(s) == 2)


def _layout(weights: Sequence[Tensor], has_biases: bool, num_layers: int, bidirectional: bool):
    per_direction = len(weights) // (num_layers * (2 if bidirectional else 1))
    if per_direction not in ((4, 5) if has_biases else (2, 3)) or per_direction * num_layers * (
            2 if bidirectional else 1) != len(weights):
        raise ValueError(f"lstm_scan: {len(weights)} weights do not fit num_layers={num_layers}, "
                         f"bidirectional={bidirectional}, has_biases={has_biases}")
    w_hh = weights[1]
    return w_hh.shape[0] // 4, w_hh.shape[1]  # cell width, output width (the projection's, if any)


def _run(x: Tensor, weights: Sequence[Tensor], has_biases: bool, num_layers: int, bidirectional: bool,
         train: bool) -> Tensor:
    cell, out = _layout(weights, has_biases, num_layers, bidirectional)
    states = num_layers * (2 if bidirectional else 1)
    h0 = x.new_zeros(states, x.shape[0], out)
    c0 = x.new_zeros(states, x.shape[0], cell)
    low_precision = x.dtype in (torch.float16, torch.bfloat16) and x.device.type in ("cpu", "cuda")
    # inputs arrive already cast (lstm_scan casts under autocast); autocast on the kernel again only re-flattens
    # the cast weights for cuDNN (its autocast wrapper does that; without it cuDNN warns and compacts them)
    with torch.autocast(x.device.type, dtype=x.dtype, enabled=low_precision):
        return torch.lstm(x, (h0, c0), list(weights), has_biases, num_layers, 0.0, train, bidirectional, True)[0]


@torch.library.custom_op("vmamba_zoo::lstm_fwd", mutates_args=())
def _lstm_fwd(x: Tensor, weights: List[Tensor], has_biases: bool, num_layers: int, bidirectional: bool) -> Tensor:
    # contiguous as the fake promises (batch-first outputs of the kernels are time-major in memory)
    return _run(x, weights, has_biases, num_layers, bidirectional, train=False).contiguous()


@_lstm_fwd.register_fake
def _(x, weights, has_biases, num_layers, bidirectional):
    _, out = _layout(weights, has_biases, num_layers, bidirectional)
    return x.new_empty(*x.shape[:-1], out * (2 if bidirectional else 1))


@torch.library.custom_op("vmamba_zoo::lstm_bwd", mutates_args=())
def _lstm_bwd(dout: Tensor, x: Tensor, weights: List[Tensor], has_biases: bool, num_layers: int,
              bidirectional: bool) -> List[Tensor]:
    """[dx, *dweights]: the forward again, under autograd, differentiated."""
    # a custom op's kernel runs with the autograd dispatch keys excluded: let autograd record the recompute again
    with torch.enable_grad(), torch._C._SetExcludeDispatchKeyGuard(torch._C.DispatchKey.AutogradFunctionality, False):
        inputs = [x.detach().requires_grad_()] + [w.detach().requires_grad_() for w in weights]
        out = _run(inputs[0], inputs[1:], has_biases, num_layers, bidirectional, train=True)
        grads = torch.autograd.grad(out, inputs, dout, allow_unused=True)
    # cuDNN returns the weight gradients as views of one flat buffer; a custom op's outputs may not alias
    return [torch.zeros_like(t) if g is None else g.clone(memory_format=torch.contiguous_format)
            for g, t in zip(grads, inputs)]


@_lstm_bwd.register_fake
def _(dout, x, weights, has_biases, num_layers, bidirectional):
    return [torch.empty_like(t, memory_format=torch.contiguous_format) for t in [x, *weights]]


def _setup(ctx, inputs, output):
    x, weights, has_biases, num_layers, bidirectional = inputs
    ctx.save_for_backward(x, *weights)
    ctx.args = (has_biases, num_layers, bidirectional)


def _backward(ctx, dout):
    x, *weights = ctx.saved_tensors
    dx, *dweights = torch.ops.vmamba_zoo.lstm_bwd(dout.contiguous(), x, weights, *ctx.args)
    return dx, dweights, None, None, None


_lstm_fwd.register_autograd(_backward, setup_context=_setup)


def lstm_scan(x: Tensor, weights: Sequence[Tensor], has_biases: bool = True, num_layers: int = 1,
              bidirectional: bool = False) -> Tensor:
    """Outputs (batch, L, hidden * directions) of an LSTM over ``x`` (batch, L, features) from zero states, as
    ``nn.LSTM(batch_first=True)(x)[0]`` with the module's flat weights ``weights`` (w_ih, w_hh[, b_ih, b_hh]
    [, w_hr] per layer and direction, nn.LSTM's order)."""
    if x.dim() != 3:
        raise ValueError(f"lstm_scan: x must be (batch, L, features), got shape {tuple(x.shape)}")
    weights = list(weights)
    _layout(weights, has_biases, num_layers, bidirectional)
    dtype = autocast_dtype(x)
    if dtype is not None:
        # cast here, where autograd sees it: the backward recomputes from the op's inputs, in their dtype
        x, weights = x.to(dtype), [w.to(dtype) for w in weights]
    return torch.ops.vmamba_zoo.lstm_fwd(x, weights, has_biases, num_layers, bidirectional)
