"""FLOPs (MACs) and params: fvcore vs torch FlopCounterMode, the paper's figures, the scan formula, recurrent
layers, every token mixer."""
import warnings

import pytest
import timm
import torch

import vmamba_zoo  # noqa: F401
from vmamba_zoo.analysis.flops import (count_macs_fvcore, count_macs_torch, count_params, create_model_for_size,
                                       model_complexity, selective_scan_macs)
from vmamba_zoo.mixers import SS2D

# paper (arXiv 2401.10166) at 224x224: GMACs, exact parameter counts of the original
PAPER = {"vmamba_tiny": (4.9, 30_249_064), "vmamba_small": (8.7, 50_147_752), "vmamba_base": (15.4, 88_557_800),
         "vmamba_vanilla_tiny": (5.6, 22_893_448)}


@pytest.mark.parametrize("name,size,tol", [("test_vmamba", 64, 5e-3), ("test_vmamba", 128, 5e-3),
                                           ("vmamba_tiny", 224, 1e-4)])
def test_fvcore_agrees_with_flop_counter_mode(name, size, tol):
    model = timm.create_model(name).eval()
    x = torch.randn(1, 3, size, size)
    fv, fv_ops = count_macs_fvcore(model, x, by_operator=True)
    tc, tc_ops = count_macs_torch(model, x, by_operator=True)
    assert fv_ops["ss2d_scan_fwd"] == tc_ops["vmamba_zoo.ss2d_scan_fwd"] > 0
    assert fv_ops["layer_norm"] == tc_ops["aten.native_layer_norm"]
    assert abs(fv - tc) / fv < tol, (fv, tc, fv_ops, tc_ops)
    if name == "vmamba_tiny":  # dt_rank >= 6: no size-1 einsum lowered to mul, the two agree exactly
        assert fv == tc
        assert abs(fv / 1e9 - 4.9) / 4.9 < 0.02  # the paper's figure, by fvcore as the authors counted


def test_meta_device_counts_equal_real():
    x = torch.randn(1, 3, 96, 96)
    real = count_macs_torch(timm.create_model("test_vmamba"), x)
    meta = model_complexity("test_vmamba", 96, method="torch")
    assert meta["macs"] == real and meta["params"] == 511_784


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_numbers_flop_counter_mode(name):
    gmacs, params = PAPER[name]
    result = model_complexity(name, 224, method="torch")  # meta device: no compute
    assert result["params"] == params
    assert abs(result["macs"] / 1e9 - gmacs) / gmacs < 0.02, result


@pytest.mark.parametrize("method", ["fvcore", "torch"])
@pytest.mark.parametrize("z_gate,d_state,ratio", [(False, 1, 1.0), (True, 16, 2.0)])
def test_single_ss2d_scan_counted_by_hand_formula(method, z_gate, d_state, ratio):
    dim, h, w, batch = 32, 12, 10, 2
    mixer = SS2D(dim, d_state=d_state, ssm_ratio=ratio, z_gate=z_gate).eval()
    x = torch.randn(batch, h, w, dim)
    count = count_macs_fvcore if method == "fvcore" else count_macs_torch
    total, ops = count(mixer, x, by_operator=True)
    d_inner, k, length = int(ratio * dim), 4, h * w
    scan = 9 * batch * length * (k * d_inner) * d_state + batch * (k * d_inner) * length
    assert scan == selective_scan_macs(batch, k * d_inner, length, d_state)
    r = mixer.dt_rank
    key = "ss2d_scan_fwd" if method == "fvcore" else "vmamba_zoo.ss2d_scan_fwd"
    assert ops[key] == scan + batch * k * length * d_inner * r  # the fused op includes the dt projection
    expected = (batch * length * dim * d_inner * (2 if z_gate else 1)        # in_proj
                + batch * length * d_inner * 9                               # depthwise 3x3 conv
                + batch * k * length * d_inner * (r + 2 * d_state)           # x_proj
                + batch * k * length * d_inner * r                           # dt_proj
                + scan
                + 5 * batch * length * d_inner                               # out_norm (fvcore's 5/elem)
                + batch * length * d_inner * dim)                            # out_proj
    assert total == expected, (total, expected, ops)


def test_timm_models_at_other_resolutions():
    # Swin / DeiT need img_size at creation; attention (sdpa) is counted, so DeiT grows quadratically
    small = model_complexity("deit_tiny_patch16_224", 224, method="torch")["macs"]
    big = model_complexity("deit_tiny_patch16_224", 448, method="torch")["macs"]
    assert big / small > 4.2
    ours = [model_complexity("test_vmamba", s, method="torch")["macs"] for s in (224, 448)]
    assert 3.9 < ours[1] / ours[0] < 4.1  # linear in the number of pixels
    fv = model_complexity("deit_tiny_patch16_224", 224, method="fvcore")["macs"]
    assert abs(fv - small) / small < 5e-3


def test_unknown_model_is_clear_error():
    with pytest.raises(ValueError, match="unknown model 'no_such_model'"):
        create_model_for_size("no_such_model", 224)


def test_count_params():
    assert count_params(timm.create_model("test_vmamba")) == 511_784


# ------------------------------------------------------------------------------------ recurrent layers
def _lstm_by_hand(batch, length, inputs, hidden, layers, directions):
    """4 gates * hidden * (in + hidden) MACs per step, direction and layer (matmuls only, no gate math)."""
    total, width = 0, inputs
    for _ in range(layers):
        total += directions * batch * length * 4 * hidden * (width + hidden)
        width = directions * hidden
    return total


