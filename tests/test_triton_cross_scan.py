"""Triton cross-scan / cross-merge on the CPU through TRITON_INTERPRET=1, against the reference ops.

cross_scan only moves data, so it must equal the reference exactly. cross_merge sums the K directions in
float32 in the reference's order, so it equals the reference computed in float32 and rounded once to the
output dtype (exactly for float32 / float16; bfloat16 within one unit in the last place, because the
interpreter truncates float32 -> bfloat16 where the GPU rounds to nearest).
"""
import importlib
import os

import pytest
import torch

from vmamba_zoo.ops import available_backends, backends, cross_merge, cross_scan, reference

KERNELS = "vmamba_zoo.ops.kernels.triton_cross_scan"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# odd sizes (partial tiles in every direction), one row, one column, one pixel, and VMamba's largest map
SIZES = [(13, 4), (1, 1), (7, 9), (3, 17), (1, 6), (6, 1), (56, 56)]


@pytest.fixture(scope="module")
def kernels():
    """The kernels module, which must run in Triton's interpreter here (tests/conftest.py turns it on)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.fail("TRITON_INTERPRET=1 must be set before triton is imported (see tests/conftest.py)")
    return importlib.import_module(KERNELS)


def _image(batch, channels, height, width, channels_last, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=g).to(dtype)
    return x.permute(0, 2, 3, 1).contiguous() if channels_last else x


def _sequences(batch, directions, channels, length, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, directions, channels, length, generator=g).to(dtype)


def _merge_reference(y, height, width, directions, channels_last):
    """The reference merge in float32 (as the kernel accumulates), rounded once to y's dtype."""
    wide = y if y.dtype == torch.float64 else y.float()
    return reference.cross_merge(wide, height, width, directions, channels_last).to(y.dtype)


