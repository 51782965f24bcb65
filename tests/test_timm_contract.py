"""The timm model contract, checked on our registered VMamba models.

Uses the tiny ``test_vmamba`` (dims 16..128, depths 1-1-2-1) at 64x64 unless a check needs a real
size; the released sizes are only built on the meta device, except two cheap vmamba_tiny forwards at
224. timm's own tests/test_models.py runs on our names in tests/test_timm_suite.py.
"""
from __future__ import annotations

import copy
import fnmatch

import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models._manipulate import group_parameters
from timm.optim import create_optimizer_v2

import vmamba_zoo  # noqa: F401  (registers the models)

RELEASED = ["vmamba_tiny", "vmamba_small", "vmamba_base",
            "vmamba_vanilla_tiny", "vmamba_vanilla_small", "vmamba_vanilla_base"]
MIXER_VARIANTS = ["vmamba_tiny_mamba", "vmamba_tiny_lstm", "vmamba_tiny_xlstm", "vmamba_tiny_attn"]  # untrained
ALL_NAMES = RELEASED + ["test_vmamba"] + MIXER_VARIANTS
RELEASES_URL = "https://github.com/MzeroMiko/VMamba/releases/download/"
TEST_DIMS = [16, 32, 64, 128]  # test_vmamba's stage widths
# first-release layout on test_vmamba's sizes: patch stem, patch merging, z gate, no MLP
VANILLA_STYLE = dict(stem_type="patch", downsample_type="patch_merging", z_gate=True, d_state=4, mlp_ratio=0)


def _make(name="test_vmamba", **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs)


def _image(batch=2, size=(64, 64), chans=3, **kwargs):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, chans, *size, generator=generator, **kwargs)


def _stage_sizes(model, x):
    return [tuple(t.shape[-2:]) for t in model.forward_intermediates(x, intermediates_only=True)]


@pytest.fixture(scope="module")
def model():
    """An eval-mode test_vmamba, shared by read-only checks."""
    return _make().eval()


