"""Tests of the ops layer (vmamba_zoo.ops): selective scan, cross-scan/merge, custom-op plumbing, dispatch.

Oracles: ``selective_scan_naive`` (step-by-step loop, autograd for gradients) and explicit pixel-order
loops for cross-scan/merge. Everything is small so the file runs in seconds on 2 CPU cores.
"""
from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn as nn

from vmamba_zoo.ops import backends, cross_merge, cross_scan, reference, register_backend, selective_scan
from vmamba_zoo.ops.reference import scan_order, selective_scan_naive

OPTIONAL = ("D", "z", "delta_bias")
GRAD_NAMES = ("u", "delta", "A", "B", "C") + OPTIONAL
SS_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")  # positional order of the op


# ----------------------------------------------------------------------------------------- helpers
def make_inputs(*, batch=2, groups=2, dim=3, d_state=4, length=7, dtype=torch.float64, softplus=False,
                with_D=True, with_z=True, with_bias=True, seed=0, device="cpu"):
    """Realistic selective-scan inputs: A < 0, delta in a typical (0.05, 0.6) range after softplus/bias."""
    g = torch.Generator().manual_seed(seed)
    channels = groups * dim

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    if softplus:  # raw delta around -1.5 -> softplus ~0.2, as in Mamba's dt init
        delta, delta_bias = 0.5 * randn(batch, channels, length) - 1.5, 0.3 * randn(channels)
    else:  # already positive step sizes, a small positive bias
        delta = 0.05 + 0.5 * torch.rand(batch, channels, length, generator=g, dtype=torch.float64)
        delta_bias = 0.05 * torch.rand(channels, generator=g, dtype=torch.float64)
    t = dict(u=randn(batch, channels, length), delta=delta, A=-torch.exp(0.5 * randn(channels, d_state)),
             B=randn(batch, groups, d_state, length), C=randn(batch, groups, d_state, length),
             D=randn(channels), z=randn(batch, channels, length), delta_bias=delta_bias)
    t = {k: v.to(device=device, dtype=dtype) for k, v in t.items()}
    for name, keep in (("D", with_D), ("z", with_z), ("delta_bias", with_bias)):
        if not keep:
            t[name] = None
    return t


def present(t):
    """Names of the tensors actually given (optional ones may be None)."""
    return [k for k in GRAD_NAMES if t[k] is not None]


def run_with_grads(fn, t, dout, **kwargs):
    """y = fn(**t) and the gradients of <y, dout> w.r.t. every present input (leaves are fresh copies)."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in t.items() if v is not None}
    y = fn(**{k: leaves.get(k) for k in t}, **kwargs)
    grads = torch.autograd.grad(y, [leaves[k] for k in present(t)], grad_outputs=dout.to(y.dtype))
    return y, dict(zip(present(t), grads))


def assert_matches_oracle(t, softplus, rtol, atol, **kwargs):
    """selective_scan on ``t`` equals the float64 naive oracle in value and in every gradient."""
    t64 = {k: None if v is None else v.double() for k, v in t.items()}
    dout = torch.randn(t["u"].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y, grads = run_with_grads(selective_scan, t, dout, delta_softplus=softplus, **kwargs)
    y_ref, grads_ref = run_with_grads(selective_scan_naive, t64, dout, delta_softplus=softplus)
    torch.testing.assert_close(y.double(), y_ref, rtol=rtol, atol=atol)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert grads[name].dtype == t[name].dtype, name
        torch.testing.assert_close(grads[name].double(), grads_ref[name], rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"d{name}: {m}")
    return y, grads


def explicit_order(height, width, directions):
    """Row-major pixel index visited at each step, written out with Python loops (independent of scan_order)."""
    rows = [h * width + w for h in range(height) for w in range(width)]
    cols = [h * width + w for w in range(width) for h in range(height)]
    return {1: [rows], 2: [rows, rows[::-1]], 4: [rows, cols, rows[::-1], cols[::-1]]}[directions]


def to_chw(x, channels_last):
    return x.permute(0, 3, 1, 2) if channels_last else x


def cross_scan_oracle(x, directions, channels_last):
    """(batch, K, C, L): out[:, k, :, s] = image pixel visited at step s of direction k."""
    x = to_chw(x, channels_last)
    batch, channels, height, width = x.shape
    flat = x.reshape(batch, channels, height * width)
    out = x.new_zeros(batch, directions, channels, height * width)
    for k, order in enumerate(explicit_order(height, width, directions)):
        for step, pixel in enumerate(order):
            out[:, k, :, step] = flat[:, :, pixel]
    return out


def cross_merge_oracle(y, height, width, directions, channels_last):
    """Sum over directions and steps of y's values written back to the pixels they came from."""
    batch, _, channels, _ = y.shape
    flat = y.new_zeros(batch, channels, height * width)
    for k, order in enumerate(explicit_order(height, width, directions)):
        for step, pixel in enumerate(order):
            flat[:, :, pixel] += y[:, k, :, step]
    out = flat.view(batch, channels, height, width)
    return out.permute(0, 2, 3, 1) if channels_last else out