def _assert_merge_equal(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == torch.bfloat16:  # interpreter truncates the final float32 -> bfloat16 rounding
        torch.testing.assert_close(got, want, rtol=2 ** -7, atol=0)
    else:
        assert torch.equal(got, want), (got.double() - want.double()).abs().max()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("directions", [1, 2, 4])
def test_scan_and_merge_match_reference(kernels, directions, channels_last, hw, dtype):
    """Through the public ops with backend='triton': scan exactly, merge as the float32 reference."""
    height, width = hw
    batch, channels = 2, 3
    x = _image(batch, channels, height, width, channels_last, dtype, seed=height * 31 + width)
    scanned = cross_scan(x, directions, channels_last, backend="triton")
    assert scanned.dtype == dtype and scanned.is_contiguous()
    assert torch.equal(scanned, reference.cross_scan(x, directions, channels_last))
    y = _sequences(batch, directions, channels, height * width, dtype, seed=height * 17 + width)
    merged = cross_merge(y, height, width, directions, channels_last, backend="triton")
    assert merged.is_contiguous()
    _assert_merge_equal(merged, _merge_reference(y, height, width, directions, channels_last))


@pytest.mark.parametrize("hw,channels", [((13, 4), 5), ((7, 9), 3), ((3, 17), 6), ((5, 2), 17)])
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("directions", [1, 2, 4])
def test_small_tiles_split_every_axis(kernels, directions, channels_last, hw, channels):
    """Tiny tile budgets split channels, rows and columns into several partial tiles (the masking and the
    program -> tile mapping that VMamba-sized inputs exercise only on large maps)."""
    height, width = hw
    tile = dict(tile_elements=16, channels_last_pixels=8)
    _, _, block_c, block_h, block_w = kernels.tile_shape(channels, height, width, directions, channels_last, **tile)
    assert block_c * block_h * block_w < channels * height * width  # several tiles per image
    if channels == 17:
        assert block_c < channels  # the channel axis really is split
    x = _image(2, channels, height, width, channels_last, torch.float32, seed=channels)
    assert torch.equal(kernels.cross_scan(x, directions, channels_last, tile),
                       reference.cross_scan(x, directions, channels_last))
    y = _sequences(2, directions, channels, height * width, torch.float32, seed=channels + 1)
    assert torch.equal(kernels.cross_merge(y, height, width, directions, channels_last, tile),
                       reference.cross_merge(y, height, width, directions, channels_last))


def test_float64_accumulates_in_float64(kernels):
    """float64 (the GPU suite's oracle dtype) is supported and merged without a float32 round trip."""
    x = _image(1, 2, 5, 3, False, torch.float64, seed=1)
    assert torch.equal(kernels.cross_scan(x, 4, False), reference.cross_scan(x, 4, False))
    y = _sequences(1, 4, 2, 15, torch.float64, seed=2) * 1e-9 + 1.0  # differences float32 would lose
    assert torch.equal(kernels.cross_merge(y, 5, 3, 4, False), reference.cross_merge(y, 5, 3, 4, False))


@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("directions", [1, 2, 4])
def test_gradients_run_the_kernels(kernels, monkeypatch, directions, channels_last):
    """Each op's backward is the other op: by name, both directions of autograd run the Triton kernels and
    give the reference gradients."""
    calls = []
    for name in ("cross_scan", "cross_merge"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    height, width, channels = 3, 5, 2
    x = _image(2, channels, height, width, channels_last, torch.float32, seed=3).requires_grad_()
    y = _sequences(2, directions, channels, height * width, torch.float32, seed=4).requires_grad_()
    grad_scan = _sequences(2, directions, channels, height * width, torch.float32, seed=5)
    grad_merge = torch.randn(x.shape)

    dx = torch.autograd.grad(cross_scan(x, directions, channels_last, backend="triton"), x, grad_scan)[0]
    dy = torch.autograd.grad(cross_merge(y, height, width, directions, channels_last, backend="triton"), y,
                             grad_merge)[0]
    assert calls == ["cross_scan", "cross_merge", "cross_merge", "cross_scan"]
    dx_ref = torch.autograd.grad(reference.cross_scan(x, directions, channels_last), x, grad_scan)[0]
    dy_ref = torch.autograd.grad(reference.cross_merge(y, height, width, directions, channels_last), y,
                                 grad_merge)[0]
    assert torch.equal(dx, dx_ref) and torch.equal(dy, dy_ref)

    # the two kernels are each other's adjoint: <scan(x), y> == <x, merge(y)> (float64: exact up to summation)
    x64, y64 = x.detach().double(), y.detach().double()
    lhs = (kernels.cross_scan(x64, directions, channels_last) * y64).sum()
    rhs = (x64 * kernels.cross_merge(y64, height, width, directions, channels_last)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_non_contiguous_and_empty_inputs(kernels):
    """Strided views are copied to the layout the kernels index; empty tensors launch nothing."""
    base = torch.randn(2, 7, 5, 3)  # (B, H, W, C) storage, read as a channel-first (B, C, H, W) view
    x = base.permute(0, 3, 1, 2)
    assert torch.equal(cross_scan(x, 4, False, backend="triton"), reference.cross_scan(x, 4, False))
    y = torch.randn(2, 3, 4, 35).transpose(1, 2)  # (B, K=4, C=3, L) view
    assert torch.equal(cross_merge(y, 7, 5, 4, False, backend="triton"), reference.cross_merge(y, 7, 5, 4, False))
    empty = torch.randn(0, 3, 4, 5)
    assert kernels.cross_scan(empty, 4, False).shape == (0, 4, 3, 20)
    assert kernels.cross_merge(torch.randn(0, 2, 3, 20), 4, 5, 2, True).shape == (0, 4, 5, 3)


def test_errors_and_fallback(kernels, monkeypatch):
    """Bad arguments raise; a dtype the kernels lack falls back to the reference with one warning; auto mode
    never picks the interpreter on CPU."""
    monkeypatch.setattr(backends, "_WARNED", set())  # warnings are once per process: start afresh
    x = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="directions"):
        kernels.cross_scan(x, 3, False)
    with pytest.raises(ValueError, match="4D"):
        kernels.cross_scan(x[0], 4, False)
    with pytest.raises(ValueError, match="cross_merge expects"):
        kernels.cross_merge(torch.randn(1, 4, 2, 11), 3, 4, 4, False)
    with pytest.raises(TypeError, match="dtype"):
        kernels.cross_scan(x.to(torch.int32), 4, False)
    with pytest.raises(ValueError, match="scan_directions"):
        cross_scan(x, 3, backend="triton")

    ints = torch.arange(24, dtype=torch.int32).view(1, 2, 3, 4)
    with pytest.warns(RuntimeWarning, match="'triton' cannot run cross_scan"):
        scanned = cross_scan(ints, 4, False, backend="triton")
    assert torch.equal(scanned, reference.cross_scan(ints, 4, False))
    with pytest.warns(RuntimeWarning, match="'triton' cannot run cross_merge"):
        merged = cross_merge(scanned, 3, 4, 4, False, backend="triton")
    assert torch.equal(merged, reference.cross_merge(scanned, 3, 4, 4, False))

    for op in ("cross_scan", "cross_merge"):
        assert "triton" in available_backends(op)
    assert backends.resolve("cross_scan", "auto", (x,)) is reference.cross_scan
    assert backends.resolve("cross_merge", "auto", (x,)) is reference.cross_merge
    assert backends.resolve("cross_scan", "triton", (x,)) is not reference.cross_scan


def test_kernels_run_interpreted(kernels):
    """Guard: the kernels really are interpreter functions here (so the tests above ran Triton code)."""
    assert type(kernels._cross_scan_kernel).__name__ == "InterpretedFunction"
    assert type(kernels._cross_merge_kernel).__name__ == "InterpretedFunction"
