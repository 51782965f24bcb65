"""OpenMMLab backbone adapter (vmamba_zoo.mm): registration, shapes, freezing, checkpointing, loading."""
import importlib
import math
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

import vmamba_zoo.mm  # noqa: F401  (registers VMambaBackbone)
from vmamba_zoo import CheckpointMismatchError
from vmamba_zoo.mm import SIZES, VMambaBackbone

MINI = dict(type="VMambaBackbone", size="test")  # dims 16-32-64-128, depths 1-1-2-1 (timm's test_vmamba)
# the first release's layout (patch stem, patch merging, z gate) at test size; d_state 1 keeps it fast
MINI_VANILLA = dict(type="VMambaBackbone", size="vanilla_tiny", dims=16, depths=(1, 1, 2, 1), d_state=1,
                    ssm_ratio=1.0)


def _build(**kwargs):
    return MODELS.build(dict(MINI, **kwargs))


@pytest.fixture(scope="module")
def v2_ratio1(reference_dir):
    return torch.load(reference_dir / "parity_mini_v2_ratio1.pt", map_location="cpu", weights_only=True)


def _perturbed(state_dict):
    return {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state_dict.items()}


def _loss(outs):  # a fixed weighting: sum(LN(x)**2) would be constant and give no gradient upstream
    return sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)


def _ln(feat):  # LayerNorm over the channels of an NCHW map, identity affine (a fresh output norm)
    return F.layer_norm(feat.permute(0, 2, 3, 1), feat.shape[1:2]).permute(0, 3, 1, 2)


# ----- import and registries -----
def test_import_without_mmengine_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mmengine", None)  # makes `import mmengine` raise ImportError
    for name in ("vmamba_zoo.mm", "vmamba_zoo.mm.backbone"):
        monkeypatch.delitem(sys.modules, name)  # restored afterwards (no second registration)
    with pytest.raises(ImportError, match=r"pip install 'vmamba_zoo\[mm\]'"):
        importlib.import_module("vmamba_zoo.mm")


def test_found_by_root_mmdet_and_mmseg_registries():
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    assert MODELS.get("VMambaBackbone") is VMambaBackbone
    for registry in (MODELS, DET_MODELS, SEG_MODELS):
        assert type(registry.build(dict(MINI))) is VMambaBackbone


def test_config_with_custom_imports(tmp_path):
    """An mmdet config naming vmamba_zoo.mm in custom_imports builds the backbone by type."""
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine.config import Config
    path = tmp_path / "cfg.py"
    path.write_text("custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)\n"
                    "model = dict(backbone=dict(type='VMambaBackbone', size='test', out_indices=(1, 2, 3),\n"
                    "                           drop_path_rate=0.1))\n")
    cfg = Config.fromfile(str(path))  # imports the custom_imports modules
    backbone = DET_MODELS.build(cfg.model.backbone)
    assert backbone.out_channels == (32, 64, 128)
    assert backbone.stages[3].blocks[0].drop_path1.drop_prob == pytest.approx(0.1)