def image(height, width, channels_last, batch=2, channels=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, height, width, channels) if channels_last else (batch, channels, height, width)
    return torch.randn(*shape, generator=g, dtype=dtype)


def ss_op_args(t, softplus=False, fp32_output=True, backend="auto"):
    """Positional arguments of torch.ops.vmamba_zoo.selective_scan_fwd."""
    return tuple(t[k] for k in SS_ARGS) + (softplus, fp32_output, backend)


@pytest.fixture(autouse=True)
def clean_dispatch(monkeypatch):
    """Every test sees only the built-in backends, no VMAMBA_ZOO_* env vars, and a fresh warn-once set."""
    for name in list(os.environ):
        if name.startswith("VMAMBA_ZOO_"):
            monkeypatch.delenv(name)
    saved_registry = {op: dict(specs) for op, specs in backends._REGISTRY.items()}
    saved_warned = set(backends._WARNED)
    backends._WARNED.clear()
    yield
    backends._REGISTRY.clear()
    backends._REGISTRY.update(saved_registry)
    backends._WARNED.clear()
    backends._WARNED.update(saved_warned)


# ------------------------------------------------------------------------------- selective scan
@pytest.mark.parametrize("length", [1, 2, 7, 33, 100])
@pytest.mark.parametrize("d_state", [1, 4, 16])
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("softplus", [False, True], ids=["raw_dt", "softplus"])
@pytest.mark.parametrize("with_D_bias", [False, True], ids=["noD", "D_bias"])
@pytest.mark.parametrize("with_z", [False, True], ids=["noz", "z"])
def test_selective_scan_float64_matches_naive(length, d_state, groups, softplus, with_D_bias, with_z):
    """Forward and all gradients of selective_scan equal the step-by-step oracle to 1e-10 in float64."""
    t = make_inputs(groups=groups, dim=2, d_state=d_state, length=length, softplus=softplus,
                    with_D=with_D_bias, with_bias=with_D_bias, with_z=with_z, seed=length * 31 + d_state)
    y, _ = assert_matches_oracle(t, softplus, rtol=1e-10, atol=1e-10)
    assert y.dtype == torch.float64 and y.shape == t["u"].shape


@pytest.mark.parametrize("with_D_only", [True, False], ids=["D_only", "bias_only"])
def test_selective_scan_D_and_bias_independently(with_D_only):
    """D without delta_bias and delta_bias without D each match the oracle (forward and gradients)."""
    t = make_inputs(groups=2, length=9, softplus=True, with_D=with_D_only, with_bias=not with_D_only)
    assert_matches_oracle(t, True, rtol=1e-10, atol=1e-10)


def test_selective_scan_B_and_C_with_different_group_counts():
    """B and C may be shared by different numbers of groups; forward and gradients still match the oracle."""
    t = make_inputs(groups=4, dim=1, length=6, softplus=True)
    t["B"] = t["B"][:, :1].contiguous()  # one group for B, four for C
    y, grads = assert_matches_oracle(t, True, rtol=1e-10, atol=1e-10)
    assert grads["B"].shape == t["B"].shape and grads["C"].shape == t["C"].shape


@pytest.mark.parametrize("length", [7, 100])
def test_selective_scan_float32_close_to_float64_oracle(length):
    """float32 inputs give a float32 result and gradients within 1e-4 of the float64 oracle."""
    t = make_inputs(groups=2, d_state=8, length=length, softplus=True, dtype=torch.float32)
    y, grads = assert_matches_oracle(t, True, rtol=1e-4, atol=1e-4)
    assert y.dtype == torch.float32


