"""Triton cross-scan / cross-merge on the GPU against the reference ops (torch copies), at VMamba sizes.

Run on the device machine: ``pytest -m gpu tests/gpu/test_gpu_cross_scan.py``. CI (no GPU) deselects the marker.

cross_scan only moves data: it must equal the reference bit for bit. cross_merge accumulates in float32 in
the reference's order ((y0 + y2') + (y1 + y3')) and rounds once, so it equals the reference run on the
float32-upcast input and cast back, bit for bit; against the reference in the input's own dtype (which
rounds every partial sum) it agrees within the dtype's rounding.
"""
import pytest
import torch

from vmamba_zoo.ops import available_backends, cross_merge, cross_scan, reference

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# VMamba stage maps, odd sizes (partial tiles in both axes), one pixel, a tall thin map
MAPS = [(56, 56), (28, 28), (14, 14), (7, 7), (13, 4), (1, 1), (57, 3)]


@pytest.fixture(autouse=True)
def _need_cuda():
    if not torch.cuda.is_available():
        pytest.fail("the gpu suite needs a CUDA device (run it on the device machine)")


def _image(batch, channels, height, width, channels_last, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(batch, channels, height, width, device="cuda", generator=g).to(dtype)
    return x.permute(0, 2, 3, 1).contiguous() if channels_last else x


def _sequences(batch, directions, channels, length, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(batch, directions, channels, length, device="cuda", generator=g).to(dtype)


def _merge_reference(y, height, width, directions, channels_last):
    wide = y if y.dtype == torch.float64 else y.float()
    return reference.cross_merge(wide, height, width, directions, channels_last).to(y.dtype)


def _mismatch(got, want):
    """Where and how two tensors differ (for assertion messages)."""
    diff = (got.double() - want.double()).abs()
    where = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0].tolist())
    return f"max |diff| {diff.max().item():.3e} at {where}, {int((diff > 0).sum())} of {diff.numel()} differ"


def _check_pair(x, y, height, width, directions, channels_last):
    scanned = cross_scan(x, directions, channels_last, backend="triton")
    want = reference.cross_scan(x, directions, channels_last)
    assert scanned.dtype == x.dtype and scanned.shape == want.shape
    assert torch.equal(scanned, want), "scan: " + _mismatch(scanned, want)
    merged = cross_merge(y, height, width, directions, channels_last, backend="triton")
    want = _merge_reference(y, height, width, directions, channels_last)
    assert merged.dtype == y.dtype and merged.shape == want.shape
    assert torch.equal(merged, want), "merge: " + _mismatch(merged, want)
    # and the reference in y's own dtype, which rounds each of its (at most 3) sums: within 3 roundings of
    # a value no larger than K * max|y|
    own = reference.cross_merge(y, height, width, directions, channels_last)
    unit_roundoff = torch.finfo(y.dtype).eps / 2
    bound = 3 * unit_roundoff * directions * y.abs().max().item()
    torch.testing.assert_close(merged.double(), own.double(), rtol=0, atol=bound)


def test_triton_backend_is_registered_and_auto_on_cuda():
    """Registered for both ops; auto picks both kernels on CUDA."""
    from vmamba_zoo.ops.backends import resolve
    x = torch.zeros(1, 2, 3, 4, device="cuda")
    for op in ("cross_scan", "cross_merge"):
        assert "triton" in available_backends(op)
    assert resolve("cross_scan", "triton", (x,)) is not reference.cross_scan
    assert resolve("cross_scan", "auto", (x,)) is resolve("cross_scan", "triton", (x,))
    assert resolve("cross_merge", "auto", (x[:, None],)) is not reference.cross_merge


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hw", MAPS, ids=lambda hw: f"{hw[0]}x{hw[1]}")
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("directions", [1, 2, 4])
def test_scan_and_merge_match_reference(directions, channels_last, hw, dtype):
    """B=2, C=96 and 192 (C=192 at the even maps only, to bound compile time), every direction count."""
    height, width = hw
    for channels in (96, 192) if height == width and height > 1 else (96,):
        x = _image(2, channels, height, width, channels_last, dtype, seed=height * 131 + width + channels)
        y = _sequences(2, directions, channels, height * width, dtype, seed=height * 17 + width + channels)
        _check_pair(x, y, height, width, directions, channels_last)


