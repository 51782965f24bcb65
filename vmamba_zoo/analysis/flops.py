"""FLOPs (multiply-accumulates, the papers' convention) and parameter counts, two independent ways.

Convention (VMamba paper, as fvcore counts): one multiply-add = 1 "FLOP" (we call it a MAC);
matmuls, convolutions, einsums and LayerNorm (5 per element with affine, fvcore's estimate) count;
elementwise activations / additions do not; the head is included. A selective scan call counts
``9*B*L*D*N + B*D*L`` (``+ B*D*L`` more with a z input) where ``D`` is all of its channels (K*d_inner),
exactly as the VMamba authors' ``flops_selective_scan_fn``; cross_scan / cross_merge count 0.
The sLSTM op counts its recurrent matmul (batch*K*L*heads*4d*d, :func:`vmamba_zoo.ops.slstm.slstm_macs`).
Recurrent layers (LSTM, GRU, RNN) count their matmuls only, ``tokens * (size of every weight matrix)``
(:func:`vmamba_zoo.ops.lstm.lstm_macs`: 4*hidden*(in + hidden) per LSTM step, direction and layer); their
biases and elementwise gate math are not counted, as for every other layer. Both counters see them:
fvcore through handles for ``aten::lstm``/``gru``/``rnn_*`` (it has none) and the ``vmamba_zoo::lstm_fwd`` op,
FlopCounterMode through formulas for the fused kernels it would otherwise count as 0 (``mkldnn_rnn_layer``
on CPU, ``_cudnn_rnn`` on CUDA) and for the op (the meta device and torch.compile run it); where torch
unrolls the LSTM into matmuls instead (float64, oneDNN off) it counts those natively, to the same number.

* :func:`count_macs_fvcore`: fvcore ``FlopCountAnalysis`` (jit trace, needs real tensors) with handles
  for our custom ops and for ``aten::scaled_dot_product_attention`` (fvcore has none, so without it
  timm's Swin / DeiT attention would be left out).
* :func:`count_macs_torch`: ``torch.utils.flop_counter.FlopCounterMode`` (works on the meta device).
  It reports FLOPs = 2 * MACs for matmul/conv/einsum(bmm)/sdpa; we divide by 2. It does not count
  LayerNorm at all, fvcore does (5*numel), so we add a LayerNorm formula in fvcore's convention
  (``_layer_norm_flop``, given as 2x because the whole total is halved) - with that, the two agree on
  VMamba exactly up to rounding. Remaining known differences for other timm models: fvcore also counts
  batch/group/instance norm, upsampling and adaptive_avg_pool2d, FlopCounterMode does not. And torch
  lowers an einsum whose contracted index has size 1 to a broadcast multiply, which FlopCounterMode
  does not count: the dt projection of models with dt_rank 1 (dims 16, i.e. test_vmamba's first
  stage) is missing there (0.3% of test_vmamba; released models have dt_rank >= 6 and agree to 1e-5).
"""
from __future__ import annotations

import inspect
import math
import warnings
from collections import Counter
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from ..ops.lstm import lstm_macs
from ..ops.slstm import slstm_macs

__all__ = ["selective_scan_macs", "count_params", "count_macs_fvcore", "count_macs_torch", "create_model_for_size",
           "model_complexity", "complexity_table", "plot_sweep", "FVCORE_OP_NAMES"]

SCAN_OP = "vmamba_zoo::selective_scan_fwd"
SCAN_STATES_OP = "vmamba_zoo::selective_scan_fwd_states"  # the same scan, run when a gradient is wanted
SS2D_OP = "vmamba_zoo::ss2d_scan_fwd"
FVCORE_OP_NAMES = {"selective_scan": SCAN_OP, "ss2d_scan": SS2D_OP, "cross_scan": "vmamba_zoo::cross_scan",
                   "cross_merge": "vmamba_zoo::cross_merge"}


def selective_scan_macs(batch: int, channels: int, length: int, d_state: int, with_D: bool = True,
                        with_Z: bool = False) -> int:
    """MACs of one selective scan as the VMamba authors count it (``channels`` = all K*d_inner channels)."""
    macs = 9 * batch * length * channels * d_state
    if with_D:
        macs += batch * channels * length
    if with_Z:
        macs += batch * channels * length
    return macs


def ss2d_scan_macs(batch: int, directions: int, channels: int, length: int, d_state: int, dt_rank: int) -> int:
    """MACs of the fused SS2D scan op: the delta projection (an einsum in the original) + the selective scan."""
    return batch * directions * channels * dt_rank * length + selective_scan_macs(
        batch, directions * channels, length, d_state, with_D=True)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------- fvcore
