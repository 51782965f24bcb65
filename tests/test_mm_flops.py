"""FLOPs of whole detectors / segmentors from mm configs (vmamba_zoo.analysis.mm_flops, tools/flops.py --config).

Quick tests use configs inheriting the real VMamba-T ones with the 'test' backbone and narrow heads, on small
non-square inputs; the RoI heads are checked against hand formulas, the backbone against the plain fvcore
count of the same module. One slow test reproduces the paper's Mask R-CNN VMamba-T figure (271G).
"""
from __future__ import annotations

import os.path as osp
import sys

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")
pytest.importorskip("fvcore")

import torch  # noqa: E402
from _tooling import load_tool  # noqa: E402

from vmamba_zoo.analysis.flops import count_macs_fvcore  # noqa: E402
from vmamba_zoo.analysis.mm_flops import (build_mm_model, config_task, count_mm_macs, mm_complexity,  # noqa: E402
                                          mm_complexity_table)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DET_T = osp.join(ROOT, "configs", "mmdet", "mask-rcnn_vmamba-t_fpn_1x_coco.py")
SEG_T = osp.join(ROOT, "configs", "mmseg", "upernet_vmamba-t_8xb2-160k_ade20k-512x512.py")
C, FC, MAX_PROPOSALS = 32, 64, 50  # narrow heads of the test configs, RPN proposals kept