# ----- shapes -----
@pytest.mark.parametrize("size", [(224, 224), (511, 511), (112, 137)])
@pytest.mark.parametrize("cfg", [MINI, MINI_VANILLA], ids=["v2", "vanilla"])
def test_output_shapes(cfg, size):
    backbone = MODELS.build(cfg).eval()
    h, w = size
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, h, w))
    assert isinstance(outs, tuple) and len(outs) == 4
    if cfg["size"] == "test":  # stride-2 convs: ceil(H / stride)
        expected = [(math.ceil(h / 2 ** (i + 2)), math.ceil(w / 2 ** (i + 2))) for i in range(4)]
    else:  # the 4x4 patch stem floors, patch merging ceils
        expected = [(h // 4, w // 4)]
        for _ in range(3):
            expected.append(tuple(math.ceil(n / 2) for n in expected[-1]))
    assert [tuple(o.shape) for o in outs] == [(1, 16 * 2 ** i, *expected[i]) for i in range(4)]
    assert all(o.is_contiguous() for o in outs)


@pytest.mark.parametrize("out_indices", [(0,), (2,), (1, 3), (0, 1, 2)])
def test_out_indices_subset(out_indices):
    backbone = _build(out_indices=out_indices).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16 * 2 ** i for i in out_indices] == list(backbone.out_channels)
    assert [o.shape[2] for o in outs] == [64 // 2 ** (i + 2) for i in out_indices]
    assert len(backbone.stages) == max(out_indices) + 1  # later stages are not built
    assert sorted(backbone.out_norms) == [str(i) for i in out_indices]


@pytest.mark.parametrize("bad", [dict(size="huge"), dict(out_indices=(4,)), dict(out_indices=()),
                                 dict(out_indices=(-1, 2)), dict(out_indices=(1, 1)), dict(frozen_stages=5),
                                 dict(frozen_stages=-2), dict(init_cfg=dict(type="Pretrained")),
                                 dict(init_cfg=dict(type="Pretrained", checkpoint="x.pth", strict=False))])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        _build(**bad)


def test_bad_input_is_a_clear_error():
    backbone = _build()
    with pytest.raises(ValueError, match="at least 32x32"):
        backbone(torch.randn(1, 3, 16, 64))


@pytest.mark.parametrize("size", sorted(SIZES))
def test_presets_have_the_timm_architectures(size):
    """Each preset is its timm model's stem and stages (built on the meta device: no compute)."""
    with torch.device("meta"):
        backbone = MODELS.build(dict(type="VMambaBackbone", size=size))
        classifier = timm.create_model(SIZES[size], num_classes=0)
    ours = {k: v.shape for k, v in backbone.state_dict().items() if not k.startswith("out_norms.")}
    theirs = {k: v.shape for k, v in classifier.state_dict().items() if not k.startswith("head.")}
    assert ours == theirs
    assert backbone.out_channels == classifier.dims
    last_drop_path = lambda m: getattr(m.stages[3].blocks[-1].drop_path1, "drop_prob", 0.0)  # noqa: E731
    assert last_drop_path(backbone) == last_drop_path(classifier)  # the preset's drop_path_rate too


# ----- training behaviour -----
@pytest.mark.parametrize("frozen_stages", [-1, 0, 2, 4])
def test_frozen_stages_and_gradients(frozen_stages):
    """Frozen parts: no trainable params, eval mode after .train(); every other param gets a gradient."""
    backbone = _build(frozen_stages=frozen_stages)  # drop path 0: a dropped branch would get no gradient
    backbone.train()
    frozen_prefixes = () if frozen_stages < 0 else (
        "stem.", *(f"stages.{i}." for i in range(frozen_stages)), *(f"out_norms.{i}." for i in range(frozen_stages)))
    outs = backbone(torch.randn(1, 3, 64, 64))
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    if trainable:
        _loss(outs).backward()
    for name, param in backbone.named_parameters():
        frozen = name.startswith(frozen_prefixes)
        assert param.requires_grad is not frozen, name
        assert (param.grad is None) is frozen, name
        if not frozen:
            assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
    for name, module in backbone.named_modules():
        frozen = f"{name}.".startswith(frozen_prefixes)
        assert module.training is not frozen, name


def test_norm_eval_keeps_norms_in_eval_mode():
    backbone = _build(norm_eval=True).train()
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and not any(m.training for m in norms)
    assert backbone.training and backbone.stages[0].blocks[0].mixer.training
    assert all(p.requires_grad for p in backbone.parameters())  # eval mode, not frozen


def test_with_cp_same_outputs_and_grads():
    plain = _build(drop_path_rate=0.0).train()
    cp = _build(drop_path_rate=0.0, with_cp=True).train()
    cp.load_state_dict(plain.state_dict())
    assert all(stage.grad_checkpointing for stage in cp.stages)
    calls = []
    cp.stages[2].blocks[1].register_forward_pre_hook(lambda *args: calls.append(1))
    x = torch.randn(1, 3, 64, 96)
    results = []
    for model in (plain, cp):
        outs = model(x)
        _loss(outs).backward()
        results.append((outs, {n: p.grad for n, p in model.named_parameters()}))
    assert len(calls) == 2  # the block ran again in backward: really checkpointed
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-5, atol=1e-6, msg=name)


# ----- loading -----
@pytest.mark.parametrize("fmt", ["bare", "timm_state_dict", "init_cfg_list"])
def test_load_our_classifier_checkpoint(tmp_path, fmt):
    """Our classifier (with head): the backbone's outputs are its stage outputs through fresh LayerNorms."""
    classifier = timm.create_model("test_vmamba", num_classes=7).eval()
    classifier.load_state_dict(_perturbed(classifier.state_dict()))
    path = tmp_path / "cls.pth"
    sd = classifier.state_dict()
    torch.save({"state_dict": sd, "epoch": 3} if fmt == "timm_state_dict" else sd, path)
    pretrained = dict(type="Pretrained", checkpoint=str(path))
    init_cfg = [dict(type="Constant", val=0.5, layer="LayerNorm"), pretrained] if fmt == "init_cfg_list" else pretrained
    backbone = _build(init_cfg=init_cfg)
    backbone.init_weights()
    backbone.eval()
    for key, value in backbone.state_dict().items():
        if not key.startswith("out_norms."):
            assert torch.equal(value, sd[key]), key
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        outs = backbone(x)
        stages = classifier.forward_intermediates(x, intermediates_only=True)
    if fmt == "init_cfg_list":  # the other initialiser ran first; the file's weights overwrote it
        assert torch.all(backbone.out_norms["0"].weight == 0.5)
    else:
        for out, stage in zip(outs, stages):
            torch.testing.assert_close(out, _ln(stage), rtol=1e-5, atol=1e-5)


def test_load_original_release_file_model_vs_ema(tmp_path, v2_ratio1):
    """An original-release ImageNet file ({'model', 'model_ema'}, 'backbone.' prefix): use_ema picks the
    weights; with 'model' the stage outputs equal the original code's (reference data)."""
    sd = v2_ratio1["state_dict"]["model"]
    ema = _perturbed(sd)
    path = tmp_path / "orig.pth"
    prefixed = lambda d: {"backbone." + k: v for k, v in d.items()}  # noqa: E731
    torch.save({"model": prefixed(sd), "model_ema": prefixed(ema), "epoch": 10}, path)
    dims32 = dict(dims=32, depths=(1, 1, 2, 1))
    backbone = _build(**dims32, init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    backbone.init_weights()
    assert torch.equal(backbone.stem.conv1.weight, sd["patch_embed.0.weight"])
    assert torch.equal(backbone.stages[1].downsample.conv.weight, sd["layers.0.downsample.1.weight"])
    x = v2_ratio1["inputs"]["x_64x96"]
    with torch.no_grad():
        outs = backbone.eval()(x)
    for i, out in enumerate(outs):
        torch.testing.assert_close(out, _ln(v2_ratio1["outputs"][f"x_64x96_stage{i}"]), rtol=1e-4, atol=1e-4)

    ema_backbone = _build(**dims32, init_cfg=dict(type="Pretrained", checkpoint=str(path), use_ema=True))
    ema_backbone.init_weights()
    assert torch.equal(ema_backbone.stem.conv1.weight, ema["patch_embed.0.weight"])
    assert torch.equal(ema_backbone.stages[2].blocks[1].mixer.A_logs, ema["layers.2.blocks.1.op.A_logs"])

    no_ema = tmp_path / "no_ema.pth"
    torch.save({"model": sd}, no_ema)
    with pytest.raises(KeyError, match="model_ema"):
        _build(**dims32).load_pretrained(str(no_ema), use_ema=True)


def test_load_original_vanilla_file_matches_reference(reference_dir):
    """The first release's layout (patch stem that floors, patch merging, z gate) through the backbone."""
    data = torch.load(reference_dir / "parity_mini_v0.pt", map_location="cpu", weights_only=True)
    backbone = MODELS.build(dict(type="VMambaBackbone", size="vanilla_tiny", dims=32, depths=(1, 1, 2, 1)))
    backbone.load_pretrained(data["state_dict"])
    with torch.no_grad():
        outs = backbone.eval()(data["inputs"]["x_64x96"])
    for i, out in enumerate(outs):
        torch.testing.assert_close(out, _ln(data["outputs"][f"x_64x96_stage{i}"]), rtol=1e-4, atol=1e-4)


def test_load_original_detector_checkpoint_maps_outnorms(tmp_path, v2_ratio1):
    """A whole-detector file of the original's detection backbone (backbone.outnorm<i>, neck.*, ...)."""
    sd = {k: v for k, v in v2_ratio1["state_dict"]["model"].items() if not k.startswith("classifier.")}
    norms = {f"outnorm{i}.{p}": torch.randn(32 * 2 ** i) for i in range(4) for p in ("weight", "bias")}
    whole = {**{"backbone." + k: v for k, v in {**sd, **norms}.items()},
             "neck.lateral_convs.0.conv.weight": torch.randn(8, 32, 1, 1), "rpn_head.rpn_cls.bias": torch.randn(3)}
    path = tmp_path / "mask_rcnn.pth"
    torch.save({"state_dict": whole, "meta": {"epoch": 12}}, path)
    backbone = _build(dims=32, depths=(1, 1, 2, 1), out_indices=(1, 2, 3))
    backbone.load_pretrained(str(path))
    assert torch.equal(backbone.out_norms["2"].weight, norms["outnorm2.weight"])
    assert torch.equal(backbone.out_norms["3"].bias, norms["outnorm3.bias"])
    assert torch.equal(backbone.stages[3].blocks[0].mixer.Ds, sd["layers.3.blocks.0.op.Ds"])
    # and our own detector checkpoints (backbone.stem..., backbone.out_norms...) round-trip
    again = _build(dims=32, depths=(1, 1, 2, 1), out_indices=(1, 2, 3))
    again.load_pretrained({"state_dict": {"backbone." + k: v for k, v in backbone.state_dict().items()}})
    for key, value in backbone.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_checkpoint_of_other_architecture_raises(tmp_path, reference_dir):
    """Another architecture (ssm_ratio 2; vanilla; depths) or a non-VMamba file never loads silently."""
    ratio2 = torch.load(reference_dir / "parity_mini_v2_ratio2.pt", map_location="cpu", weights_only=True)
    backbone = _build(dims=32, depths=(1, 1, 2, 1))
    before = backbone.stem.conv1.weight.clone()
    with pytest.raises(CheckpointMismatchError, match="ssm_ratio=2") as err:
        backbone.load_pretrained(ratio2["state_dict"])
    assert "ssm_ratio=1" in str(err.value)  # what the backbone expects
    assert torch.equal(backbone.stem.conv1.weight, before)  # nothing was loaded
    other_depths = timm.create_model("test_vmamba", depths=(1, 1, 3, 1)).state_dict()
    with pytest.raises(CheckpointMismatchError, match="depths=1-1-3-1"):
        _build().load_pretrained(other_depths)
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.randn(8, 3, 7, 7), "fc.weight": torch.randn(10, 8)}}, path)
    backbone = _build(init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    with pytest.raises(CheckpointMismatchError, match="not a VMamba state dict"):
        backbone.init_weights()
    bad_norms = {**timm.create_model("test_vmamba").state_dict(), "outnorm0.weight": torch.ones(99)}
    with pytest.raises(CheckpointMismatchError, match="output norms"):
        _build().load_pretrained(bad_norms)


def test_missing_checkpoint_file_raises():
    backbone = _build(init_cfg=dict(type="Pretrained", checkpoint="/nonexistent/vssm.pth"))
    with pytest.raises(FileNotFoundError, match="vssm.pth"):
        backbone.init_weights()


def test_init_weights_without_pretrained_is_harmless():
    backbone = _build()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.init_weights()
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