# ----------------------------------------------------------------------------------------------------------
# registration and default configs
# ----------------------------------------------------------------------------------------------------------
def test_all_names_registered():
    assert sorted(timm.list_models("*vmamba*")) == sorted(ALL_NAMES)
    # weights exist for the released names only (test_vmamba's tag is 'untrained')
    assert sorted(timm.list_models("*vmamba*", pretrained=True)) == sorted(f"{n}.in1k" for n in RELEASED)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_default_cfg(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    cfg = model.pretrained_cfg
    size = 160 if name == "test_vmamba" else 224
    assert cfg["input_size"] == (3, size, size)
    assert cfg["test_input_size"] == (3, size, size)
    assert cfg["pool_size"] == (size // 32, size // 32)
    assert cfg["min_input_size"] == (3, 32, 32)
    assert cfg["crop_pct"] == (0.95 if name == "test_vmamba" else 0.875)
    assert cfg["interpolation"] == "bicubic"
    assert tuple(cfg["mean"]) == IMAGENET_DEFAULT_MEAN and tuple(cfg["std"]) == IMAGENET_DEFAULT_STD
    assert cfg["num_classes"] == 1000 == model.num_classes
    assert model.in_chans == cfg["input_size"][0]
    state_dict = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state_dict
    assert state_dict[cfg["first_conv"] + ".weight"].shape[1] == 3
    assert cfg["classifier"] + ".weight" in state_dict and cfg["classifier"] + ".bias" in state_dict
    assert state_dict[cfg["classifier"] + ".weight"].shape == (1000, model.num_features)
    if name in RELEASED:
        assert cfg["url"].startswith(RELEASES_URL) and cfg["url"].endswith(".pth")
        assert cfg["license"] == "mit"
    else:
        assert not cfg.get("url")
    # pool_size is what forward_features gives at input_size (shapes only: meta tensors)
    features = model.forward_features(torch.empty(1, *cfg["input_size"], device="meta"))
    assert features.shape == (1, *cfg["pool_size"], model.num_features)
    # resolve_data_config (what timm's train/validate scripts use) reads these
    data_cfg = timm.data.resolve_data_config(model=model)
    assert data_cfg["input_size"] == cfg["input_size"] and data_cfg["crop_pct"] == cfg["crop_pct"]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_feature_info_of_every_name(name):
    """features_only on the meta device: 4 stages at strides 4..32 with the widths of the config."""
    with torch.device("meta"):
        model = timm.create_model(name, features_only=True)
        outs = model(torch.empty(1, 3, 64, 96))
    dims = model.feature_info.channels()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert dims == [dims[0] * 2 ** i for i in range(4)] and dims[0] in (16, 96, 128)
    assert [tuple(o.shape) for o in outs] == [(1, c, 64 // r, 96 // r) for c, r in zip(dims, [4, 8, 16, 32])]


# ----------------------------------------------------------------------------------------------------------
# constructor arguments
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_chans", [1, 5])
def test_in_chans(in_chans):
    model = _make(in_chans=in_chans).eval()
    assert model.in_chans == in_chans
    assert model.stem.conv1.weight.shape[1] == in_chans
    with torch.no_grad():
        assert model(_image(chans=in_chans)).shape == (2, 1000)


def test_in_chans_vanilla_layout():
    model = _make(in_chans=1, **VANILLA_STYLE).eval()
    assert model.stem.conv.weight.shape[1] == 1
    with torch.no_grad():
        assert model(_image(chans=1)).shape == (2, 1000)


def test_num_classes(model):
    x = _image()
    with torch.no_grad():
        assert _make(num_classes=7).eval()(x).shape == (2, 7)
        headless = _make(num_classes=0).eval()
        assert headless.num_classes == 0 and isinstance(headless.get_classifier(), torch.nn.Identity)
        assert "head.fc.weight" not in headless.state_dict()
        assert headless(x).shape == (2, headless.num_features)
        # same weights as `model` without its classifier: the output is model's pre-logits
        headless.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head.fc.")})
        torch.testing.assert_close(headless(x), model.forward_head(model.forward_features(x), pre_logits=True))


def test_global_pool():
    x = _image()
    with torch.no_grad():
        avg = _make(num_classes=0, global_pool="avg").eval()
        mx = _make(num_classes=0, global_pool="max").eval()
        none = _make(num_classes=0, global_pool="").eval()
        normed = avg.head.norm(avg.forward_features(x))
        torch.testing.assert_close(avg(x), normed.mean((1, 2)))
        torch.testing.assert_close(mx(x), normed.amax((1, 2)))
        # no pooling: the normalised NHWC map, 4D
        out = none(x)
        assert out.shape == (2, 2, 2, none.num_features)
        torch.testing.assert_close(out, normed)
        # with a classifier and no pooling the classifier runs per position (as timm's NHWC models)
        assert _make(num_classes=7, global_pool="").eval()(x).shape == (2, 2, 2, 7)


def test_concat_pooling_refused():
    with pytest.raises(AssertionError, match="catavgmax"):
        _make(global_pool="catavgmax")
    with pytest.raises(AssertionError, match="catavgmax"):
        _make().reset_classifier(7, "catavgmax")


def _assert_random_in_train_only(model):
    x = _image()
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


def test_drop_rate():
    model = _make(drop_rate=0.5)
    assert model.head.drop.p == 0.5
    _assert_random_in_train_only(model)


def test_drop_path_rate():
    default = _make()
    assert not any(isinstance(m, timm.layers.DropPath) for m in default.modules())  # test_vmamba: 0
    model = _make(drop_path_rate=0.3)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for stage in model.stages for b in stage.blocks]
    assert isinstance(model.stages[0].blocks[0].drop_path1, torch.nn.Identity)  # rate 0 at the first block
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    assert rates == sorted(rates) and len(rates) == sum(model.depths)
    # released defaults
    with torch.device("meta"):
        tiny = timm.create_model("vmamba_tiny")
    assert tiny.stages[3].blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    _assert_random_in_train_only(model)


def test_unknown_kwarg_raises_type_error():
    with pytest.raises(TypeError):
        timm.create_model("test_vmamba", not_a_model_arg=1)
    with pytest.raises(TypeError):
        timm.create_model("vmamba_tiny", pretrained=False, not_a_model_arg=1, device="meta")


# ----------------------------------------------------------------------------------------------------------
# forward_features / forward_head / classifier
# ----------------------------------------------------------------------------------------------------------
def test_forward_features_and_head(model):
    x = _image(size=(160, 160))  # the config's input_size
    with torch.no_grad():
        features = model.forward_features(x)
        assert model.output_fmt == "NHWC"
        assert features.shape == (2, *model.pretrained_cfg["pool_size"], model.num_features)
        assert model.num_features == model.head_hidden_size == TEST_DIMS[-1]
        pre = model.forward_head(features, pre_logits=True)
        assert pre.shape == (2, model.num_features)
        torch.testing.assert_close(model.forward_head(features), model(x))
        torch.testing.assert_close(model.get_classifier()(pre), model(x))


def test_released_size_forward_at_224():
    """The one full-size forward: vmamba_tiny at its input size (about a second)."""
    model = _make("vmamba_tiny").eval()
    with torch.no_grad():
        final, taps = model.forward_intermediates(_image(batch=1, size=(224, 224)))
        logits = model.forward_head(final)
    assert final.shape == (1, 7, 7, 768) and logits.shape == (1, 1000)
    assert [tuple(t.shape) for t in taps] == [(1, 96, 56, 56), (1, 192, 28, 28), (1, 384, 14, 14), (1, 768, 7, 7)]
    assert torch.isfinite(logits).all()


def test_reset_classifier():
    model = _make(global_pool="max").eval()
    x = _image()
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(11)
        assert model.num_classes == 11
        fc = model.get_classifier()
        assert isinstance(fc, torch.nn.Linear) and fc.out_features == 11 and fc.in_features == model.num_features
        assert model(x).shape == (2, 11)
        # global_pool=None keeps the pooling ('max')
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), pre)
        # new modules follow eval mode
        assert not any(m.training for m in model.modules())
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == (2, model.num_features)
        model.reset_classifier(0, "")
        assert model(x).shape == (2, 2, 2, model.num_features)
        model.reset_classifier(3, "avg")
        assert model(x).shape == (2, 3)


def test_reset_classifier_keeps_device_and_dtype():
    model = _make().to(torch.float64)
    model.reset_classifier(5)
    assert model.get_classifier().weight.dtype == torch.float64
    with torch.no_grad():
        assert model(_image(dtype=torch.float64)).dtype == torch.float64
    meta = timm.create_model("test_vmamba", device="meta")
    meta.reset_classifier(4)
    assert meta.get_classifier().weight.device.type == "meta"
    assert meta.get_classifier().weight.shape == (4, meta.num_features)


# ----------------------------------------------------------------------------------------------------------
# optimizer-facing API
# ----------------------------------------------------------------------------------------------------------
def test_no_weight_decay_patterns():
    model = _make()
    patterns = model.no_weight_decay()
    names = [n for n, _ in model.named_parameters()]
    for pattern in patterns:
        assert any(fnmatch.fnmatch(n, pattern) for n in names), f"{pattern!r} matches no parameter"
    ssm = [n for n in names if n.endswith((".A_logs", ".Ds"))]
    assert len(ssm) == 2 * sum(model.depths)
    assert all(any(fnmatch.fnmatch(n, p) for p in patterns) for n in ssm)
    # nothing else is matched by the patterns
    assert {n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)} == set(ssm)


