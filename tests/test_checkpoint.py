"""Checkpoint loading: original release files, ours, timm-style, safetensors, URLs; clear errors."""
import pytest
import timm
import torch
from safetensors.torch import save_file

import vmamba_zoo  # noqa: F401
from vmamba_zoo import CheckpointMismatchError, create_from_original, describe_state_dict, load_original_checkpoint
from vmamba_zoo.models.checkpoint import checkpoint_filter_fn


@pytest.fixture(scope="module")
def v2_ratio1(reference_dir):
    return torch.load(reference_dir / "parity_mini_v2_ratio1.pt", map_location="cpu", weights_only=True)


def _perturbed(state_dict):
    return {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state_dict.items()}


def test_original_file_model_vs_ema(tmp_path, v2_ratio1):
    """A {'model', 'model_ema'} file on disk: ema=False loads 'model', ema=True loads 'model_ema'."""
    sd = v2_ratio1["state_dict"]["model"]
    ema = _perturbed(sd)
    path = tmp_path / "orig.pth"
    torch.save({"model": sd, "model_ema": ema, "epoch": 3}, path)
    model = create_from_original(v2_ratio1["config"])
    load_original_checkpoint(model, path)
    assert torch.equal(model.stem.conv1.weight, sd["patch_embed.0.weight"])
    load_original_checkpoint(model, path, ema=True)
    assert torch.equal(model.stem.conv1.weight, ema["patch_embed.0.weight"])
    assert torch.equal(model.stages[1].downsample.conv.weight, ema["layers.0.downsample.1.weight"])


def test_ema_requested_but_absent(tmp_path, v2_ratio1):
    model = create_from_original(v2_ratio1["config"])
    with pytest.raises(KeyError, match="model_ema"):
        load_original_checkpoint(model, {"model": v2_ratio1["state_dict"]["model"]}, ema=True)


@pytest.mark.parametrize("fmt", ["ours_pth", "timm_state_dict", "safetensors", "prefixed"])
def test_our_and_timm_layouts_round_trip(tmp_path, fmt):
    """Our own state dict, timm's {'state_dict': ...}, safetensors and 'module.'-prefixed files all load."""
    src = timm.create_model("test_vmamba", num_classes=7)
    sd = src.state_dict()
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pth")
    if fmt == "safetensors":
        save_file(sd, path)
    elif fmt == "timm_state_dict":
        torch.save({"state_dict": sd, "epoch": 1}, path)
    elif fmt == "prefixed":
        torch.save({"module." + k: v for k, v in sd.items()}, path)
    else:
        torch.save(sd, path)
    dst = load_original_checkpoint(timm.create_model("test_vmamba", num_classes=7), path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src.eval()(x), rtol=0, atol=0)