def _fvcore_shape(value) -> Optional[List[int]]:
    from fvcore.nn.jit_handles import get_shape
    return get_shape(value)


def _fvcore_scan(inputs: List[Any], outputs: List[Any]) -> int:
    # schema: u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output, backend
    batch, channels, length = _fvcore_shape(inputs[0])
    d_state = _fvcore_shape(inputs[2])[1]
    return selective_scan_macs(batch, channels, length, d_state, with_D=_fvcore_shape(inputs[5]) is not None,
                               with_Z=_fvcore_shape(inputs[6]) is not None)


def _fvcore_ss2d(inputs: List[Any], outputs: List[Any]) -> int:
    # schema: x, dts (B, K, R, L), dt_weight (K, D, R), dt_bias, A (K*D, N), Bs, Cs, Ds, directions, ...
    batch, directions, dt_rank, length = _fvcore_shape(inputs[1])
    return ss2d_scan_macs(batch, directions, _fvcore_shape(inputs[2])[1], length, _fvcore_shape(inputs[4])[1], dt_rank)


def _fvcore_layer_norm(inputs: List[Any], outputs: List[Any]) -> int:
    # vmamba_zoo::layer_norm_fwd(x, weight, bias, eps, ...): fvcore's own LayerNorm estimate, 5 (4 without weight)
    return math.prod(_fvcore_shape(inputs[0])) * (5 if _fvcore_shape(inputs[1]) is not None else 4)


def _fvcore_zero(inputs, outputs) -> int:
    return 0


def _fvcore_sdpa(inputs: List[Any], outputs: List[Any]) -> int:
    q, k, v = (_fvcore_shape(t) for t in inputs[:3])
    # q (..., Lq, E), k (..., Lk, E), v (..., Lk, Ev): QK^T and AV
    return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def _fvcore_einsum(inputs: List[Any], outputs: List[Any]) -> int:
    # fvcore's own handle parses numpy's einsum_path printout, which has 4 significant digits;
    # a two-operand einsum without "..." costs exactly the product of all its index sizes
    from fvcore.nn.jit_handles import einsum_flop_jit
    equation = inputs[0].toIValue().replace(" ", "")
    shapes = [_fvcore_shape(v) for v in inputs[1].node().inputs()]
    lhs = equation.split("->")[0].split(",")
    if len(lhs) != 2 or "." in equation or any(s is None or len(s) != len(t) for s, t in zip(shapes, lhs)):
        return einsum_flop_jit(inputs, outputs)
    sizes = {}
    for term, shape in zip(lhs, shapes):
        sizes.update(zip(term, shape))
    return math.prod(sizes.values())


def _fvcore_rnn(inputs: List[Any], outputs: List[Any]) -> int:
    # aten::lstm/gru/rnn_* (.input and .data overloads) and vmamba_zoo::lstm_fwd: the weights are the last
    # tensor-list argument (lstm's hidden states come before them as a list too)
    params = [v for v in inputs if str(v.type()) in ("List[Tensor]", "Tensor[]")][-1]
    return lstm_macs(_fvcore_shape(inputs[0]), [_fvcore_shape(w) for w in params.node().inputs()])


def _fvcore_slstm(inputs: List[Any], outputs: List[Any]) -> int:
    return slstm_macs(_fvcore_shape(inputs[0]))  # wx (batch, K, L, heads, 4, d): the recurrent matmul


FVCORE_HANDLES = {
    "aten::einsum": _fvcore_einsum,
    SCAN_OP: _fvcore_scan,
    SCAN_STATES_OP: _fvcore_scan,
    SS2D_OP: _fvcore_ss2d,
    "vmamba_zoo::cross_scan": _fvcore_zero,
    "vmamba_zoo::cross_merge": _fvcore_zero,
    "aten::scaled_dot_product_attention": _fvcore_sdpa,
    **{f"aten::{name}": _fvcore_rnn for name in ("lstm", "gru", "rnn_tanh", "rnn_relu")},
    "vmamba_zoo::lstm_fwd": _fvcore_rnn,
    "vmamba_zoo::slstm_fwd": _fvcore_slstm,
    "vmamba_zoo::layer_norm_fwd": _fvcore_layer_norm,
}