def test_create_optimizer_puts_ssm_params_in_zero_decay_group():
    model = _make()
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    by_id = {id(p): n for n, p in model.named_parameters()}
    decay_of = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            decay_of[by_id[id(p)]] = group["weight_decay"]
    assert set(decay_of) == set(by_id.values())
    for name, decay in decay_of.items():
        if name.endswith((".A_logs", ".Ds")):
            assert decay == 0.0, name  # A_logs is 2D: only no_weight_decay() keeps it out of decay
    assert decay_of["stem.conv1.weight"] == 0.05 and decay_of["head.fc.weight"] == 0.05
    assert decay_of["stages.0.blocks.0.mixer.x_proj_weight"] == 0.05


@pytest.mark.parametrize("coarse", [False, True])
def test_group_matcher(coarse):
    model = _make()
    groups = group_parameters(model, model.group_matcher(coarse=coarse))
    names = [n for n, _ in model.named_parameters()]
    grouped = [n for members in groups.values() for n in members]
    assert len(groups) > 1
    assert sorted(grouped) == sorted(names)  # every parameter, once
    # the stem is the first group, the classifier is in the last
    order = sorted(groups)
    assert all(n.startswith("stem.") for n in groups[order[0]])
    assert {"head.fc.bias", "head.fc.weight"} <= set(groups[order[-1]])
    if not coarse:
        # the head's norm joins the last blocks
        assert sorted(groups[order[-1]]) == ["head.fc.bias", "head.fc.weight"]
        assert "head.norm.weight" in groups[order[-2]]
        # stem, one group per block (a stage's downsample joins its first block), classifier
        assert len(groups) == 1 + sum(model.depths) + 1
        assert {"stages.1.downsample.conv.weight", "stages.1.blocks.0.norm1.weight"} <= set(
            next(g for g in groups.values() if "stages.1.blocks.0.norm1.weight" in g))
    else:
        assert len(groups) == 1 + len(model.stages) + 1
    # layer-wise lr decay builds on it
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.8)
    assert len(optimizer.param_groups) > 2