@pytest.fixture(scope="module")
def det_cfg(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "det_flops_cfg.py"
    path.write_text(f"""
_base_ = [{DET_T!r}]
model = dict(
    backbone=dict(size='test', init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels={C}),
    rpn_head=dict(in_channels={C}, feat_channels={C}),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels={C}),
        bbox_head=dict(in_channels={C}, fc_out_channels={FC}),
        mask_roi_extractor=dict(out_channels={C}),
        mask_head=dict(in_channels={C}, conv_out_channels={C})),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img={MAX_PROPOSALS})))
""")
    return str(path)


@pytest.fixture(scope="module")
def seg_cfg(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "seg_flops_cfg.py"
    path.write_text(f"""
_base_ = [{SEG_T!r}]
model = dict(
    backbone=dict(size='test', init_cfg=None),
    decode_head=dict(in_channels=[16, 32, 64, 128], channels=32),
    auxiliary_head=dict(in_channels=64, channels=16))
""")
    return str(path)


@pytest.fixture(scope="module")
def det_model(det_cfg):
    return build_mm_model(det_cfg)


@pytest.fixture(scope="module")
def seg_model(seg_cfg):
    return build_mm_model(seg_cfg)


def _depth1_sum(modules):
    return sum(v for k, v in modules.items() if "." not in k)


def test_detector_counted_whole_and_by_hand(det_model):
    model, task = det_model
    shape = (96, 128)
    r = count_mm_macs(model, task, shape, depth=2)
    mods, rois = r["modules"], r["rois"]
    assert task == "mmdet" and r["shape"] == shape
    assert list(m for m in mods if "." not in m) == ["backbone", "neck", "rpn_head", "roi_head", "(other)"]
    assert _depth1_sum(mods) == r["macs"] and mods["(other)"] == 0  # nothing outside the four parts
    assert mods["roi_head"] == mods["roi_head.bbox_head"] + mods["roi_head.mask_head"]  # RoIAlign counts 0
    # the backbone's share is what the plain fvcore count (classifier path) gives for the same module
    assert mods["backbone"] == count_macs_fvcore(model.backbone, torch.randn(1, 3, *shape))
    # RoI heads by hand: Shared2FC bbox head on every proposal, FCN mask head (4 convs, deconv, logits) on <= 100
    assert 0 < rois["bbox_head"] <= MAX_PROPOSALS and rois["mask_head"] == min(rois["bbox_head"], 100)
    per_box = C * 7 * 7 * FC + FC * FC + FC * 81 + FC * 80 * 4
    per_mask = 4 * C * C * 9 * 14 * 14 + C * C * 2 * 2 * 14 * 14 + C * 80 * 28 * 28
    assert mods["roi_head.bbox_head"] == rois["bbox_head"] * per_box
    assert mods["roi_head.mask_head"] == rois["mask_head"] * per_mask
    assert r["params"] == sum(p.numel() for p in model.parameters())
    assert set(r["module_params"]) == {"backbone", "neck", "rpn_head", "roi_head"}
    assert {"prim::PythonOp.RoIAlignFunction", "prim::PythonOp.NMSop"} <= set(r["uncounted_ops"])
    assert "roi_head.bbox_head" in mm_complexity_table([r])


def test_segmentor_counts_decode_head_not_auxiliary(seg_model):
    model, task = seg_model
    shape = (64, 96)
    r = count_mm_macs(model, task, shape)
    mods = r["modules"]
    assert task == "mmseg" and r["rois"] == {}
    assert list(mods) == ["backbone", "decode_head", "(other)"]  # auxiliary head: training only, not run
    assert _depth1_sum(mods) == r["macs"] and mods["(other)"] == 0
    assert mods["backbone"] == count_macs_fvcore(model.backbone, torch.randn(1, 3, *shape))
    assert mods["decode_head"] > 0
    assert "auxiliary_head" in r["module_params"]  # its parameters are part of the model all the same


def test_counts_scale_with_pixels_and_one_side_is_square(seg_model):
    model, task = seg_model
    small = count_mm_macs(model, task, (64,))
    wide = count_mm_macs(model, task, (64, 128))  # every part is per pixel: twice the pixels, twice the MACs
    assert small["shape"] == (64, 64)
    assert wide["modules"]["backbone"] == 2 * small["modules"]["backbone"]
    assert abs(wide["macs"] / small["macs"] - 2) < 0.02


def test_cli_config_path(det_cfg, seg_cfg, capsys):
    main = load_tool("flops")
    assert main(["--config", det_cfg, seg_cfg, "--shape", "96", "128", "--depth", "2"]) == 0
    out = capsys.readouterr().out
    det = mm_complexity(det_cfg, (96, 128))
    assert f"total  {det['macs'] / 1e9:.2f} GMACs" in out
    for text in ("(96x128, mmdet)", "(96x128, mmseg)", "roi_head.mask_head", "decode_head", "RoIs: bbox_head"):
        assert text in out, text
    assert main(["--config", det_cfg, "--shape", "1", "2", "3"]) == 2
    assert main(["--config", det_cfg, "--shape", "16"]) == 2  # below the backbone's 32x32 minimum
    assert "sides >= 32" in capsys.readouterr().err


def test_missing_dependencies_name_the_pip_command(monkeypatch, det_cfg):
    from mmengine.config import Config
    monkeypatch.setitem(sys.modules, "mmseg", None)  # import mmseg now raises ImportError
    with pytest.raises(ImportError, match=r"needs mmseg.*pip install .*mmsegmentation"):
        build_mm_model(Config(dict(default_scope="mmseg", model=dict(type="EncoderDecoder"))))
    monkeypatch.setitem(sys.modules, "fvcore", None)
    with pytest.raises(ImportError, match=r"needs fvcore.*pip install fvcore"):
        mm_complexity(det_cfg)
    assert load_tool("flops")(["--config", det_cfg]) == 2


def test_config_task():
    from mmengine.config import Config
    assert config_task(Config(dict(model=dict(type="X", roi_head=dict())))) == "mmdet"
    assert config_task(Config(dict(model=dict(type="X", decode_head=dict())))) == "mmseg"
    with pytest.raises(ValueError, match="mmdet or mmseg"):
        config_task(Config(dict(model=dict(type="ImageClassifier"))))


@pytest.mark.slow
def test_paper_mask_rcnn_tiny_at_1280x800():
    r = mm_complexity(DET_T)  # the paper's detection shape by default (about 35 s on 2 CPU cores)
    assert r["shape"] == (1280, 800)
    assert r["rois"] == {"bbox_head": 1000, "mask_head": 100}
    assert abs(r["macs"] / 1e9 - 271) / 271 < 0.02, r["modules"]


def test_segmentor_head_call_gives_the_paper_protocol_total(seg_model):
    """The count calls decode_head as a module (so fvcore can scope its own ops); the total is that of
    model(x, mode='tensor') as the paper's count ran it."""
    from fvcore.nn import FlopCountAnalysis
    from vmamba_zoo.analysis.flops import FVCORE_HANDLES

    class TensorMode(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x, mode="tensor")

    model, task = seg_model
    x = torch.randn(1, 3, 64, 96)
    plain = FlopCountAnalysis(TensorMode(model), (x,)).set_op_handle(**FVCORE_HANDLES)
    plain.unsupported_ops_warnings(False)
    plain.uncalled_modules_warnings(False)
    assert count_mm_macs(model, task, (64, 96))["macs"] == int(round(plain.total()))