@pytest.mark.parametrize("channels,hw", [(384, (14, 14)), (768, (7, 7)), (768, (13, 4)), (5, (56, 56)),
                                         (3, (57, 3)), (768, (1, 1))])
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("directions", [1, 2, 4])
def test_wide_and_narrow_channels(directions, channels_last, channels, hw):
    """Up to 768 channels (VMamba-B's last stage), and channel counts below one tile (masked channels)."""
    height, width = hw
    for dtype in (torch.float16, torch.float32):
        x = _image(2, channels, height, width, channels_last, dtype, seed=channels)
        y = _sequences(2, directions, channels, height * width, dtype, seed=channels + 1)
        _check_pair(x, y, height, width, directions, channels_last)


def test_float64():
    """float64 (the other GPU tests' oracle dtype) is copied exactly and merged in float64."""
    for channels_last in (False, True):
        x = _image(2, 5, 13, 4, channels_last, torch.float64, seed=1)
        y = _sequences(2, 4, 5, 52, torch.float64, seed=2)
        _check_pair(x, y, 13, 4, 4, channels_last)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("directions", [1, 2, 4])
def test_gradients_match_reference(directions, channels_last, dtype):
    """Backward of each op (the other op, with backend='triton') gives the reference gradients."""
    height, width, channels = 13, 4, 96
    x = _image(2, channels, height, width, channels_last, dtype, seed=5).requires_grad_()
    y = _sequences(2, directions, channels, height * width, dtype, seed=6).requires_grad_()
    grad_scan = _sequences(2, directions, channels, height * width, dtype, seed=7)
    grad_merge = torch.randn(x.shape, device="cuda").to(dtype)
    dx = torch.autograd.grad(cross_scan(x, directions, channels_last, backend="triton"), x, grad_scan)[0]
    assert torch.equal(dx, _merge_reference(grad_scan, height, width, directions, channels_last))
    dy = torch.autograd.grad(cross_merge(y, height, width, directions, channels_last, backend="triton"), y,
                             grad_merge)[0]
    assert torch.equal(dy, reference.cross_scan(grad_merge, directions, channels_last))


def test_non_contiguous_input():
    base = torch.randn(2, 28, 28, 96, device="cuda", dtype=torch.float16)
    x = base.permute(0, 3, 1, 2)  # channel-first view of channel-last storage
    assert torch.equal(cross_scan(x, 4, False, backend="triton"), reference.cross_scan(x, 4, False))
    y = torch.randn(2, 96, 4, 784, device="cuda").transpose(1, 2)
    assert torch.equal(cross_merge(y, 28, 28, 4, True, backend="triton"), reference.cross_merge(y, 28, 28, 4, True))


@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
def test_beyond_int32_offsets(channels_last):
    """Outputs of more than 2**31 elements: the last channel (addresses past 2**31) is written and read
    correctly. Needs about 11 GB of free GPU memory."""
    free, _ = torch.cuda.mem_get_info()
    if free < 12 * 2 ** 30:
        pytest.skip(f"needs ~12 GiB free GPU memory, {free / 2 ** 30:.1f} GiB free")
    batch, channels, height, width = 1, 64, 2900, 2900  # 4 * 64 * 8.41M = 2.15e9 sequence elements
    x = _image(batch, channels, height, width, channels_last, torch.float16, seed=9)
    scanned = cross_scan(x, 4, channels_last, backend="triton")
    assert scanned.numel() > 2 ** 31
    last = x[..., -1:] if channels_last else x[:, -1:]
    assert torch.equal(scanned[:, :, -1:], reference.cross_scan(last, 4, channels_last))
    merged = cross_merge(scanned, height, width, 4, channels_last, backend="triton")
    del scanned
    want_last = _merge_reference(reference.cross_scan(last, 4, channels_last), height, width, 4, channels_last)
    got_last = merged[..., -1:] if channels_last else merged[:, -1:]
    assert torch.equal(got_last, want_last)
    del merged, x
    torch.cuda.empty_cache()
