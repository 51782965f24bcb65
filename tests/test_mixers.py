"""Token mixers (vmamba_zoo.mixers): the interface and registry, each mixer's fast path against its
step-by-step oracle (forward and backward, fp32), scan-direction semantics, odd sizes, per-stage mixer
configs through timm / YAML / mmdet configs, and the registered other-mixer VMamba-T variants."""
from __future__ import annotations

import pytest
import timm
import torch
import yaml

import vmamba_zoo  # noqa: F401  (registers the models)
from vmamba_zoo.analysis.flops import count_macs_torch
from vmamba_zoo.mixers import (SS2D, TokenMixer, create_mixer, get_mixer, list_mixers, mlstm_chunkwise,
                               register_mixer, to_image, to_tokens)
from vmamba_zoo.mixers import reference as ref
from vmamba_zoo.ops.reference.cross_scan import scan_order

# name -> (parameters, MACs at 32x32 by count_macs_torch on the meta device). At 224 they are 5.683, 4.810,
# 4.951 and 5.273 GMACs (VMamba-T 4.906).
VARIANTS = {
    "vmamba_tiny_mamba": (32_497_192, 116_860_416),
    "vmamba_tiny_lstm": (30_132_424, 98_906_496),
    "vmamba_tiny_xlstm": (29_845_576, 99_938_304),
    "vmamba_tiny_attn": (31_381_480, 117_242_304),
}
VMAMBA_TINY_PARAMS = 30_249_064
SMALL = dict(dims=16, depths=(1, 1, 2, 1))  # test_vmamba's sizes, for building the variants cheaply
DIM = 16


def _x(*shape, seed=0, **kwargs):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), **kwargs)


def _mixer(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    if name == "xlstm":  # head width 8: a per-head LayerNorm over 2 channels is too ill-conditioned for fp32
        kwargs = dict(dict(inner_ratio=1.0, num_heads=2), **kwargs)
    mixer = create_mixer(name, DIM, **kwargs)
    if name == "xlstm":  # the gate weights start at zero (xLSTM's init): make the gates depend on the input
        with torch.no_grad():
            mixer.gate_weight.normal_(0.0, 0.3)
    return mixer


# ------------------------------------------------------------------------------------------- registry
def test_registry_lists_every_mixer():
    assert set(list_mixers()) >= {"ss2d", "mamba", "lstm", "xlstm", "attention"}
    for name in list_mixers():
        cls = get_mixer(name)
        assert issubclass(cls, TokenMixer) and cls.name == name
    assert get_mixer("ss2d") is SS2D
    with pytest.raises(ValueError, match="registered: attention"):
        create_mixer("nope", DIM)


def test_register_mixer_checks():
    with pytest.raises(TypeError):
        register_mixer("plain_module")(torch.nn.Identity)
    with pytest.raises(ValueError, match="already registered"):
        @register_mixer("ss2d")
        class Other(TokenMixer):
            def forward(self, x):
                return x
    with pytest.raises(TypeError):  # forward is abstract
        TokenMixer()


def test_a_user_mixer_gets_tokens_with_their_size(monkeypatch):
    """The README's recipe: a TokenMixer subclass registered by name plugs into the backbone and receives each
    stage's tokens with the stage's (H, W), here of an odd 97x61 image."""
    import vmamba_zoo.mixers.base as base
    monkeypatch.setattr(base, "_MIXERS", dict(base._MIXERS))  # leave the registry as it was
    seen = []

    @register_mixer("test_dwconv")
    class DWConv(TokenMixer):
        def __init__(self, dim, proj_drop=0.0, device=None, dtype=None):
            super().__init__()
            self.conv = torch.nn.Conv2d(dim, dim, 7, padding=3, groups=dim, device=device, dtype=dtype)

        def forward_tokens(self, x, size):
            seen.append((tuple(x.shape), tuple(size)))
            return to_tokens(self.conv(to_image(x, size)))[0]

    model = timm.create_model("test_vmamba", mixers="test_dwconv").eval()
    assert isinstance(model.stages[0].blocks[0].mixer, DWConv)
    with torch.no_grad():
        out = model(_x(1, 3, 97, 61))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    assert seen == [((1, 25 * 16, 16), (25, 16)), ((1, 13 * 8, 32), (13, 8)), ((1, 7 * 4, 64), (7, 4)),
                    ((1, 7 * 4, 64), (7, 4)), ((1, 4 * 2, 128), (4, 2))]


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (9, 1), (5, 7)])
@pytest.mark.parametrize("name", ["ss2d", "mamba", "lstm", "xlstm", "attention"])
def test_layout_and_odd_sizes(name, size):
    mixer = _mixer(name, **({"window_size": 4} if name == "attention" else {}))
    x = _x(2, *size, DIM)
    y = mixer(x)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    # the blocks' call: (batch, H*W, C) tokens with their size, the same values in token order
    torch.testing.assert_close(mixer(x.flatten(1, 2), size), y.flatten(1, 2), rtol=0, atol=0)


