"""tools/validate.py (ours / timm-style / {'model','model_ema'} checkpoints, --ema, resolution and crop, class
count mismatch) and tools/erf.py (PNG + npy, centre-peaked map)."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vmamba_zoo.models.checkpoint import CheckpointMismatchError
from vmamba_zoo.train import load_config, train
from vmamba_zoo.train.erf import compute_erf, erf_summary
from vmamba_zoo.train.validate import validate

from test_train import CONFIGS, make_folder_dataset
from _tooling import load_tool as _tool

REPO = Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-class folder and a checkpoint of test_vmamba trained on it for one epoch (in this process)."""
    root = tmp_path_factory.mktemp("val_data")
    data = make_folder_dataset(root / "data", classes=3, train_per_class=8, val_per_class=5)
    cfg = load_config(CONFIGS / "vmamba_tiny.yaml", {
        "data_dir": str(data), "output": str(root / "run"), "model": "test_vmamba", "img_size": 32, "crop_pct": 1.0,
        "batch_size": 8, "epochs": 1, "warmup_epochs": 0, "workers": 0, "device": "cpu", "amp": None,
        "progress": False, "lr": 1e-3})
    summary = train(cfg)
    return data, Path(summary["checkpoint"])


def _constant_head(state_dict, winner: int, classes: int = 3):
    """A copy whose classifier always predicts ``winner``."""
    sd = {k: v.clone() for k, v in state_dict.items()}
    sd["head.fc.weight"].zero_()
    sd["head.fc.bias"] = torch.zeros(classes)
    sd["head.fc.bias"][winner] = 1.0
    return sd


def test_validate_ours_model_and_ema(trained, tmp_path):
    data, ckpt = trained
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    # model weights always say class 2, EMA weights always class 0: top-1 = that class's share (5 of 15)
    raw["state_dict"] = _constant_head(raw["state_dict"], 2)
    raw["state_dict_ema"] = _constant_head(raw["state_dict_ema"], 0)
    path = tmp_path / "rigged.pth.tar"
    torch.save(raw, path)
    for ema in (False, True):
        r = validate(str(path), str(data), ema=ema, workers=0, progress=False)
        assert r["model"] == "test_vmamba" and r["images"] == 15 and r["ema"] is ema
        assert r["top1"] == pytest.approx(100 / 3) and r["top5"] == pytest.approx(100.0)
        assert (r["img_size"], r["crop_pct"]) == (32, 1.0)  # the training run's, from the checkpoint
    # unbalanced classes tell the two apart: class_2 keeps 1 image -> model 1/11, EMA 5/11
    two = tmp_path / "no_class2"
    shutil.copytree(data / "val", two)
    for f in (two / "class_2").iterdir():
        f.unlink()
    shutil.copy(next((data / "val" / "class_1").iterdir()), two / "class_2" / "x.png")  # keep 3 class folders
    model_r = validate(str(path), str(two), workers=0, progress=False)
    ema_r = validate(str(path), str(two), ema=True, workers=0, progress=False)
    assert model_r["top1"] == pytest.approx(100 / 11)
    assert ema_r["top1"] == pytest.approx(100 * 5 / 11)