# ----------------------------------------------------------------------------------------------------------
# gradient checkpointing, gradients, dtypes, devices, compile
# ----------------------------------------------------------------------------------------------------------
def test_grad_checkpointing_same_outputs_and_grads():
    base = _make(num_classes=10).train()  # drop_path_rate=0 and no dropout: train mode is deterministic
    ckpt = copy.deepcopy(base)
    ckpt.set_grad_checkpointing(True)
    assert all(stage.grad_checkpointing for stage in ckpt.stages)
    calls = []
    # (non-reentrant checkpointing stops recomputing once it has what backward needs, so hook the
    # block's first module, not the block)
    ckpt.stages[2].blocks[0].norm1.register_forward_hook(lambda *_: calls.append(1))
    x = _image()
    out_base, out_ckpt = base(x), ckpt(x)
    torch.testing.assert_close(out_ckpt, out_base)
    out_base.pow(2).mean().backward()
    out_ckpt.pow(2).mean().backward()
    assert len(calls) == 2  # the block was recomputed in backward: checkpointing is really on
    for (name, p_base), (_, p_ckpt) in zip(base.named_parameters(), ckpt.named_parameters()):
        assert p_ckpt.grad is not None, name
        torch.testing.assert_close(p_ckpt.grad, p_base.grad, msg=name)
    ckpt.set_grad_checkpointing(False)
    assert not any(stage.grad_checkpointing for stage in ckpt.stages)


@pytest.mark.parametrize("kwargs", [{}, VANILLA_STYLE], ids=["v2", "vanilla_style"])
def test_every_parameter_gets_a_gradient(kwargs):
    model = _make(num_classes=10, **kwargs).train()
    out = model(_image())
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weights).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"
        assert p.grad.abs().sum() > 0, f"zero gradient for {name}"