def test_tokens_need_their_size():
    with pytest.raises(ValueError, match=r"\(batch, H\*W, C\) tokens with their size=\(H, W\); got shape \(2, 35, 16\)"):
        _mixer("ss2d")(_x(2, 35, DIM))


def test_to_image_and_to_tokens_are_views():
    """Convolutions take tokens as an NCHW view of channels-last memory and give it back: no copies."""
    tokens = _x(2, 35, DIM)
    image = to_image(tokens, (5, 7))
    assert image.shape == (2, DIM, 5, 7) and image.is_contiguous(memory_format=torch.channels_last)
    assert image.data_ptr() == tokens.data_ptr()
    torch.testing.assert_close(image[:, :, 2, 3], tokens[:, 2 * 7 + 3], rtol=0, atol=0)
    back, size = to_tokens(image)
    assert size == (5, 7) and back.data_ptr() == tokens.data_ptr() and torch.equal(back, tokens)


# ------------------------------------------------------------------------ fast path == step-by-step oracle
ORACLE_CASES = [
    ("mamba", dict(scan_directions=1), ref.mamba_naive),
    ("mamba", dict(scan_directions=2), ref.mamba_naive),
    ("mamba", dict(scan_directions=4, d_state=4, expand=1.5), ref.mamba_naive),
    ("lstm", dict(scan_directions=1), ref.lstm_naive),
    ("lstm", dict(scan_directions=2, hidden_size=6), ref.lstm_naive),
    ("lstm", dict(scan_directions=4), ref.lstm_naive),
    ("xlstm", dict(scan_directions=1, chunk_size=8), ref.xlstm_naive),
    ("xlstm", dict(scan_directions=1, block_index=1), ref.xlstm_naive),  # reversed (odd block)
    ("xlstm", dict(scan_directions=4, chunk_size=5, num_heads=2), ref.xlstm_naive),
    ("xlstm", dict(cell="slstm", scan_directions=2), ref.xlstm_naive),
    ("xlstm", dict(cell="slstm", block_index=3), ref.xlstm_naive),
    ("xlstm", dict(cell="slstm", scan_directions=4), ref.xlstm_naive),
    ("attention", dict(head_dim=8), ref.attention_naive),
    ("attention", dict(head_dim=8, window_size=3, qk_ratio=0.5), ref.attention_naive),
]


@pytest.mark.parametrize("size", [(5, 7), (1, 6)])
@pytest.mark.parametrize("name, kwargs, oracle", ORACLE_CASES,
                         ids=[f"{n}-{'-'.join(f'{k}{v}' for k, v in kw.items())}" for n, kw, _ in ORACLE_CASES])
def test_fast_path_equals_oracle_forward_backward(name, kwargs, oracle, size):
    mixer = _mixer(name, **kwargs).train()
    x = _x(2, *size, DIM).requires_grad_()
    weights = _x(2, *size, DIM, seed=1)
    fast = mixer(x)
    (fast * weights).sum().backward()
    fast_grads = {n: p.grad.clone() for n, p in mixer.named_parameters()}
    fast_dx = x.grad.clone()
    mixer.zero_grad()
    x.grad = None
    slow = oracle(mixer, x)
    (slow * weights).sum().backward()
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast_dx, x.grad, rtol=1e-4, atol=1e-5)
    for n, p in mixer.named_parameters():
        torch.testing.assert_close(fast_grads[n], p.grad, rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 64])
