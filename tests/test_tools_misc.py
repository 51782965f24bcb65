"""tools/flops.py, tools/throughput.py, tools/convert_checkpoint.py and the checkpoint manifest."""
import json
from pathlib import Path

import pytest
import timm
import torch

import vmamba_zoo  # noqa: F401
from vmamba_zoo import create_from_original, load_original_checkpoint
from vmamba_zoo.analysis.convert import convert_checkpoint, match_registered_models
from vmamba_zoo.checkpoints_manifest import find_by_filename, manifest_entries, manifest_entry
from vmamba_zoo.models import CheckpointMismatchError
from _tooling import load_tool as _tool

REPO = Path(__file__).resolve().parents[1]




def test_flops_cli_table_and_plot(tmp_path, capsys):
    png = tmp_path / "gmacs.png"
    rc = _tool("flops")(["--models", "test_vmamba", "deit_tiny_patch16_224", "--sweep", "64", "128",
                         "--method", "torch", "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "GMACs@64" in out and "GMACs@128" in out and "test_vmamba" in out and "deit_tiny_patch16_224" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flops_cli_fvcore_single_size(capsys):
    assert _tool("flops")(["--models", "test_vmamba", "--img-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "0.51" in out  # params (M)


def test_throughput_cli_table_and_plot(tmp_path, capsys):
    png = tmp_path / "tp.png"
    rc = _tool("throughput")(["--models", "test_vmamba", "resnet10t", "--batch-size", "2", "--sweep", "64", "96",
                              "--warmup", "1", "--iters", "2", "--device", "cpu", "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "infer img/s" in out and "train img/s" in out and "ratio" in out and "resnet10t" in out
    assert "maxrss" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_throughput_bf16_autocast_inference(capsys):
    rc = _tool("throughput")(["--models", "test_vmamba", "--batch-size", "2", "--img-size", "64", "--warmup", "1",
                              "--iters", "2", "--dtype", "bf16", "--modes", "infer", "--device", "cpu"])
    assert rc == 0 and "bf16" in capsys.readouterr().out


@pytest.mark.parametrize("tool,argv", [("flops", ["--models", "no_such_model"]),
                                       ("throughput", ["--models", "no_such_model", "--iters", "1"])])
def test_unknown_model_clear_error(tool, argv, capsys):
    assert _tool(tool)(argv) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err


def _parity(reference_dir):
    return torch.load(reference_dir / "parity_mini_v2_ratio1.pt", map_location="cpu", weights_only=True)


def test_convert_round_trip_reproduces_outputs(reference_dir, tmp_path, capsys):
    data = _parity(reference_dir)
    src = reference_dir / "parity_mini_v2_ratio1.pt"
    dst = tmp_path / "mini.safetensors"
    # fits no registered architecture: refused without --model
    assert _tool("convert_checkpoint")([str(src), str(dst)]) == 2
    assert "fits no registered VMamba model" in capsys.readouterr().err and not dst.exists()
    rc = _tool("convert_checkpoint")([str(src), str(dst), "--model", "test_vmamba",
                                      "--model-args", '{"dims": 32, "num_classes": 10}'])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "tensors: 114" in out and "patch_embed.0.weight -> stem.conv1.weight" in out
    assert "dims=32-64-128-256, depths=1-1-2-1" in out

    model = create_from_original(data["config"]).eval()
    load_original_checkpoint(model, dst)
    from safetensors.torch import load_file
    assert not any(k.startswith(("patch_embed.", "layers.")) for k in load_file(dst))
    with torch.no_grad():
        y = model(data["inputs"]["x_64x64"])
    torch.testing.assert_close(y, data["outputs"]["x_64x64"], rtol=1e-4, atol=1e-4)
    # the library function with a module target, same tensors
    report = convert_checkpoint(src, tmp_path / "b.safetensors", model=create_from_original(data["config"]))
    assert report["num_tensors"] == 114 and report["source_layout"] == "original"


def test_convert_detects_registered_architecture(tmp_path, capsys):
    model = timm.create_model("test_vmamba").eval()
    src = tmp_path / "ours.pth"
    torch.save({"model": model.state_dict(), "model_ema": model.state_dict()}, src)
    assert match_registered_models(model.state_dict()) == ["test_vmamba"]
    dst = tmp_path / "ours.safetensors"
    assert _tool("convert_checkpoint")([str(src), str(dst), "--ema"]) == 0
    out = capsys.readouterr().out
    assert "converted for: test_vmamba" in out and "model_ema" in out
    fresh = timm.create_model("test_vmamba").eval()
    load_original_checkpoint(fresh, dst)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


def test_convert_bad_inputs(reference_dir, tmp_path, capsys):
    main = _tool("convert_checkpoint")
    assert main([str(tmp_path / "missing.pth"), str(tmp_path / "o.safetensors")]) == 2
    assert "checkpoint file not found" in capsys.readouterr().err
    src = str(reference_dir / "parity_mini_v2_ratio1.pt")
    assert main([src, str(tmp_path / "o.safetensors"), "--model", "no_such_model"]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    assert main([src, str(tmp_path / "o.safetensors"), "--ema", "--model", "test_vmamba"]) == 2
    assert "EMA weights requested" in capsys.readouterr().err
    # a registered model that does not fit: CheckpointMismatchError naming both sides
    assert main([src, str(tmp_path / "o.safetensors"), "--model", "vmamba_tiny"]) == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and "dims=32-64-128-256" in err
    with pytest.raises(CheckpointMismatchError):
        convert_checkpoint(src, tmp_path / "o.safetensors", model="vmamba_tiny")
    assert main([src, str(tmp_path / "o.pth")]) == 2


def test_manifest_matches_timm_pretrained_cfgs():
    entries = manifest_entries()
    assert {e["model"] for e in entries} == {"vmamba_tiny", "vmamba_small", "vmamba_base", "vmamba_vanilla_tiny",
                                             "vmamba_vanilla_small", "vmamba_vanilla_base"}
    for entry in entries:
        cfg = timm.models.get_pretrained_cfg(entry["timm_name"])
        assert entry["url"] == cfg.url
        assert entry["url"].endswith("/" + entry["filename"])
        assert timm.is_model(entry["model"])
        assert find_by_filename("/some/dir/" + entry["filename"]) == entry
    assert manifest_entry("vmamba_tiny")["top1"] == 82.6
    assert manifest_entry("vmamba_base.in1k")["top1"] == 83.9
    assert manifest_entry("vmamba_vanilla_tiny")["top1"] == 82.2
    with pytest.raises(KeyError, match="not in the checkpoint manifest"):
        manifest_entry("resnet50")
    raw = json.loads((REPO / "checkpoints" / "manifest.json").read_text())
    assert raw["checkpoints"] == entries


def test_manifest_params_match_models():
    for entry in manifest_entries():
        with torch.device("meta"):
            model = timm.create_model(entry["model"])
        assert sum(p.numel() for p in model.parameters()) == entry["params"], entry["model"]
