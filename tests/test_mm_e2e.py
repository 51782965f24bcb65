"""End-to-end tests of the mmdet / mmseg configs and tools on CPU.

- every real config in configs/mmdet and configs/mmseg parses, builds through the registry (without its
  Pretrained init_cfg, so nothing is downloaded) and runs one forward on a 1x3x128x128 image;
- tools/det_train.py, det_test.py, seg_train.py, seg_test.py run for real (their ``main(argv)``) on tiny
  generated COCO / ADE20K-format data with a test config inheriting the real VMamba-T config: 2 training
  iterations with validation (CocoMetric bbox+segm / IoUMetric), a checkpoint, ``--resume`` to iteration 3
  (loaded by torch.load with weights_only=True), then the test tool on the checkpoint.
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import random

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from _tooling import load_tool as _tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DET_CONFIGS = sorted(glob.glob(osp.join(ROOT, "configs", "mmdet", "*.py")))
SEG_CONFIGS = sorted(glob.glob(osp.join(ROOT, "configs", "mmseg", "*.py")))
DET_T = osp.join(ROOT, "configs", "mmdet", "mask-rcnn_vmamba-t_fpn_1x_coco.py")
SEG_T = osp.join(ROOT, "configs", "mmseg", "upernet_vmamba-t_8xb2-160k_ade20k-512x512.py")
RELEASE = "https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/"
# drop-path rates of the original release's vssm1 configs: detection T/S/B 0.2/0.2/0.6, segmentation 0.2/0.3/0.6
EXPECTED = {"-t_": ("tiny", {"mmdet": 0.2, "mmseg": 0.2}, 96, RELEASE + "vssm1_tiny_0230s_ckpt_epoch_264.pth"),
            "-s_": ("small", {"mmdet": 0.2, "mmseg": 0.3}, 96, RELEASE + "vssm_small_0229_ckpt_epoch_222.pth"),
            "-b_": ("base", {"mmdet": 0.6, "mmseg": 0.6}, 128, RELEASE + "vssm_base_0229_ckpt_epoch_237.pth")}




def _expected(path):
    return next(v for k, v in EXPECTED.items() if k in osp.basename(path))


# ---------------------------------------------------------------- real configs
def test_config_files_present():
    assert len(DET_CONFIGS) == 6 and len(SEG_CONFIGS) == 3


@pytest.mark.parametrize("path", DET_CONFIGS + SEG_CONFIGS, ids=osp.basename)
def test_real_config_builds_and_forwards(path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(path)
    size, dprs, dim, url = _expected(path)
    dpr = dprs["mmdet" if "mmdet" in path else "mmseg"]
    bb = cfg.model.backbone
    assert (bb.type, bb.size, bb.drop_path_rate, tuple(bb.out_indices)) == ("VMambaBackbone", size, dpr, (0, 1, 2, 3))
    assert bb.init_cfg == dict(type="Pretrained", checkpoint=url)
    assert cfg.custom_imports == dict(imports=["vmamba_zoo.mm"], allow_failed_imports=False)
    assert cfg.train_dataloader.batch_size == 2
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert all(keys[k] == dict(decay_mult=0.0) for k in ("norm", "A_logs", "Ds"))
    opt = cfg.optim_wrapper.optimizer
    chans = [dim, 2 * dim, 4 * dim, 8 * dim]
    if "mmdet" in path:
        assert (opt.type, opt.lr, opt.weight_decay) == ("AdamW", 1e-4, 0.05)
        assert list(cfg.model.neck.in_channels) == chans
        assert cfg.train_cfg.max_epochs == (36 if "3x" in path else 12)
    else:
        assert (opt.type, opt.lr, opt.weight_decay) == ("AdamW", 6e-5, 0.01)
        assert list(cfg.model.decode_head.in_channels) == chans
        assert cfg.model.auxiliary_head.in_channels == 4 * dim
        warm, poly = cfg.param_scheduler
        assert (warm.type, warm.end, poly.type, poly.end) == ("LinearLR", 1500, "PolyLR", 160000)
        assert cfg.train_cfg.max_iters == 160000

    if "3x" in path:  # same model as the 1x config (only data pipeline and schedule differ): not built twice
        assert cfg.model == Config.fromfile(path.replace("ms-crop-3x", "1x")).model
        return
    import vmamba_zoo.mm  # noqa: F401
    bb.init_cfg = None
    if "mmdet" in path:
        from mmdet.registry import MODELS
        from mmdet.structures import DetDataSample
        init_default_scope("mmdet")
    else:
        from mmseg.registry import MODELS
        init_default_scope("mmseg")
    model = MODELS.build(cfg.model).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        if "mmdet" in path:
            sample = DetDataSample(metainfo=dict(img_shape=(128, 128), ori_shape=(128, 128), pad_shape=(128, 128),
                                                 scale_factor=(1.0, 1.0), batch_input_shape=(128, 128)))
            out = model(x, [sample], mode="tensor")
            feats = model.extract_feat(x)
            assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
            assert len(out) > 0
        else:
            out = model(x, mode="tensor")
            assert out.shape == (1, 150, 32, 32)
            assert torch.isfinite(out).all()


# ---------------------------------------------------------------- tiny data sets
def _shapes(rng, size):
    """1-3 random rectangles / ellipses: (category index, kind, box)."""
    out = []
    for _ in range(rng.randint(1, 3)):
        w, h = rng.randint(16, size // 2), rng.randint(16, size // 2)
        x, y = rng.randint(0, size - w - 1), rng.randint(0, size - h - 1)
        out.append((rng.randrange(3), rng.choice(["rect", "ellipse"]), (x, y, x + w, y + h)))
    return out


def _draw(size, shapes, rng):
    img = Image.new("RGB", (size, size), tuple(rng.randint(0, 80) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    masks = []
    for cat, kind, box in shapes:
        color = tuple(rng.randint(120, 255) for _ in range(3))
        mask = Image.new("L", (size, size), 0)
        getattr(draw, "rectangle" if kind == "rect" else "ellipse")(box, fill=color)
        getattr(ImageDraw.Draw(mask), "rectangle" if kind == "rect" else "ellipse")(box, fill=1)
        masks.append((cat, np.array(mask, dtype=np.uint8)))
    return img, masks


def _make_coco(root, n_train=4, n_val=2, size=96):
    from mmdet.datasets import CocoDataset
    from pycocotools import mask as mask_utils
    rng = random.Random(0)
    for split, n in (("train2017", n_train), ("val2017", n_val)):
        os.makedirs(osp.join(root, split), exist_ok=True)
        images, anns = [], []
        for i in range(n):
            name = f"{i:012d}.jpg"
            img, masks = _draw(size, _shapes(rng, size), rng)
            img.save(osp.join(root, split, name))
            images.append(dict(id=i + 1, file_name=name, width=size, height=size))
            for cat, m in masks:
                rle = mask_utils.encode(np.asfortranarray(m))
                x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                rle["counts"] = rle["counts"].decode()
                anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=cat + 1, bbox=[x, y, w, h],
                                 area=float(mask_utils.area(rle)), iscrowd=0, segmentation=rle))
        os.makedirs(osp.join(root, "annotations"), exist_ok=True)
        with open(osp.join(root, "annotations", f"instances_{split}.json"), "w") as f:
            # all 80 COCO categories (the model predicts any of them); shapes use the first three
            json.dump(dict(images=images, annotations=anns,
                           categories=[dict(id=i + 1, name=n) for i, n in enumerate(CocoDataset.METAINFO["classes"])]), f)


def _make_ade(root, n_train=4, n_val=2, size=64):
    rng = random.Random(1)
    for split, n in (("training", n_train), ("validation", n_val)):
        os.makedirs(osp.join(root, "images", split), exist_ok=True)
        os.makedirs(osp.join(root, "annotations", split), exist_ok=True)
        for i in range(n):
            img, masks = _draw(size, _shapes(rng, size), rng)
            label = np.full((size, size), 1, np.uint8)  # ADE: 0 = ignore, 1..150 = classes
            for cat, m in masks:
                label[m > 0] = cat + 2
            label[:2] = 0  # a few "other" pixels (ignored after reduce_zero_label)
            name = f"ADE_{split[:5]}_{i:08d}"
            img.save(osp.join(root, "images", split, name + ".jpg"))
            Image.fromarray(label).save(osp.join(root, "annotations", split, name + ".png"))


# ---------------------------------------------------------------- test configs (inherit the real T ones)
def _det_config(tmp, data_root):
    path = osp.join(tmp, "det_test_cfg.py")
    with open(path, "w") as f:
        f.write(f"""