@pytest.mark.parametrize("fp32_output", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_selective_scan_low_precision(dtype, fp32_output):
    """fp16/bf16 inputs run forward and backward; output is float32 or the input dtype as asked, values right."""
    t = make_inputs(groups=2, length=12, softplus=True, dtype=dtype)
    dout = torch.randn(t["u"].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y, grads = run_with_grads(selective_scan, t, dout, delta_softplus=True, fp32_output=fp32_output)
    t64 = {k: v.double() for k, v in t.items()}  # the same (rounded) values, in float64
    y_ref, grads_ref = run_with_grads(selective_scan_naive, t64, dout, delta_softplus=True)
    assert y.dtype == (torch.float32 if fp32_output else dtype)
    if fp32_output:  # computed in float32 from the rounded inputs: float32 accuracy
        torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
    else:  # the float32 result rounded once to the input dtype
        torch.testing.assert_close(y, y_ref.to(dtype), rtol=2 ** -7 if dtype == torch.bfloat16 else 2e-3, atol=1e-3)
    for name, g in grads.items():
        assert g.dtype == dtype, name
        scale = grads_ref[name].abs().max().item()
        torch.testing.assert_close(g.double(), grads_ref[name], rtol=2e-2, atol=2e-2 * scale, msg=name)


def test_selective_scan_mixed_dtypes_follow_state_precision():
    """float32 u with float64 A computes and returns float64 (fp32_output), like the reference says."""
    t = make_inputs(groups=2, length=5)
    t["u"], t["delta"] = t["u"].float(), t["delta"].float()
    y = selective_scan(**t)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, selective_scan_naive(**t), rtol=1e-6, atol=1e-6)


def test_selective_scan_gradcheck():
    """torch.autograd.gradcheck passes for every input of a tiny float64 scan with all options on."""
    t = make_inputs(batch=1, groups=2, dim=1, d_state=2, length=4, softplus=True)
    inputs = tuple(t[k].clone().requires_grad_() for k in SS_ARGS)

    def fn(*args):
        return selective_scan(*args, delta_softplus=True)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


def test_linear_scan_matches_loop():
    """The parallel linear_scan equals the sequential recurrence h_t = a_t h_{t-1} + b_t for many lengths."""
    g = torch.Generator().manual_seed(0)
    for length in (1, 2, 3, 5, 8, 13, 64):
        a = torch.rand(3, length, generator=g, dtype=torch.float64)
        b = torch.randn(3, length, generator=g, dtype=torch.float64)
        h, expected = torch.zeros(3, dtype=torch.float64), []
        for i in range(length):
            h = a[:, i] * h + b[:, i]
            expected.append(h)
        torch.testing.assert_close(reference.linear_scan(a, b), torch.stack(expected, -1), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- cross scan / merge
SHAPES = [(1, 1), (3, 5), (7, 2), (6, 6)]


@pytest.mark.parametrize("directions", [1, 2, 4])
@pytest.mark.parametrize("height,width", SHAPES)
def test_scan_order_matches_explicit_loops(height, width, directions):
    """scan_order lists rows, columns and their reverses exactly as documented."""
    expected = torch.tensor(explicit_order(height, width, directions))
    assert torch.equal(scan_order(height, width, directions), expected)


@pytest.mark.parametrize("channels_last", [False, True], ids=["chw", "hwc"])
@pytest.mark.parametrize("directions", [1, 2, 4])
@pytest.mark.parametrize("height,width", SHAPES)
def test_cross_scan_and_merge_match_oracle(height, width, directions, channels_last):
    """cross_scan gathers pixels in scan order; cross_merge scatters and sums them back (explicit loops)."""
    x = image(height, width, channels_last)
    xs = cross_scan(x, directions, channels_last)
    assert xs.shape == (2, directions, 3, height * width) and xs.is_contiguous()
    torch.testing.assert_close(xs, cross_scan_oracle(x, directions, channels_last), rtol=0, atol=0)

    y = torch.randn(2, directions, 3, height * width, dtype=torch.float64)
    merged = cross_merge(y, height, width, directions, channels_last)
    assert merged.shape == x.shape and merged.is_contiguous()
    torch.testing.assert_close(merged, cross_merge_oracle(y, height, width, directions, channels_last))


@pytest.mark.parametrize("channels_last", [False, True], ids=["chw", "hwc"])
@pytest.mark.parametrize("directions", [1, 2, 4])
@pytest.mark.parametrize("height,width", [(3, 5), (6, 6)])
def test_cross_merge_is_adjoint_of_cross_scan(height, width, directions, channels_last):
    """<cross_scan(x), y> == <x, cross_merge(y)>: merge is the transpose of scan."""
    x = image(height, width, channels_last, seed=1)
    y = torch.randn(2, directions, 3, height * width, dtype=torch.float64)
    lhs = (cross_scan(x, directions, channels_last) * y).sum()
    rhs = (x * cross_merge(y, height, width, directions, channels_last)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True], ids=["chw", "hwc"])
@pytest.mark.parametrize("directions", [1, 2, 4])
def test_cross_scan_merge_non_contiguous_inputs(directions, channels_last):
    """Strided inputs (channels_last memory format, transposed y) give the oracle result, contiguous."""
    x = image(4, 3, channels_last).transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    assert not x.is_contiguous()
    xs = cross_scan(x, directions, channels_last)
    assert xs.is_contiguous()
    torch.testing.assert_close(xs, cross_scan_oracle(x, directions, channels_last))
    y = torch.randn(2, directions, 12, 3, dtype=torch.float64).transpose(2, 3)
    merged = cross_merge(y, 4, 3, directions, channels_last)
    assert merged.is_contiguous()
    torch.testing.assert_close(merged, cross_merge_oracle(y, 4, 3, directions, channels_last))


@pytest.mark.parametrize("channels_last", [False, True], ids=["chw", "hwc"])
@pytest.mark.parametrize("directions", [1, 2, 4])
def test_cross_scan_merge_gradcheck(directions, channels_last):
    """gradcheck (and gradgradcheck) pass for cross_scan and cross_merge, whose backwards are each other."""
    x = image(3, 2, channels_last, batch=1).requires_grad_()
    y = torch.randn(1, directions, 3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: cross_scan(a, directions, channels_last), (x,))
    assert torch.autograd.gradcheck(lambda b: cross_merge(b, 3, 2, directions, channels_last), (y,))
    assert torch.autograd.gradgradcheck(lambda a: cross_scan(a, directions, channels_last), (x,))


# --------------------------------------------------------------------------------- op plumbing
def _opcheck_ss_fwd_cases():
    t = make_inputs(groups=2, length=5, softplus=True)
    f32 = make_inputs(groups=2, length=5, dtype=torch.float32, with_D=False, with_z=False, with_bias=False)
    mixed = dict(f32, A=f32["A"].double())  # float64 A promotes the state and the output
    bf16 = make_inputs(groups=1, length=3, dtype=torch.bfloat16, with_z=False)
    strided = {k: v.transpose(-1, -2).contiguous().transpose(-1, -2) if v.dim() >= 3 else v for k, v in t.items()}
    return {"f64_all": ss_op_args(t, True), "f32_bare": ss_op_args(f32), "mixed_dtype": ss_op_args(mixed),
            "bf16_out_bf16": ss_op_args(bf16, True, False), "strided": ss_op_args(strided, True)}


@pytest.mark.parametrize("case", list(_opcheck_ss_fwd_cases()))
def test_opcheck_selective_scan_fwd(case):
    """torch.library.opcheck (schema, fake impl, autograd registration, AOT dispatch) on selective_scan_fwd."""
    args = _opcheck_ss_fwd_cases()[case]
    args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
    torch.library.opcheck(torch.ops.vmamba_zoo.selective_scan_fwd, args)


@pytest.mark.parametrize("case", ["f64_all", "f32_bare", "bf16_out_bf16", "strided"])
def test_opcheck_selective_scan_fwd_states(case):
    """opcheck on the training forward (two outputs: y and the chunk-start states, not differentiable)."""
    args = _opcheck_ss_fwd_cases()[case]
    args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
    torch.library.opcheck(torch.ops.vmamba_zoo.selective_scan_fwd_states, args)


@pytest.mark.parametrize("length", [1, 255, 256, 257, 600])
def test_fwd_states_are_the_chunk_start_states(length):
    """The training forward's states are h before positions 0, 256, 512 ... (a step-by-step loop's), its y the
    plain forward's, and a backward given them returns what one without them does."""
    t = make_inputs(length=length, softplus=True, d_state=3)
    y, states = torch.ops.vmamba_zoo.selective_scan_fwd_states(*ss_op_args(t, True))
    torch.testing.assert_close(y, torch.ops.vmamba_zoo.selective_scan_fwd(*ss_op_args(t, True)), rtol=0, atol=0)
    dt = torch.nn.functional.softplus(t["delta"] + t["delta_bias"][:, None])
    B, groups = t["B"].repeat_interleave(3, dim=1), t["B"].shape[1]  # (batch, K*D, N, L): 3 channels a group
    assert groups * 3 == t["u"].shape[1]
    h, want = torch.zeros(states.shape[0], states.shape[1], states.shape[3], dtype=torch.float64), []
    for pos in range(length):
        if pos % reference.STATES_CHUNK == 0:
            want.append(h.clone())
        h = torch.exp(dt[..., pos, None] * t["A"]) * h + (dt[..., pos] * t["u"][..., pos])[..., None] * B[..., pos]
    assert states.shape == (2, 6, -(-length // 256), 3) and states.dtype == torch.float64
    torch.testing.assert_close(states, torch.stack(want, dim=2), rtol=1e-12, atol=1e-12)
    dout = torch.randn_like(y)
    plain = torch.ops.vmamba_zoo.selective_scan_bwd(dout, *ss_op_args(t, True)[:-2], "auto")
    saved = torch.ops.vmamba_zoo.selective_scan_bwd(dout, *ss_op_args(t, True)[:-2], "auto", states)
    for a, b in zip(saved, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_training_calls_take_the_states_forward():
    """selective_scan runs the training forward when a gradient is wanted (its states reach the backward), the
    plain one under no_grad or for inputs that need none."""
    seen = []

    def record(name):
        def fn(*args, **kwargs):
            seen.append(name)
            return getattr(reference, name)(*args, **kwargs)
        return fn

    for name in ("selective_scan_fwd", "selective_scan_fwd_states", "selective_scan_bwd"):
        register_backend(name, "recording", record(name), priority=5)
    t = make_inputs(length=300)
    run_with_grads(selective_scan, t, torch.ones_like(t["u"]))
    assert seen == ["selective_scan_fwd_states", "selective_scan_bwd"]
    seen.clear()
    selective_scan(**t)
    with torch.no_grad():
        selective_scan(**{k: None if v is None else v.requires_grad_() for k, v in t.items()})
    assert seen == ["selective_scan_fwd", "selective_scan_fwd"]


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("with_optional", [False, True], ids=["bare", "D_z_bias"])
def test_opcheck_selective_scan_bwd(with_optional, strided):
    """opcheck on selective_scan_bwd, with absent optionals (empty grads) and strided inputs (contiguous grads)."""
    t = make_inputs(groups=2, length=5, with_D=with_optional, with_z=with_optional, with_bias=with_optional)
    if strided:
        t = {k: None if v is None else (v.transpose(-1, -2).contiguous().transpose(-1, -2) if v.dim() >= 3 else v)
             for k, v in t.items()}
    dout = torch.randn_like(t["u"])
    torch.library.opcheck(torch.ops.vmamba_zoo.selective_scan_bwd, (dout,) + ss_op_args(t, True)[:-2] + ("auto",))


@pytest.mark.parametrize("channels_last", [False, True], ids=["chw", "hwc"])
@pytest.mark.parametrize("directions", [1, 2, 4])
def test_opcheck_cross_scan_and_merge(directions, channels_last):
    """opcheck on cross_scan and cross_merge, contiguous and strided inputs."""
    for x in (image(3, 5, channels_last), image(3, 5, channels_last).to(memory_format=torch.channels_last)):
        torch.library.opcheck(torch.ops.vmamba_zoo.cross_scan, (x.requires_grad_(), directions, channels_last, "auto"))
    y = torch.randn(2, directions, 3, 15, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.vmamba_zoo.cross_merge, (y, 3, 5, directions, channels_last, "auto"))


@pytest.mark.parametrize("fp32_output", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_meta_tensors_give_shapes_and_dtypes(dtype, fp32_output):
    """On the meta device the three ops (and the backward op) produce the right shapes and dtypes."""
    t = make_inputs(groups=2, dim=3, d_state=4, length=10, dtype=dtype, device="meta")
    y = selective_scan(**t, delta_softplus=True, fp32_output=fp32_output)
    assert y.device.type == "meta" and y.shape == (2, 6, 10)
    assert y.dtype == (torch.promote_types(dtype, torch.float32) if fp32_output else dtype)
    grads = torch.ops.vmamba_zoo.selective_scan_bwd(y.to(dtype), *ss_op_args(t, True)[:-2], "auto")
    assert [g.shape for g in grads] == [t[k].shape for k in SS_ARGS]
    assert all(g.dtype == dtype for g in grads)
    bare = torch.ops.vmamba_zoo.selective_scan_bwd(y.to(dtype), *ss_op_args(dict(t, D=None, z=None, delta_bias=None),
                                                                            True)[:-2], "auto")
    assert [g.numel() for g in bare[5:]] == [0, 0, 0]

    x = torch.empty(2, 5, 7, 3, device="meta", dtype=dtype)  # channels-last image
    xs = cross_scan(x, 4, channels_last=True)
    assert xs.device.type == "meta" and xs.shape == (2, 4, 3, 35) and xs.dtype == dtype
    assert cross_merge(xs, 5, 7, 4, channels_last=True).shape == (2, 5, 7, 3)
    assert cross_merge(xs, 5, 7, 4, channels_last=False).shape == (2, 3, 5, 7)
    assert cross_scan(torch.empty(2, 3, 5, 7, device="meta"), 2).shape == (2, 2, 3, 35)


def _pipeline(x, delta, A, B, C, D, delta_bias):
    """Cross-scan -> selective scan -> cross-merge of a (batch, C, H, W) map, as the SS2D mixer does."""
    batch, channels, height, width = x.shape
    xs = cross_scan(x, 4)
    ys = selective_scan(xs.reshape(batch, 4 * channels, height * width), delta, A, B, C, D, None, delta_bias,
                        delta_softplus=True)
    return cross_merge(ys.view(batch, 4, channels, height * width), height, width, 4, channels_last=True)


def test_torch_compile_fullgraph_aot_eager_matches_eager():
    """torch.compile(fullgraph=True, backend='aot_eager') runs the ops with no graph break; matches eager, grads too."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g)
    t = make_inputs(batch=2, groups=4, dim=3, d_state=4, length=20, dtype=torch.float32, softplus=True, with_z=False)
    args = [x] + [t[k] for k in ("delta", "A", "B", "C", "D", "delta_bias")]
    eager_args = [a.clone().requires_grad_() for a in args]
    compiled_args = [a.clone().requires_grad_() for a in args]
    expected = _pipeline(*eager_args)
    graphs = []

    def aot_eager_recording(gm, example_inputs):  # aot_eager, keeping the ops dynamo captured
        graphs.append([str(n.target) for n in gm.graph.nodes if n.op == "call_function"])
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    compiled = torch.compile(_pipeline, fullgraph=True, backend=aot_eager_recording, dynamic=False)
    actual = compiled(*compiled_args)
    assert len(graphs) == 1
    # inputs that require grad: the training forward, which keeps its chunk states for the backward
    assert [t for t in graphs[0] if "vmamba_zoo" in t] == [
        "vmamba_zoo.cross_scan", "vmamba_zoo.selective_scan_fwd_states", "vmamba_zoo.cross_merge"]
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    dout = torch.randn(expected.shape, generator=g)
    for a, b in zip(torch.autograd.grad(actual, compiled_args, dout), torch.autograd.grad(expected, eager_args, dout)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


class _OpsModule(nn.Module):
    """Calls the custom ops directly (as torch.ops), the way they appear in a traced graph."""

    def forward(self, x, delta, A, B, C, D, delta_bias):
        xs = torch.ops.vmamba_zoo.cross_scan(x, 4, False, "auto")
        ys = torch.ops.vmamba_zoo.selective_scan_fwd(xs.flatten(1, 2), delta, A, B, C, D, None, delta_bias,
                                                     True, True, "auto")
        return torch.ops.vmamba_zoo.cross_merge(ys.unflatten(1, (4, -1)), 4, 5, 4, True, "auto")


class _WrapperModule(nn.Module):
    """The same computation through the public (shape-checking) wrappers; H, W fixed to keep shapes static."""

    def forward(self, x, delta, A, B, C, D, delta_bias):
        xs = cross_scan(x, 4)
        ys = selective_scan(xs.flatten(1, 2), delta, A, B, C, D, None, delta_bias, delta_softplus=True)
        return cross_merge(ys.unflatten(1, (4, -1)), 4, 5, 4, channels_last=True)


def _fx_args():
    t = make_inputs(batch=2, groups=4, dim=3, d_state=4, length=20, softplus=True, with_z=False)
    return [torch.randn(2, 3, 4, 5, dtype=torch.float64)] + [t[k] for k in ("delta", "A", "B", "C", "D", "delta_bias")]


def test_fx_symbolic_trace_of_ops():
    """torch.fx.symbolic_trace records each custom op as one call_function node and the traced module matches."""
    module, args = _OpsModule(), _fx_args()
    gm = torch.fx.symbolic_trace(module)
    targets = [str(n.target).removesuffix(".default") for n in gm.graph.nodes if n.op == "call_function"]
    assert [t for t in targets if t.startswith("vmamba_zoo.")] == [
        "vmamba_zoo.cross_scan", "vmamba_zoo.selective_scan_fwd", "vmamba_zoo.cross_merge"]
    torch.testing.assert_close(gm(*args), module(*args), rtol=0, atol=0)
    torch.testing.assert_close(gm(*args), _pipeline(*args), rtol=0, atol=0)


def test_fx_trace_with_public_wrappers_as_leaves():
    """The Python wrappers (which check shapes) trace under fx when autowrapped as leaf functions."""
    module, args = _WrapperModule(), _fx_args()
    tracer = torch.fx.Tracer(autowrap_functions=(cross_scan, selective_scan, cross_merge))
    gm = torch.fx.GraphModule(module, tracer.trace(module))
    assert {selective_scan, cross_scan, cross_merge} <= {n.target for n in gm.graph.nodes if n.op == "call_function"}
    torch.testing.assert_close(gm(*args), module(*args), rtol=0, atol=0)
    torch.testing.assert_close(gm(*args), _pipeline(*args), rtol=0, atol=0)


# ------------------------------------------------------------------------------------ dispatch
def _plus_one_backend(calls):
    """A cross_scan backend that records its calls and returns the reference result + 1 (recognisable)."""
    def fn(x, directions, channels_last):
        calls.append(x.shape)
        return reference.cross_scan(x, directions, channels_last) + 1
    return fn


@pytest.fixture
def dummy():
    """A 'dummy' cross_scan backend outranking 'reference'; the fixture value is the list of its calls."""
    calls = []
    register_backend("cross_scan", "dummy", _plus_one_backend(calls), priority=100)  # above any kernel backend
    return calls


def test_higher_priority_backend_wins_in_auto(dummy):
    """auto mode runs the highest-priority backend that supports the inputs."""
    x = image(3, 4, False)
    names = backends.available_backends("cross_scan")
    assert names[0] == "dummy" and names[-1] == "reference"  # kernel backends (triton) may sit between
    torch.testing.assert_close(cross_scan(x, 4), reference.cross_scan(x, 4, False) + 1)
    assert len(dummy) == 1


def test_backend_argument_overrides_auto_and_env(dummy, monkeypatch):
    """backend='reference' beats a higher-priority backend and both env vars."""
    monkeypatch.setenv("VMAMBA_ZOO_BACKEND", "dummy")
    monkeypatch.setenv("VMAMBA_ZOO_CROSS_SCAN_BACKEND", "dummy")
    x = image(3, 4, False)
    torch.testing.assert_close(cross_scan(x, 4, backend="reference"), reference.cross_scan(x, 4, False))
    assert dummy == []


@pytest.mark.parametrize("env", [{"VMAMBA_ZOO_BACKEND": "reference"},
                                 {"VMAMBA_ZOO_CROSS_SCAN_BACKEND": "reference"},
                                 {"VMAMBA_ZOO_BACKEND": "dummy", "VMAMBA_ZOO_CROSS_SCAN_BACKEND": "reference"}],
                         ids=["global", "per_op", "per_op_beats_global"])
def test_env_vars_override_auto(dummy, monkeypatch, env):
    """VMAMBA_ZOO_BACKEND and VMAMBA_ZOO_CROSS_SCAN_BACKEND pick the backend in auto mode; per-op wins."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    x = image(3, 4, False)
    torch.testing.assert_close(cross_scan(x, 4), reference.cross_scan(x, 4, False))
    assert dummy == []


def test_env_var_of_another_op_is_ignored(dummy, monkeypatch):
    """A per-op env var only affects its own op."""
    monkeypatch.setenv("VMAMBA_ZOO_CROSS_MERGE_BACKEND", "reference")
    cross_scan(image(3, 4, False), 4)
    assert len(dummy) == 1


def test_forward_only_backend_stays_the_training_forward():
    """A backend registered for selective_scan_fwd alone (no training forward) still runs in training, where the
    states forward would otherwise bypass it; the gradients are the reference's."""
    calls = []

    def fwd(*args):
        calls.append("fwd")
        return reference.selective_scan_fwd(*args)

    register_backend("selective_scan_fwd", "fwdonly", fwd, priority=5)
    t = make_inputs(length=300)
    _, grads = run_with_grads(selective_scan, t, torch.ones_like(t["u"]))
    assert calls == ["fwd"]
    _, expected = run_with_grads(selective_scan, t, torch.ones_like(t["u"]), backend="reference")
    for name in grads:
        torch.testing.assert_close(grads[name], expected[name], rtol=0, atol=0)


@pytest.mark.parametrize("env", ["VMAMBA_ZOO_SELECTIVE_SCAN_FWD_BACKEND",
                                 "VMAMBA_ZOO_SELECTIVE_SCAN_FWD_STATES_BACKEND"])
def test_forward_env_override_holds_in_training(monkeypatch, env):
    """The forward's own override (or the training forward's) picks the training forward's backend."""
    seen = []

    def record(*args, **kwargs):
        seen.append("picked")
        return reference.selective_scan_fwd_states(*args, **kwargs)

    register_backend("selective_scan_fwd", "picked", reference.selective_scan_fwd, priority=-1)
    register_backend("selective_scan_fwd_states", "picked", record, priority=-1)  # below reference: env only
    t = make_inputs(length=40)
    run_with_grads(selective_scan, t, torch.ones_like(t["u"]))
    assert seen == []
    monkeypatch.setenv(env, "picked")
    run_with_grads(selective_scan, t, torch.ones_like(t["u"]))
    assert seen == ["picked"]


def test_kernel_backend_plugs_into_selective_scan_backward():
    """A backend registered for selective_scan_bwd is the one autograd runs."""
    calls = []

    def bwd(*args):
        calls.append(len(args))
        return reference.selective_scan_bwd(*args)

    register_backend("selective_scan_bwd", "kernel", bwd, priority=5)
    t = make_inputs(length=4)
    _, grads = run_with_grads(selective_scan, t, torch.ones_like(t["u"]))
    assert calls == [10]
    _, expected = run_with_grads(selective_scan, t, torch.ones_like(t["u"]), backend="reference")
    assert calls == [10]  # backend="reference" reaches the backward op too
    for name in grads:
        torch.testing.assert_close(grads[name], expected[name], rtol=0, atol=0)


@pytest.mark.parametrize("how", ["argument", "env"])
def test_unknown_backend_raises_listing_available(dummy, monkeypatch, how):
    """An unknown backend name raises ValueError naming it and the available backends."""
    x = image(3, 4, False)
    if how == "env":
        monkeypatch.setenv("VMAMBA_ZOO_BACKEND", "nope")
    with pytest.raises(ValueError, match=r"unknown backend 'nope'.*available: \['dummy', .*'reference'\]"):
        cross_scan(x, 4, backend="nope" if how == "argument" else "auto")


def test_unsupported_backend_falls_back_with_one_warning():
    """A requested backend whose supports() is False falls back to auto, warning exactly once."""
    calls = []
    register_backend("cross_scan", "picky", _plus_one_backend(calls), priority=10, supports=lambda ts: False)
    x = image(3, 4, False)
    with pytest.warns(RuntimeWarning, match="'picky' cannot run cross_scan") as record:
        out = cross_scan(x, 4, backend="picky")
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    torch.testing.assert_close(out, reference.cross_scan(x, 4, False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        torch.testing.assert_close(cross_scan(x, 4, backend="picky"), reference.cross_scan(x, 4, False))
        cross_scan(x, 4)  # auto skips the unsupported backend silently
    assert calls == []


def test_backend_of_another_op_falls_back_with_one_warning():
    """A backend registered for one op only (a model-wide backend choice) runs where it exists and falls
    back, warning once, for the ops that lack it; a name no op knows stays an error."""
    calls = []
    register_backend("cross_merge", "mergeonly", _plus_one_backend(calls), priority=-1)
    x = image(3, 4, False)
    with pytest.warns(RuntimeWarning, match="'mergeonly' has no implementation of cross_scan"):
        out = cross_scan(x, 4, backend="mergeonly")
    torch.testing.assert_close(out, reference.cross_scan(x, 4, False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cross_scan(x, 4, backend="mergeonly")
    assert calls == []
    with pytest.raises(ValueError, match="unknown backend 'nosuch'"):
        cross_scan(x, 4, backend="nosuch")


def test_supports_receives_the_inputs():
    """supports() is called with the op's tensors, so a backend can accept some inputs and not others."""
    calls, seen = [], []

    def supports(tensors):
        seen.append(tuple(t.dtype for t in tensors))
        return all(t.dtype == torch.float32 for t in tensors)

    register_backend("cross_scan", "f32only", _plus_one_backend(calls), priority=10, supports=supports)
    cross_scan(image(3, 4, False, dtype=torch.float32), 4)
    cross_scan(image(3, 4, False, dtype=torch.float64), 4)
    assert len(calls) == 1 and seen == [(torch.float32,), (torch.float64,)]


# ---------------------------------------------------------------------------------- bad input
def _ss_with(**overrides):
    t = make_inputs(groups=2, dim=3, d_state=4, length=7)
    t.update(overrides)
    return lambda: selective_scan(**t)


_T = make_inputs(groups=2, dim=3, d_state=4, length=7)
BAD_INPUTS = {
    "cross_scan_directions_3": (lambda: cross_scan(image(3, 4, False), 3),
                                r"scan_directions must be one of \(1, 2, 4\), got 3"),
    "cross_merge_directions_3": (lambda: cross_merge(torch.randn(2, 3, 3, 12), 3, 4, 3), r"scan_directions .* got 3"),
    "cross_scan_not_4d": (lambda: cross_scan(torch.randn(3, 4, 5), 4), r"4D image"),
    "cross_merge_wrong_K": (lambda: cross_merge(torch.randn(2, 2, 3, 12), 3, 4, 4),
                            r"cross_merge expects \(batch, 4, C, 3\*4\)"),
    "cross_merge_wrong_length": (lambda: cross_merge(torch.randn(2, 4, 3, 11), 3, 4, 4),
                                 r"cross_merge expects .*got \(2, 4, 3, 11\)"),
    "u_not_3d": (_ss_with(u=_T["u"][0]), r"u must be \(batch, K\*D, L\)"),
    "delta_shape": (_ss_with(delta=_T["delta"][..., :-1]), r"delta shape"),
    "A_shape": (_ss_with(A=_T["A"][:-1]), r"A must be \(6, d_state\)"),
    "B_d_state": (_ss_with(B=_T["B"][:, :, :-1]), r"B must be \(2, K, 4, 7\), got \(2, 2, 3, 7\)"),
    "B_not_4d": (_ss_with(B=_T["B"][0]), r"B must be"),
    "B_groups": (_ss_with(B=torch.randn(2, 4, 4, 7, dtype=torch.float64)),
                 r"6 channels do not split into 4 groups of B"),
    "C_length": (_ss_with(C=_T["C"][..., :-1]), r"C must be \(2, K, 4, 7\)"),
    "D_length": (_ss_with(D=_T["D"][:-1]), r"D must be \(6,\), got \(5,\)"),
    "delta_bias_length": (_ss_with(delta_bias=torch.randn(7, dtype=torch.float64)), r"delta_bias must be \(6,\)"),
    "z_shape": (_ss_with(z=_T["z"][:1]), r"z shape"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_value_error(case):
    """Malformed arguments raise ValueError with a message naming the problem."""
    call, pattern = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=pattern):
        call()


def test_reference_cross_merge_checks_shape_too():
    """The reference backends themselves reject a y of the wrong K and an unknown direction count."""
    with pytest.raises(ValueError, match="cross_merge expects"):
        reference.cross_merge(torch.randn(1, 2, 3, 12), 3, 4, 4, False)
    with pytest.raises(ValueError, match="scan_directions"):
        reference.cross_scan(torch.randn(1, 3, 3, 4), 3, False)