def count_macs_fvcore(model: nn.Module, inputs: Union[Tensor, Tuple[Tensor, ...]], by_operator: bool = False
                      ) -> Union[int, Tuple[int, Dict[str, int]]]:
    """Total MACs of ``model(*inputs)`` by fvcore with handles for our ops. Runs a jit trace (real tensors)."""
    from fvcore.nn import FlopCountAnalysis
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jit tracer warnings about python shape checks
            analysis = FlopCountAnalysis(model, inputs).set_op_handle(**FVCORE_HANDLES)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            total = int(round(analysis.total()))
            ops = {k: int(round(v)) for k, v in analysis.by_operator().items()}
    finally:
        model.train(was_training)
    return (total, ops) if by_operator else total


# ------------------------------------------------------------------------------------- FlopCounterMode
def _ensure_torch_scan_formula() -> None:
    """Register the FLOP formulas of our custom ops with torch's flop counter (once; FLOPs = 2 * MACs)."""
    from torch.utils.flop_counter import flop_registry, register_flop_formula
    target = torch.ops.vmamba_zoo.selective_scan_fwd
    if target in flop_registry:
        return

    @register_flop_formula(torch.ops.vmamba_zoo.lstm_fwd)
    def _lstm_flop(x, weights, *args, out_shape=None, **kwargs) -> int:
        return 2 * lstm_macs(x, weights)

    @register_flop_formula(torch.ops.vmamba_zoo.slstm_fwd)
    def _slstm_flop(wx, *args, out_shape=None, **kwargs) -> int:
        return 2 * slstm_macs(wx)

    @register_flop_formula(torch.ops.vmamba_zoo.slstm_bwd)
    def _slstm_bwd_flop(dh, wx, *args, out_shape=None, **kwargs) -> int:
        return 3 * 2 * slstm_macs(wx)  # pre-activations again, the reverse recurrence's R^T dpre, and dR

    @register_flop_formula(torch.ops.vmamba_zoo.lstm_bwd)
    def _lstm_bwd_flop(dout, x, weights, *args, out_shape=None, **kwargs) -> int:
        return 3 * 2 * lstm_macs(x, weights)  # the recomputed forward + a backward of twice its matmuls

    @register_flop_formula(torch.ops.vmamba_zoo.ss2d_scan_fwd)
    def _ss2d_flop(x, dts, dt_weight, dt_bias, A, *args, out_shape=None, **kwargs) -> int:
        batch, directions, dt_rank, length = dts
        return 2 * ss2d_scan_macs(batch, directions, dt_weight[1], length, A[1], dt_rank)

    @register_flop_formula([target, torch.ops.vmamba_zoo.selective_scan_fwd_states])
    def _scan_flop(u, delta, A, B, C, D=None, z=None, delta_bias=None, *args, out_shape=None, **kwargs) -> int:
        batch, channels, length = u
        return 2 * selective_scan_macs(batch, channels, length, A[1], with_D=D is not None, with_Z=z is not None)


def _layer_norm_flop(input_shape, normalized_shape, weight=None, bias=None, *args, out_shape=None, **kwargs) -> int:
    # fvcore's norm_flop_counter: 5 per element with an affine weight, 4 without; doubled (see module doc)
    return 2 * math.prod(input_shape) * (5 if weight is not None else 4)


def _our_layer_norm_flop(input_shape, weight=None, *args, out_shape=None, **kwargs) -> int:
    return _layer_norm_flop(input_shape, input_shape[-1:], weight)