def test_validate_original_layout_container_and_resolution(trained, tmp_path, capsys):
    data, ckpt = trained
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    path = tmp_path / "release_style.pth"
    torch.save({"model": raw["state_dict"], "model_ema": raw["state_dict_ema"]}, path)  # no config inside
    rc = _tool("validate")(["--checkpoint", str(path), "--model", "test_vmamba", "--data-dir", str(data),
                            "--img-size", "48", "--crop-pct", "0.8", "--workers", "0", "--no-progress", "--ema"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "EMA" in out and "   48" in out and "0.800" in out and "images=15" in out
    ours = validate(str(ckpt), str(data), img_size=48, crop_pct=0.8, ema=True, workers=0, progress=False)
    assert f"top1={ours['top1']:.2f}" in out  # same weights, same numbers


def test_validate_class_count_mismatch(trained, tmp_path, capsys):
    data, ckpt = trained
    two = tmp_path / "two_classes"
    shutil.copytree(data / "val" / "class_0", two / "class_0")
    shutil.copytree(data / "val" / "class_1", two / "class_1")
    with pytest.raises(CheckpointMismatchError, match=r"has 3 classes but the folder .* has 2 class folders"):
        validate(str(ckpt), str(two), workers=0, progress=False)
    with pytest.raises(CheckpointMismatchError, match=r"3-class classifier but --num-classes is 5"):
        validate(str(ckpt), str(data), num_classes=5, workers=0, progress=False)
    renamed = tmp_path / "renamed"
    shutil.copytree(data / "val", renamed)
    (renamed / "class_2").rename(renamed / "zebra")
    with pytest.raises(CheckpointMismatchError, match=r"other classes .* \['zebra'\]"):
        validate(str(ckpt), str(renamed), workers=0, progress=False)
    rc = _tool("validate")(["--checkpoint", str(ckpt), "--data-dir", str(two), "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "3 classes" in err and "2 class folders" in err


def test_validate_missing_folder_names_the_path(trained, tmp_path, capsys):
    _, ckpt = trained
    missing = tmp_path / "nowhere" / "val"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        validate(str(ckpt), str(missing), workers=0, progress=False)
    rc = _tool("validate")(["--checkpoint", str(tmp_path / "no.pth"), "--data-dir", str(trained[0])])
    assert rc == 2 and "checkpoint file not found" in capsys.readouterr().err


def test_erf_tool_png_npy_centre_peak(trained, tmp_path, capsys):
    data, ckpt = trained
    prefix = tmp_path / "erf" / "stage1"
    rc = _tool("erf")(["--model", "test_vmamba", "--checkpoint", str(ckpt), "--img-size", "64", "--num-images", "4",
                       "--stage", "1", "--data-dir", str(data / "val"), "--out", str(prefix)])
    assert rc == 0, capsys.readouterr().err
    assert (prefix.with_suffix(".png")).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    erf = np.load(prefix.with_suffix(".npy"))
    _check_centre_peak(erf, 64)


@pytest.mark.parametrize("stage,factor", [(0, 3.0), (2, 1.5)])  # deeper stages see more of the image
def test_erf_random_images_centre_peak(stage, factor):
    import timm
    model = timm.create_model("test_vmamba")
    images = torch.randn(3, 3, 64, 64)
    erf = compute_erf(model, images, stage=stage, batch_size=2)
    _check_centre_peak(erf, 64, factor)
    # an average over images that do not interact (batching does not mix them)
    first, rest = compute_erf(model, images[:1], stage=stage), compute_erf(model, images[1:], stage=stage)
    np.testing.assert_allclose(erf, (first + 2 * rest) / 3, rtol=1e-4, atol=1e-9)


def _check_centre_peak(erf, size, factor=3.0):
    assert erf.shape == (size, size) and np.isfinite(erf).all() and erf.min() >= 0 and erf.max() > 0
    y, x = erf_summary(erf)["argmax"]
    assert abs(y - size / 2) <= size / 8 and abs(x - size / 2) <= size / 8, (y, x)
    q = size // 4
    centre = erf[size // 2 - q // 2:size // 2 + q // 2, size // 2 - q // 2:size // 2 + q // 2].mean()
    border = np.concatenate([erf[:q].ravel(), erf[-q:].ravel(), erf[:, :q].ravel(), erf[:, -q:].ravel()]).mean()
    assert centre > factor * border, (centre, border)


def test_erf_missing_folder(capsys, tmp_path):
    rc = _tool("erf")(["--model", "test_vmamba", "--img-size", "64", "--data-dir", str(tmp_path / "missing"),
                       "--out", str(tmp_path / "e")])
    assert rc == 2 and str(tmp_path / "missing") in capsys.readouterr().err
