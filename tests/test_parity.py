"""Our models compute what the original release computes, with its weights and its parameter counts."""
import json

import pytest
import timm
import torch

import vmamba_zoo  # noqa: F401  (registers the models)
from vmamba_zoo import create_from_original, load_original_checkpoint

PARITY_FILES = ["parity_mini_v2_ratio1", "parity_mini_v2_ratio2", "parity_mini_v0"]


def _load_parity(reference_dir, name):
    return torch.load(reference_dir / f"{name}.pt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name", PARITY_FILES)
def test_logits_and_stage_outputs_match_original(reference_dir, name):
    """Logits and every stage output equal the original's to rtol 1e-4 / atol 1e-5 (fp32, CPU)."""
    data = _load_parity(reference_dir, name)
    model = load_original_checkpoint(create_from_original(data["config"]), data["state_dict"]).eval()
    for inp, x in data["inputs"].items():
        with torch.no_grad():
            logits = model(x)
            stages = model.forward_intermediates(x, intermediates_only=True)
        torch.testing.assert_close(logits, data["outputs"][inp], rtol=1e-4, atol=1e-5)
        assert len(stages) == 4
        for i, feat in enumerate(stages):
            torch.testing.assert_close(feat, data["outputs"][f"{inp}_stage{i}"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", PARITY_FILES)
def test_parity_weights_are_really_used(reference_dir, name):
    """Perturbed SSM parameters change the stage output: parity is not reached by an unused path."""
    data = _load_parity(reference_dir, name)
    model = load_original_checkpoint(create_from_original(data["config"]), data["state_dict"]).eval()
    x = data["inputs"]["x_64x64"]
    expected = data["outputs"]["x_64x64_stage0"]
    mixer = model.stages[0].blocks[0].mixer
    for param in (mixer.A_logs, mixer.Ds, mixer.dt_projs_bias, mixer.x_proj_weight):
        with torch.no_grad():
            saved = param.clone()
            param.mul_(1.5).add_(0.5)
            stage0 = model.forward_intermediates(x, indices=[0], intermediates_only=True)[0]
            param.copy_(saved)
        assert not torch.allclose(stage0, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", PARITY_FILES)
def test_parity_model_parameter_count(reference_dir, name):
    """The mini models built from the original config have the original's parameter count."""
    summary = json.loads((reference_dir / "summary.json").read_text())
    model = create_from_original(_load_parity(reference_dir, name)["config"])
    assert sum(p.numel() for p in model.parameters()) == summary[name.replace("parity_", "")]["n_params"]


@pytest.mark.parametrize("ours,theirs", [
    ("vmamba_tiny", "vmamba_tiny_s1l8"), ("vmamba_small", "vmamba_small_s2l15"),
    ("vmamba_base", "vmamba_base_s2l15"), ("vmamba_vanilla_tiny", "vanilla_vmamba_tiny")])
def test_released_parameter_counts(reference_dir, ours, theirs):
    """Full-size models (built on the meta device: no memory) have exactly the original's parameter count,
    and create_from_original on the original's config builds the same architecture."""
    summary = json.loads((reference_dir / "summary.json").read_text())[theirs]
    model = timm.create_model(ours, device="meta")
    assert sum(p.numel() for p in model.parameters()) == summary["n_params"]
    with torch.device("meta"):
        rebuilt = create_from_original(summary["config"])
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("ours,keys_file", [
    ("vmamba_tiny", "keys_vmamba_tiny_s1l8.txt"), ("vmamba_small", "keys_vmamba_small_s2l15.txt"),
    ("vmamba_base", "keys_vmamba_base_s2l15.txt"), ("vmamba_vanilla_tiny", "keys_vanilla_vmamba_tiny.txt")])
def test_original_key_layout_maps_onto_ours(reference_dir, ours, keys_file):
    """Every key of the released state dicts maps to one of our parameters with the same shape, and back."""
    from vmamba_zoo.models.checkpoint import remap_original_keys
    shapes = {}
    for line in (reference_dir / keys_file).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")
        shapes[key] = torch.empty(json.loads(shape), device="meta")
    remapped = remap_original_keys(shapes)
    expected = timm.create_model(ours, device="meta").state_dict()
    assert set(remapped) == set(expected)
    assert all(remapped[k].shape == expected[k].shape for k in expected)