class _LSTMOp(torch.nn.Module):
    """A 2-layer bidirectional LSTM through the vmamba_zoo::lstm_fwd op."""

    def __init__(self, weights):
        super().__init__()
        self.weights = torch.nn.ParameterList(weights)

    def forward(self, x):
        from vmamba_zoo.ops.lstm import lstm_scan
        return lstm_scan(x, list(self.weights), num_layers=2, bidirectional=True)


def test_lstm_counted_by_hand_formula_both_ways():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 3, num_layers=2, batch_first=True, bidirectional=True).eval()
    x = torch.randn(2, 7, 5)
    expected = _lstm_by_hand(2, 7, 5, 3, layers=2, directions=2)
    assert expected == 2 * 2 * 7 * 4 * 3 * (5 + 3) + 2 * 2 * 7 * 4 * 3 * (6 + 3) == 5712
    assert count_macs_fvcore(lstm, x) == expected                  # aten::lstm handle
    total, ops = count_macs_torch(lstm, x, by_operator=True)       # oneDNN kernel on CPU
    assert total == expected and ops == {"aten.mkldnn_rnn_layer": expected}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # flags() also sets oneDNN's TF32 switch, warning without XPU
        with torch.backends.mkldnn.flags(enabled=False):  # unrolled into matmuls: counted natively
            assert count_macs_torch(lstm, x) == expected
    op = _LSTMOp(list(lstm._flat_weights))                         # the custom op (compile / meta path)
    assert count_macs_fvcore(op, x) == count_macs_torch(op, x) == expected
    with torch.device("meta"):
        meta = _LSTMOp([torch.empty_like(w) for w in lstm._flat_weights])
    assert count_macs_torch(meta, x.to("meta")) == expected
    gru = torch.nn.GRU(5, 3, batch_first=True).eval()              # the same rule: 3 gates
    assert count_macs_fvcore(gru, x) == count_macs_torch(gru, x) == 2 * 7 * 3 * 3 * (5 + 3)


def test_lstm_mixer_counted_by_hand_formula_both_ways():
    from vmamba_zoo.mixers import create_mixer
    torch.manual_seed(0)
    dim, hidden, batch, h, w = 16, 8, 2, 6, 5
    mixer = create_mixer("lstm", dim, hidden_size=hidden, scan_directions=4).eval()
    length = h * w
    expected = (batch * length * dim * hidden                                   # in_proj
                + _lstm_by_hand(batch, length, hidden, hidden, 1, 2) * 2        # rows and columns, both ways
                + 5 * batch * length * hidden                                   # out_norm
                + batch * length * hidden * dim)                                # out_proj
    x = torch.randn(batch, h, w, dim)
    assert count_macs_fvcore(mixer, x) == count_macs_torch(mixer, x) == expected
    with torch.device("meta"):
        meta = create_mixer("lstm", dim, hidden_size=hidden, scan_directions=4)
    assert count_macs_torch(meta, x.to("meta")) == expected


MIXER_CASES = [("ss2d", dict()), ("mamba", dict(scan_directions=1)), ("mamba", dict(scan_directions=4, d_state=4)),
               ("lstm", dict(scan_directions=1)), ("lstm", dict(scan_directions=2)), ("lstm", dict(scan_directions=4)),
               ("xlstm", dict(scan_directions=1)), ("xlstm", dict(scan_directions=4, chunk_size=8)),
               ("xlstm", dict(cell="slstm", scan_directions=1)), ("xlstm", dict(cell="slstm", scan_directions=2)),
               ("attention", dict()), ("attention", dict(window_size=4))]


@pytest.mark.parametrize("name, kwargs", MIXER_CASES, ids=[f"{n}-{kw}" for n, kw in MIXER_CASES])
def test_counters_agree_on_every_mixer(name, kwargs):
    """fvcore (jit trace), FlopCounterMode on real CPU tensors and on the meta device: one number per mixer.
    dim 32: dt_rank 2 (with dt_rank 1 torch lowers the delta einsum to a multiply FlopCounterMode skips)."""
    from vmamba_zoo.mixers import create_mixer
    torch.manual_seed(0)
    mixer = create_mixer(name, 32, **kwargs).eval()
    x = torch.randn(2, 7, 6, 32)
    fv, fv_ops = count_macs_fvcore(mixer, x, by_operator=True)
    tc, tc_ops = count_macs_torch(mixer, x, by_operator=True)
    with torch.device("meta"):
        meta = create_mixer(name, 32, **kwargs)
    assert fv == tc == count_macs_torch(meta, x.to("meta")) > 0, (fv_ops, tc_ops)


@pytest.mark.parametrize("name", ["vmamba_tiny_mamba", "vmamba_tiny_lstm", "vmamba_tiny_xlstm", "vmamba_tiny_attn"])
def test_counters_agree_on_mixer_variants(name):
    model = timm.create_model(name, dims=32, depths=(1, 1, 2, 1)).eval()  # the variant's mixers, small widths
    x = torch.randn(1, 3, 64, 64)
    fv = count_macs_fvcore(model, x)
    assert fv == count_macs_torch(model, x) == model_complexity(name, 64, method="torch", dims=32,
                                                               depths=(1, 1, 2, 1))["macs"]