def test_mlstm_chunkwise_equals_recurrence(chunk_size):
    """Chunkwise (64 >= L: the fully parallel form) = step-by-step, with strongly varying gates."""
    shape = (2, 3, 23)
    q, k, v = (_x(*shape, 8, seed=s, dtype=torch.float64).requires_grad_() for s in range(3))
    ig = (3 * _x(*shape, seed=3, dtype=torch.float64)).requires_grad_()
    fg = (2 * _x(*shape, seed=4, dtype=torch.float64) + 1).requires_grad_()
    inputs = (q, k, v, ig, fg)
    w = _x(*shape, 8, seed=5, dtype=torch.float64)
    fast = mlstm_chunkwise(*inputs, chunk_size=chunk_size)
    grads = torch.autograd.grad((fast * w).sum(), inputs)
    slow = ref.mlstm_recurrent(*inputs)
    slow_grads = torch.autograd.grad((slow * w).sum(), inputs)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads, slow_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


# ------------------------------------------------------------------------------------ LSTM as a custom op
@pytest.mark.parametrize("bidirectional, layers", [(False, 1), (True, 1), (True, 2)])
def test_lstm_op_is_nn_lstm(bidirectional, layers):
    """lstm_scan runs nn.LSTM's kernels: the outputs of its inference kernel and the gradients of its training
    path, bit for bit (the backward recomputes). On some CPUs (seen on AMD EPYC) the two paths differ in the last
    bit, so the forward is compared with nn.LSTM under no_grad, and with its training path to rounding."""
    from vmamba_zoo.ops.lstm import lstm_scan
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 3, num_layers=layers, batch_first=True, bidirectional=bidirectional)
    x = _x(2, 9, 5).requires_grad_()
    weights = list(lstm._flat_weights)
    w = _x(2, 9, 6 if bidirectional else 3, seed=1)
    ours = lstm_scan(x, weights, num_layers=layers, bidirectional=bidirectional)
    theirs = lstm(x)[0]
    with torch.no_grad():
        assert torch.equal(ours, lstm(x)[0])
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    for a, b in zip(torch.autograd.grad((ours * w).sum(), [x, *weights]),
                    torch.autograd.grad((theirs * w).sum(), [x, *weights])):
        assert torch.equal(a, b)
    assert torch.library.opcheck(torch.ops.vmamba_zoo.lstm_fwd, (x, weights, True, layers, bidirectional),
                                 test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_lstm_mixer_compiles_fullgraph():
    """torch.compile(fullgraph=True) traces the LSTM mixer (dynamo refuses nn.LSTM itself); same values and
    gradients as eager up to rounding (AOTAutograd decomposes the LayerNorm). aot_eager: the whole dynamo +
    AOTAutograd path, without inductor's C++ build."""
    mixer = _mixer("lstm", scan_directions=4).train()
    x = _x(2, 5, 7, DIM).requires_grad_()
    w = _x(2, 5, 7, DIM, seed=1)
    eager = mixer(x)
    eager_grads = torch.autograd.grad((eager * w).sum(), [x, *mixer.parameters()])
    compiled = torch.compile(mixer, fullgraph=True, backend="aot_eager")(x)
    grads = torch.autograd.grad((compiled * w).sum(), [x, *mixer.parameters()])
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ which pixels influence which
def _influence(mixer, size, position):
    """Boolean (H, W) map of the input pixels whose change moves the output at ``position`` (row-major)."""
    x = _x(1, *size, DIM).requires_grad_()
    out = mixer(x).reshape(1, -1, DIM)[0, position]
    (grad,) = torch.autograd.grad(out.sum(), x)
    return grad[0].abs().sum(-1) > 0


ONE_DIRECTION = [("mamba", dict(scan_directions=1)), ("lstm", dict(scan_directions=1)),
                 ("xlstm", dict(scan_directions=1)), ("xlstm", dict(scan_directions=1, cell="slstm")),
                 ("xlstm", dict(scan_directions=1, block_index=1)),
                 ("xlstm", dict(scan_directions=1, block_index=1, cell="slstm"))]


@pytest.mark.parametrize("name, kwargs", ONE_DIRECTION, ids=[f"{n}-{kw}" for n, kw in ONE_DIRECTION])
def test_one_direction_is_causal_in_its_scan_order(name, kwargs):
    size, position = (4, 5), 7  # row 1, column 2
    mixer = _mixer(name, **kwargs).eval()
    reverse = getattr(mixer, "reverse", False)
    seen = _influence(mixer, size, position).reshape(-1)
    order = torch.arange(20)
    expected = order >= position if reverse else order <= position
    assert torch.equal(seen, expected)


@pytest.mark.parametrize("name", ["mamba", "lstm", "xlstm"])
def test_more_directions_reach_every_pixel(name):
    size = (4, 5)
    for k in (2, 4):
        mixer = _mixer(name, scan_directions=k).eval()
        assert _influence(mixer, size, 7).all(), k
    # 2 directions are rows both ways: the first pixel sees the last one
    assert _influence(_mixer(name, scan_directions=2).eval(), size, 0)[-1, -1]


def test_scan_orders_match_cross_scan():
    """The oracles visit pixels in scan_order; it is the order of the cross_scan op the fast paths use."""
    from vmamba_zoo.ops import cross_scan
    image = torch.arange(12.0).view(1, 3, 4, 1)
    for k in (1, 2, 4):
        assert torch.equal(cross_scan(image, k, channels_last=True)[0, :, 0].long(), scan_order(3, 4, k))


@pytest.mark.parametrize("height,width", [(3, 5), (4, 4), (1, 7)])
def test_ss2d_projection_scan_order_is_scan_order(height, width):
    """SS2D puts each direction's own projection channels in that direction's scan_order (by views and a flip)."""
    from vmamba_zoo.ops.ss2d import in_scan_order
    for k in (1, 2, 4):
        proj = torch.randn(2, height, width, k, 3)
        flat, order = proj.reshape(2, height * width, k, 3), scan_order(height, width, k)
        expected = torch.stack([flat[:, order[d], d] for d in range(k)], dim=1)
        assert torch.equal(in_scan_order(proj, k), expected), k


def test_ss2d_scan_rejects_projections_of_other_directions():
    from vmamba_zoo.mixers.ss2d import ss2d_scan
    mixer = _mixer("ss2d", scan_directions=4)
    with pytest.raises(ValueError, match="4 directions' projections, scan_directions is 2"):
        ss2d_scan(torch.randn(1, 3, 3, mixer.d_inner), mixer.x_proj_weight, mixer.dt_projs_weight,
                  mixer.dt_projs_bias, mixer.A_logs, mixer.Ds, scan_directions=2)


def test_window_attention_is_local_global_is_not():
    size = (6, 7)
    local = _mixer("attention", window_size=3, pos_conv=False, head_dim=8).eval()
    seen = _influence(local, size, 7 * 4 + 4)  # pixel (4, 4): window rows 3-5, columns 3-5
    expected = torch.zeros(size, dtype=torch.bool)
    expected[3:6, 3:6] = True
    assert torch.equal(seen, expected)
    corner = _influence(local, size, 7 * 5 + 6)  # (5, 6) is in the padded window rows 3-5, columns 6-8
    expected = torch.zeros(size, dtype=torch.bool)
    expected[3:6, 6:] = True
    assert torch.equal(corner, expected)
    assert _influence(_mixer("attention", pos_conv=False, head_dim=8).eval(), size, 0).all()


# ------------------------------------------------------------------------------------ models and configs
PER_STAGE = dict(mixers=("ss2d", "mamba", "xlstm", "attention"),
                 mixer_kwargs=(None, dict(scan_directions=4, d_state=4), dict(cell="mlstm"), dict(window_size=2)))


def _mixer_types(model):
    return [[type(b.mixer).__name__ for b in stage.blocks] for stage in model.stages]


def test_per_stage_mixers_in_a_model():
    torch.manual_seed(0)
    model = timm.create_model("test_vmamba", num_classes=10, **PER_STAGE).train()
    assert _mixer_types(model) == [["SS2D"], ["Mamba"], ["XLSTMMixer", "XLSTMMixer"], ["Attention"]]
    assert model.mixers == PER_STAGE["mixers"]
    assert model.stages[1].blocks[0].mixer.scan_directions == 4
    # Vision-LSTM alternation follows the block index over the whole network (stage 2 holds blocks 2 and 3)
    assert [b.mixer.reverse for b in model.stages[2].blocks] == [False, True]
    out = model(_x(2, 3, 64, 64))
    (out * _x(*out.shape, seed=1)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_ss2d_keys_and_outputs_unchanged_by_the_mixers_option():
    with torch.device("meta"):
        default, explicit = timm.create_model("vmamba_tiny"), timm.create_model("vmamba_tiny", mixers="ss2d")
    assert {k: v.shape for k, v in default.state_dict().items()} == \
           {k: v.shape for k, v in explicit.state_dict().items()}
    assert "stages.2.blocks.7.mixer.x_proj_weight" in default.state_dict()


@pytest.mark.parametrize("bad", [dict(mixers="nope"), dict(mixers=("ss2d",) * 3),
                                 dict(mixer_kwargs=({},) * 3)])
def test_bad_mixer_config(bad):
    with pytest.raises(ValueError):
        timm.create_model("test_vmamba", **bad)


def test_unknown_mixer_option_is_a_type_error():
    with pytest.raises(TypeError):
        timm.create_model("test_vmamba", mixers="lstm", mixer_kwargs=dict(not_an_option=1))


def _architecture(model):
    return _mixer_types(model), {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_config_round_trips_through_yaml():
    """timm's train.py reads model kwargs from YAML: lists, not tuples, come back."""
    model = timm.create_model("test_vmamba", **PER_STAGE)
    text = yaml.safe_dump(dict(model="test_vmamba", model_kwargs=dict(
        mixers=list(model.mixers), mixer_kwargs=[dict(k) for k in model.mixer_kwargs])))
    cfg = yaml.safe_load(text)
    again = timm.create_model(cfg["model"], **cfg["model_kwargs"])
    assert _architecture(again) == _architecture(model)
    assert again.mixers == model.mixers and again.mixer_kwargs == model.mixer_kwargs


def test_config_round_trips_through_an_mmdet_config(tmp_path):
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine.config import Config
    path = tmp_path / "cfg.py"
    path.write_text(
        "custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)\n"
        "model = dict(backbone=dict(type='VMambaBackbone', size='test', out_indices=(1, 2, 3),\n"
        "    mixers=('ss2d', 'mamba', 'xlstm', 'attention'),\n"
        "    mixer_kwargs=(None, dict(scan_directions=4, d_state=4), dict(cell='mlstm'), dict(window_size=2))))\n")
    cfg = Config.fromfile(str(path))
    backbone = DET_MODELS.build(cfg.model.backbone).eval()
    classifier = timm.create_model("test_vmamba", num_classes=0, **PER_STAGE)
    assert _mixer_types(backbone) == _mixer_types(classifier)
    ours = {k: v.shape for k, v in backbone.state_dict().items() if not k.startswith("out_norms.")}
    assert ours == {k: v.shape for k, v in classifier.state_dict().items() if not k.startswith("head.")}
    with torch.no_grad():
        outs = backbone(_x(1, 3, 75, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 10, 8), (1, 64, 5, 4), (1, 128, 3, 2)]


# ------------------------------------------------------------------------------ registered variants
def test_variants_registered_without_weights():
    names = timm.list_models("vmamba_tiny_*")
    assert set(VARIANTS) <= set(names)
    assert not set(VARIANTS) & {n.split(".")[0] for n in timm.list_models("*vmamba*", pretrained=True)}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_params_flops_and_architecture(name):
    with torch.device("meta"):
        model, tiny = timm.create_model(name), timm.create_model("vmamba_tiny")
    params, macs = VARIANTS[name]
    count = sum(p.numel() for p in model.parameters())
    assert count == params and abs(count / VMAMBA_TINY_PARAMS - 1) < 0.10
    # vmamba_tiny's stem, downsampling, norms, MLPs and head: only the mixers differ
    not_mixer = lambda sd: {k: v.shape for k, v in sd.items() if ".mixer." not in k}  # noqa: E731
    assert not_mixer(model.state_dict()) == not_mixer(tiny.state_dict())
    assert model.stages[3].blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    assert count_macs_torch(model, torch.empty(1, 3, 32, 32, device="meta")) == macs


def test_mixer_flops_formulas():
    """How the counters see the mixers (meta device): the LSTM op's formula, attention matmuls natively, our LN
    rule."""
    height, width, dim = 6, 5, DIM
    with torch.device("meta"):
        lstm = create_mixer("lstm", dim, scan_directions=4, hidden_size=8)
        attn = create_mixer("attention", dim, head_dim=8, qk_ratio=0.5, pos_conv=False)
    x = torch.empty(1, height, width, dim, device="meta")
    length, hidden = height * width, 8
    lstm_macs = 4 * length * 4 * hidden * (hidden + hidden)  # 4 directions, 4 gates, input + recurrent
    assert count_macs_torch(lstm, x) == 2 * length * dim * hidden + lstm_macs + 5 * length * hidden
    qk = attn.qk_dim
    qkv, scores_and_values, proj = length * dim * (2 * qk + dim), length * length * (qk + dim), length * dim * dim
    assert count_macs_torch(attn, x) == qkv + scores_and_values + proj


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_timm_contract_small(name):
    """The contract checks of tests/test_timm_contract.py that depend on the mixer, at test size."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, **SMALL).train()
    x = _x(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 10)
    (out * _x(*out.shape, seed=1)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    model.eval()
    with torch.no_grad():
        odd = _x(1, 3, 97, 61)
        taps = model.forward_intermediates(odd, intermediates_only=True)
        assert [tuple(t.shape[-2:]) for t in taps] == [(25, 16), (13, 8), (7, 4), (4, 2)]
        features = timm.create_model(name, features_only=True, out_indices=(1, 3), **SMALL).eval()
        features.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head")},
                                 strict=False)
        assert [o.shape[1] for o in features(x)] == [32, 128]
    with torch.device("meta"):
        meta = timm.create_model(name, **SMALL)
    assert meta(torch.empty(1, 3, 64, 64, device="meta")).shape == (1, 1000)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_as_mm_backbone(name):
    from mmengine.registry import MODELS
    import vmamba_zoo.mm  # noqa: F401
    size = name.replace("vmamba_", "")
    backbone = MODELS.build(dict(type="VMambaBackbone", size=size, out_indices=(0, 2), **SMALL)).train()
    outs = backbone(_x(1, 3, 70, 90))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 18, 23), (1, 64, 5, 6)]
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in backbone.parameters())


def test_eager_paths_keep_no_more_for_the_backward_than_the_custom_ops(monkeypatch):
    """A VMamba training forward under autocast: the ops' eager paths (plain eager mode) keep the same activation
    bytes for the backward as the custom ops do, no float32 copies of half maps, no scan-order copies beyond theirs."""
    import importlib

    modules = [importlib.import_module(f"vmamba_zoo.ops.{name}") for name in ("layer_norm", "ss2d")]
    torch.manual_seed(0)
    model = timm.create_model("test_vmamba", dims=24).train()
    x = torch.randn(2, 3, 64, 48)

    def saved_bytes():
        storages = {}

        def pack(t):
            if not isinstance(t, torch.nn.Parameter):
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model(x)
        return sum(storages.values())

    eager = saved_bytes()
    for module in modules:
        monkeypatch.setattr(module, "plain_eager", lambda tensors: False)
    custom_ops = saved_bytes()
    assert eager <= custom_ops * 1.01, (eager, custom_ops)  # 1%: the backward's small index tensors