def test_bfloat16_model_forward_backward():
    model = _make(num_classes=10).to(torch.bfloat16).train()
    out = model(_image(dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    out.float().pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.bfloat16, name
        assert torch.isfinite(p.grad.float()).all(), name


def test_bfloat16_autocast():
    model = _make(num_classes=10).train()
    x = _image()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    out.float().pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        reference = model.eval()(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(model(x).float(), reference, rtol=0.1, atol=0.1)


def test_meta_device_construction():
    with torch.device("meta"):
        model = timm.create_model("test_vmamba")
    assert all(p.device.type == "meta" for p in model.parameters())
    factory = timm.create_model("test_vmamba", device="meta")
    tensors = [*factory.parameters(), *factory.buffers()]
    assert tensors and all(t.device.type == "meta" for t in tensors)
    assert factory(torch.empty(2, 3, 64, 64, device="meta")).shape == (2, 1000)
    # materialise and load real weights: same outputs as the model they came from
    real = _make().eval()
    factory.to_empty(device="cpu").load_state_dict(real.state_dict())
    with torch.no_grad():
        x = _image()
        torch.testing.assert_close(factory.eval()(x), real(x))


def test_torch_compile_aot_eager_fullgraph(model):
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = _image()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


# ----------------------------------------------------------------------------------------------------------
# features_only, forward_intermediates, prune_intermediate_layers
# ----------------------------------------------------------------------------------------------------------
def test_features_only(model):
    features = _make(features_only=True).eval()
    assert features.feature_info.channels() == TEST_DIMS
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    x = _image(size=(64, 96))
    with torch.no_grad():
        outs = features(x)
        taps = model.forward_intermediates(x, intermediates_only=True)
    assert len(outs) == 4
    for out, tap, c, r in zip(outs, taps, TEST_DIMS, [4, 8, 16, 32]):
        assert out.shape == (2, c, 64 // r, 96 // r)  # NCHW
        torch.testing.assert_close(out, tap)


def test_features_only_out_indices():
    features = _make(features_only=True, out_indices=(1, 3)).eval()
    assert features.feature_info.channels() == [32, 128]
    assert features.feature_info.reduction() == [8, 32]
    with torch.no_grad():
        outs = features(_image())
    assert [tuple(o.shape) for o in outs] == [(2, 32, 8, 8), (2, 128, 2, 2)]


def test_forward_intermediates(model):
    x = _image(size=(64, 96))
    with torch.no_grad():
        final, taps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [tuple(t.shape) for t in taps] == [(2, c, 64 // r, 96 // r) for c, r in
                                                  zip(TEST_DIMS, [4, 8, 16, 32])]
        # NHWC taps are the same maps, channel-last
        nhwc = model.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
        for a, b in zip(nhwc, taps):
            torch.testing.assert_close(a.permute(0, 3, 1, 2), b)
        # indices: an int takes the last n, a list picks (negative counts from the end)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last_two) == 2
        torch.testing.assert_close(last_two[0], taps[2])
        torch.testing.assert_close(last_two[1], taps[3])
        picked = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        torch.testing.assert_close(picked[0], taps[0])
        torch.testing.assert_close(picked[1], taps[3])
        # norm: the head norm on the last stage's tap only
        normed = model.forward_intermediates(x, norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0], taps[0])
        torch.testing.assert_close(normed[3], model.head.norm(final).permute(0, 3, 1, 2))
        # stop_early: stages after the last index are not run, the returned map is that stage's output
        early_final, early = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert len(early) == 1
        torch.testing.assert_close(early[0], taps[1])
        torch.testing.assert_close(early_final.permute(0, 3, 1, 2), taps[1])
        # intermediates_only returns a list, not a tuple with the final map
        only = model.forward_intermediates(x, intermediates_only=True)
        assert isinstance(only, list) and len(only) == 4
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_prune_intermediate_layers(model, index):
    x = _image()
    last = len(model.stages) - 1
    with torch.no_grad():
        taps = model.forward_intermediates(x, intermediates_only=True)
        pruned = copy.deepcopy(model)
        take = pruned.prune_intermediate_layers([index])
        assert list(take) == [index] and len(pruned.stages) == index + 1
        assert not any(m.training for m in pruned.modules())  # new modules follow eval mode
        selected = pruned.forward_intermediates(x, indices=take, intermediates_only=True)
        torch.testing.assert_close(selected[0], taps[index])
        assert pruned.num_classes == 0
        if index < last:
            # the features now end at the tap (no head norm)
            assert pruned.num_features == pruned.head_hidden_size == TEST_DIMS[index]
            torch.testing.assert_close(pruned.forward_features(x).permute(0, 3, 1, 2), taps[index])
            assert pruned(x).shape == taps[index].permute(0, 2, 3, 1).shape
        else:
            # pruning to the last stage keeps the norm: the headless output is the normalised map
            torch.testing.assert_close(pruned(x).permute(0, 3, 1, 2),
                                       model.forward_intermediates(x, indices=[last], norm=True,
                                                                   intermediates_only=True)[0])
            # prune_head=False keeps the whole output
            keep_head = copy.deepcopy(model)
            keep_head.prune_intermediate_layers([last], prune_head=False)
            torch.testing.assert_close(keep_head(x), model(x))
            # prune_norm=True (features_only without norm): forward_features ends at the tap
            no_norm = copy.deepcopy(model)
            no_norm.prune_intermediate_layers([last], prune_norm=True)
            torch.testing.assert_close(no_norm(x).permute(0, 3, 1, 2), taps[last])
    pruned.train()
    selected = pruned.forward_intermediates(x, indices=take, intermediates_only=True)
    (sum(t.sum() for t in selected) + pruned(x).sum()).backward()  # taps + the (headless) model output
    unused = [n for n, p in pruned.named_parameters() if p.grad is None]
    assert not unused, f"pruned to {index}, parameters without gradient: {unused}"


# ----------------------------------------------------------------------------------------------------------
# input sizes and input errors
# ----------------------------------------------------------------------------------------------------------
def test_odd_input_size_v2_layout(model):
    with torch.no_grad():
        # conv stem and conv downsampling ceil-divide
        assert _stage_sizes(model, _image(batch=1, size=(97, 61))) == [(25, 16), (13, 8), (7, 4), (4, 2)]
        assert model(_image(batch=1, size=(97, 61))).shape == (1, 1000)


def test_odd_input_size_vanilla_layout():
    model = _make(stem_type="patch", downsample_type="patch_merging").eval()
    with torch.no_grad():
        # the 4x4 patch stem floors, patch merging pads odd sizes up
        assert _stage_sizes(model, _image(batch=1, size=(97, 61))) == [(24, 15), (12, 8), (6, 4), (3, 2)]
        assert model(_image(batch=1, size=(97, 61))).shape == (1, 1000)


def test_batch_one_and_minimum_size(model):
    with torch.no_grad():
        assert model(_image(batch=1)).shape == (1, 1000)
        assert _stage_sizes(model, _image(batch=1, size=(32, 32))) == [(8, 8), (4, 4), (2, 2), (1, 1)]
        assert model(_image(batch=3, size=(32, 32))).shape == (3, 1000)
    assert tuple(model.pretrained_cfg["min_input_size"][1:]) == (32, 32)


@pytest.mark.parametrize("x, message", [
    (torch.zeros(1, 4, 64, 64), "3 input channels"),
    (torch.zeros(3, 64, 64), "4D image tensor"),
    (torch.zeros(1, 3, 31, 64), "at least 32x32"),
    (torch.zeros(1, 3, 64, 31), "at least 32x32"),
], ids=["channels", "3d", "height_31", "width_31"])
def test_bad_input_raises_value_error(model, x, message):
    for call in (model, model.forward_features, model.forward_intermediates):
        with pytest.raises(ValueError, match=message):
            call(x)
    features = _make(features_only=True)
    with pytest.raises(ValueError, match=message):
        features(x)