def test_timm_pretrained_from_local_file_and_url(tmp_path, monkeypatch, v2_ratio1):
    """timm's pretrained path (file and URL download) runs our filter on an original-layout file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    path = tmp_path / "vssm_mini.pth"
    torch.save({"model": v2_ratio1["state_dict"]["model"]}, path)
    args = dict(dims=32, depths=(1, 1, 2, 1), num_classes=10)
    expected = v2_ratio1["state_dict"]["model"]["layers.2.blocks.1.op.A_logs"]
    by_file = timm.create_model("test_vmamba", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **args)
    assert torch.equal(by_file.stages[2].blocks[1].mixer.A_logs, expected)
    by_url = timm.create_model("test_vmamba", pretrained=True,
                               pretrained_cfg_overlay=dict(url=path.as_uri(), num_classes=10), **args)
    assert torch.equal(by_url.stages[2].blocks[1].mixer.A_logs, expected)
    # a different class count keeps the backbone and leaves a new classifier (timm's fine-tuning rule)
    finetune = timm.create_model("test_vmamba", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                 dims=32, depths=(1, 1, 2, 1), num_classes=3)
    assert finetune.head.fc.out_features == 3
    assert torch.equal(finetune.stages[2].blocks[1].mixer.A_logs, expected)


def test_wrong_architecture_is_an_error_naming_both(reference_dir):
    """A VMamba-T-like file with ssm_ratio 2 / depths 2-2-5-2 into vmamba_tiny: error describing both."""
    other = timm.create_model("vmamba_tiny", depths=(2, 2, 5, 2), ssm_ratio=2.0, device="meta").state_dict()
    model = timm.create_model("vmamba_tiny", device="meta")
    with pytest.raises(CheckpointMismatchError) as err:
        checkpoint_filter_fn({"model": other}, model)
    msg = str(err.value)
    assert "depths=2-2-5-2" in msg and "ssm_ratio=2" in msg  # what the file is
    assert "depths=2-2-8-2" in msg and "ssm_ratio=1" in msg  # what the model expects


def test_original_file_of_other_ratio_is_rejected(reference_dir, v2_ratio1):
    """The original-layout ssm_ratio-2 parity weights do not silently load into the ratio-1 model."""
    ratio2 = torch.load(reference_dir / "parity_mini_v2_ratio2.pt", map_location="cpu", weights_only=True)
    model = create_from_original(v2_ratio1["config"])
    before = model.stem.conv1.weight.clone()
    with pytest.raises(CheckpointMismatchError, match="ssm_ratio=2"):
        load_original_checkpoint(model, ratio2["state_dict"])
    assert torch.equal(model.stem.conv1.weight, before)


def test_vanilla_file_into_v2_model_is_rejected(reference_dir, v2_ratio1):
    v0 = torch.load(reference_dir / "parity_mini_v0.pt", map_location="cpu", weights_only=True)
    with pytest.raises(CheckpointMismatchError, match="stem=patch"):
        load_original_checkpoint(create_from_original(v2_ratio1["config"]), v0["state_dict"])


def test_class_count_mismatch(v2_ratio1):
    """Strict by default (error names both class counts); strict_head=False keeps the model's classifier."""
    sd = v2_ratio1["state_dict"]
    model = create_from_original(dict(v2_ratio1["config"], num_classes=5))
    with pytest.raises(CheckpointMismatchError, match="10 classes.*5"):
        load_original_checkpoint(model, sd)
    load_original_checkpoint(model, sd, strict_head=False)
    assert torch.equal(model.stem.conv1.weight, sd["model"]["patch_embed.0.weight"])


class _TrainArgs:  # any non-tensor class pickled into a checkpoint (e.g. an argparse namespace)
    lr = 0.1


def test_unsafe_pickle_is_refused(tmp_path):
    """Files that need arbitrary unpickling are refused (weights_only=True), with a message saying so."""
    path = tmp_path / "with_object.pth"
    torch.save({"model": timm.create_model("test_vmamba").state_dict(), "args": _TrainArgs()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_original_checkpoint(timm.create_model("test_vmamba"), path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_original_checkpoint(timm.create_model("test_vmamba"), "/nonexistent/nope.pth")


def test_describe_state_dict_of_original_layout(reference_dir):
    v0 = torch.load(reference_dir / "parity_mini_v0.pt", map_location="cpu", weights_only=True)
    text = describe_state_dict(v0["state_dict"]["model"])
    assert text == ("VMamba(stem=patch, dims=32-64-128-256, depths=1-1-2-1, d_state=16, ssm_ratio=2, "
                    "scan_directions=4, z_gate=True, mlp_ratio=0, num_classes=10)")


@pytest.mark.parametrize("bad", [dict(forward_type="v3"), dict(gmlp=True), dict(downsample_version="v2"),
                                 dict(not_an_option=1)])
def test_create_from_original_rejects_unsupported(v2_ratio1, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        create_from_original(dict(v2_ratio1["config"], **bad))


def test_url_is_downloaded_once_then_loaded(tmp_path, monkeypatch, v2_ratio1):
    """An http(s) checkpoint goes through torch.hub's download (once) and the same strict loader."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    source = tmp_path / "served.pth"
    torch.save({"model": v2_ratio1["state_dict"]["model"]}, source)
    fetched = []

    def fake_download(url, dst, progress=True):
        fetched.append(url)
        with open(dst, "wb") as f:
            f.write(source.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    url = "https://example.invalid/releases/download/%23v2cls/vssm_mini.pth"
    for _ in range(2):
        model = load_original_checkpoint(create_from_original(v2_ratio1["config"]), url)
    assert fetched == [url]
    assert torch.equal(model.stem.conv1.weight, v2_ratio1["state_dict"]["model"]["patch_embed.0.weight"])
