"""FLOPs (MACs) and params: fvcore vs torch FlopCounterMode, the paper's figures, the scan formula."""
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