def _mkldnn_rnn_flop(input_shape, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    # oneDNN's LSTM on CPU, one call per layer and direction: (input, w_ih, w_hh, b_ih, b_hh, hx, cx, ...)
    return 2 * lstm_macs(input_shape, [w_ih, w_hh])


def _cudnn_rnn_flop(input_shape, weights, *args, out_shape=None, **kwargs) -> int:
    # cuDNN's RNN/GRU/LSTM on CUDA, all layers and directions: (input, weight list, weight_stride0, ...)
    return 2 * lstm_macs(input_shape, weights)


def _sdpa_cpu_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count  # the formula of the CUDA kernels
    return sdpa_flop_count(query, key, value)


def count_macs_torch(model: nn.Module, inputs: Union[Tensor, Tuple[Tensor, ...]], by_operator: bool = False
                     ) -> Union[int, Tuple[int, Dict[str, int]]]:
    """Total MACs of ``model(*inputs)`` by ``FlopCounterMode`` (FLOPs / 2), LayerNorm counted as fvcore does.

    Works with meta tensors (model and inputs on ``device='meta'``), so full-size models cost nothing.
    """
    from torch.utils.flop_counter import FlopCounterMode
    _ensure_torch_scan_formula()
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    # FlopCounterMode shape-wraps these; the fused RNN kernels have no formula of their own (counted 0)
    mapping = {torch.ops.aten.native_layer_norm: _layer_norm_flop, torch.ops.aten.mkldnn_rnn_layer: _mkldnn_rnn_flop,
               torch.ops.vmamba_zoo.layer_norm_fwd: _our_layer_norm_flop,
               torch.ops.aten._cudnn_rnn: _cudnn_rnn_flop,
               # the CPU flash kernel of scaled_dot_product_attention (the CUDA ones have formulas)
               torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop}
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False, custom_mapping=mapping)
        with torch.no_grad(), counter:
            model(*inputs)
    finally:
        model.train(was_training)
    total = counter.get_total_flops()
    if by_operator:
        ops = {str(k): v // 2 for k, v in counter.get_flop_counts().get("Global", {}).items()}
        return total // 2, ops
    return total // 2


# ------------------------------------------------------------------------------------------- models
def create_model_for_size(name: str, img_size: Optional[int] = None, device: Union[str, torch.device] = "cpu",
                          **kwargs) -> nn.Module:
    """``timm.create_model(name)`` ready for ``img_size`` inputs: models with a fixed input size (Swin,
    DeiT, ...) get ``img_size=``; resolution-free ones (ours, convnets) are created as they are."""
    import timm
    import vmamba_zoo  # noqa: F401  registers our models

    if not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}: not a registered timm model "
                         f"(ours: {', '.join(timm.list_models('*vmamba*'))})")
    if img_size is not None and img_size != _default_size(name):
        try:
            with torch.device(device):
                return timm.create_model(name, img_size=img_size, **kwargs)
        except TypeError:
            pass  # the model takes no img_size: it works at any resolution
    with torch.device(device):
        return timm.create_model(name, **kwargs)


def _default_size(name: str) -> Optional[int]:
    import timm
    try:
        return timm.get_pretrained_cfg(name).input_size[-1]
    except Exception:
        return None


def model_complexity(name: str, img_size: int = 224, method: str = "fvcore", batch: int = 1,
                     model: Optional[nn.Module] = None, **kwargs) -> Dict[str, Any]:
    """``{'model', 'img_size', 'params', 'macs'}`` for a registered timm model at ``img_size`` x ``img_size``.

    method "fvcore" traces on CPU with real tensors; "torch" uses FlopCounterMode on the meta device.
    """
    if method not in ("fvcore", "torch"):
        raise ValueError(f"method must be 'fvcore' or 'torch', got {method!r}")
    device = "cpu" if method == "fvcore" else "meta"
    if model is None:
        model = create_model_for_size(name, img_size, device=device, **kwargs)
    x = torch.randn(batch, 3, img_size, img_size, device=next(iter(model.parameters())).device)
    count = count_macs_fvcore if method == "fvcore" else count_macs_torch
    return {"model": name, "img_size": img_size, "params": count_params(model), "macs": count(model, x)}


def complexity_table(names: Sequence[str], sizes: Sequence[int], method: str = "fvcore"
                     ) -> Tuple[str, Dict[str, Dict[int, Dict[str, Any]]]]:
    """Table text (model, params, GMACs at each size) and the raw results {name: {size: result}}."""
    results: Dict[str, Dict[int, Dict[str, Any]]] = {}
    for name in names:
        results[name] = {size: model_complexity(name, size, method=method) for size in sizes}
    header = ["model", "params (M)"] + [f"GMACs@{s}" for s in sizes]
    rows = []
    for name in names:
        first = results[name][sizes[0]]
        rows.append([name, f"{first['params'] / 1e6:.2f}"] + [f"{results[name][s]['macs'] / 1e9:.2f}" for s in sizes])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
    return "\n".join(lines), results


def plot_sweep(results: Dict[str, Dict[int, Dict[str, Any]]], path: str, key: str = "macs", scale: float = 1e9,
               ylabel: str = "GMACs", title: str = "Complexity vs input size") -> str:
    """PNG of ``key`` vs input size (one line per model). Returns the path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, per_size in results.items():
        sizes = sorted(s for s in per_size if per_size[s].get(key) is not None)
        ax.plot(sizes, [per_size[s][key] / scale for s in sizes], marker="o", label=name)
    ax.set_xlabel("input size (pixels per side)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