_base_ = [{DET_T!r}]
data_root = {data_root + '/'!r}
c = 32  # narrow heads: small checkpoints, fast CPU steps
model = dict(
    backbone=dict(size='test', init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=c),
    rpn_head=dict(in_channels=c, feat_channels=c),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=c),
        bbox_head=dict(in_channels=c, fc_out_channels=64),
        mask_roi_extractor=dict(out_channels=c),
        mask_head=dict(in_channels=c, conv_out_channels=c)),
    test_cfg=dict(rcnn=dict(score_thr=0.0)))  # an untrained model scores below mmdet's 0.05
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2, val_interval=2)
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2)]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=2), logger=dict(interval=1))
log_processor = dict(by_epoch=False)
""")
    return path


def _seg_config(tmp, data_root):
    path = osp.join(tmp, "seg_test_cfg.py")
    with open(path, "w") as f:
        f.write(f"""
_base_ = [{SEG_T!r}]
data_root = {data_root + '/'!r}
crop_size = (64, 64)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(size='test', init_cfg=None),
    decode_head=dict(in_channels=[16, 32, 64, 128], channels=32),
    auxiliary_head=dict(in_channels=64, channels=16))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.75, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2)]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=2), logger=dict(interval=1))
""")
    return path


def _check_checkpoint(path, max_mb):
    from vmamba_zoo.mm.runner import allow_mmengine_checkpoints
    assert osp.isfile(path), path
    assert osp.getsize(path) < max_mb * 2 ** 20, f"{path}: {osp.getsize(path) / 2 ** 20:.1f} MB"
    allow_mmengine_checkpoints()
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # what resume does under torch >= 2.6
    assert {"meta", "state_dict", "optimizer", "message_hub"} <= set(ckpt)
    return ckpt


def _run_e2e(tmp_path, task, make_data, make_cfg, metric_keys):
    data_root = str(tmp_path / "data")
    make_data(data_root)
    cfg = make_cfg(str(tmp_path), data_root)
    work = str(tmp_path / "work")
    train, test = _tool(f"{task}_train"), _tool(f"{task}_test")

    runner = train([cfg, "--work-dir", work])
    assert runner.iter == 2
    ckpt = _check_checkpoint(osp.join(work, "iter_2.pth"), max_mb=30)
    assert ckpt["meta"]["iter"] == 2
    val = runner.message_hub.log_scalars
    assert all(f"val/{k}" in val for k in metric_keys), sorted(val)

    # resume and train one more iteration: det with --resume (auto: the work dir's last checkpoint),
    # seg with --resume PATH
    resume = ["--resume"] if task == "det" else ["--resume", osp.join(work, "iter_2.pth")]
    runner = train([cfg, "--work-dir", work, *resume, "--cfg-options", "train_cfg.max_iters=3"])
    assert runner.iter == 3
    assert _check_checkpoint(osp.join(work, "iter_3.pth"), max_mb=30)["meta"]["iter"] == 3

    out = str(tmp_path / ("preds.pkl" if task == "det" else "preds"))
    metrics = test([cfg, osp.join(work, "iter_3.pth"), "--work-dir", str(tmp_path / "test"), "--out", out])
    assert all(k in metrics and np.isfinite(metrics[k]) for k in metric_keys), metrics
    assert osp.exists(out)
    print(task, "test metrics:", metrics)


def test_det_tools_e2e(tmp_path):
    _run_e2e(tmp_path, "det", _make_coco, _det_config, ["coco/bbox_mAP", "coco/segm_mAP"])


def test_seg_tools_e2e(tmp_path):
    _run_e2e(tmp_path, "seg", _make_ade, _seg_config, ["mIoU", "aAcc"])


def test_safe_globals_and_url_resolution(monkeypatch, tmp_path):
    from vmamba_zoo.mm import runner
    assert any(getattr(g, "__name__", "") == "HistoryBuffer" for g in runner.allow_mmengine_checkpoints())
    seen = []

    def fake_download(url, dst, progress=True):
        seen.append(url)
        open(dst, "wb").close()

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    url = RELEASE + "vssm1_tiny_0230s_ckpt_epoch_264.pth"
    cfg = dict(backbone=dict(init_cfg=dict(type="Pretrained", checkpoint=url)), neck=dict())
    runner.resolve_pretrained_urls(cfg)
    runner.resolve_pretrained_urls(dict(init_cfg=[dict(type="Pretrained", checkpoint=url)]))
    assert seen == [url]  # downloaded once
    assert cfg["backbone"]["init_cfg"]["checkpoint"] == osp.join(str(tmp_path), "checkpoints",
                                                                 "vssm1_tiny_0230s_ckpt_epoch_264.pth")
