"""Triton cross-scan / cross-merge: one read of the image, K directional writes (and the reverse).

Layouts. The sequences are (batch, K, C, L) with L = H*W contiguous. The image is (batch, C, H, W)
(channel-first: W contiguous) or (batch, H, W, C) (channel-last: C contiguous). Direction k visits
pixel (i, j) at step
    rows: i*W + j        columns: j*H + i        reversed rows / columns: L-1 minus those
(K=4: rows, columns, reversed rows, reversed columns; K=2: rows, reversed rows; K=1: rows), as
:mod:`vmamba_zoo.ops.reference.cross_scan` defines.

Design: each program owns a tile of [BLOCK_C channels, BLOCK_H rows, BLOCK_W columns] of one image. It
loads the tile once and stores it to all K sequences (cross_scan), or loads the tile's K sequence
values and stores their float32 sum once (cross_merge). The pointer tensors are contiguous along a
different tile axis on each side: along W (channel-first image, row-direction sequences), along C
(channel-last image) or along H (column-direction sequences). Triton lays each load/store out to be
coalesced along its own contiguous axis and transposes between them in shared memory, so every global
access is coalesced; none is a per-element scatter. The reversed directions count down, which Triton's
analysis does not call contiguous; it then runs consecutive threads along the last tile axis, so the
column directions go through the transposed tile [BLOCK_C, BLOCK_W, BLOCK_H] (rows last) and the
reversed ones still write consecutive (descending) addresses from consecutive threads.

Tiles that cover whole rows (BLOCK_W >= W) make the row-direction writes one contiguous run per
channel, and tiles that cover whole columns do the same for the column directions; the tile shapes
below aim for that at VMamba's map sizes (56/28/14/7).

With K < 4 no direction needs the 2D structure, so the image is viewed as one row of L pixels
(H=1, W=L): the tiles are then plain [channels, pixels] blocks with no padding waste.

Any H x W works: partial tiles are masked. Sizes are passed as runtime ints (one compiled kernel per
dtype / layout / K / tile shape, not per map size); the largest power of two (up to 16) dividing each
of C, H, W is passed as a compile-time constant and re-imposed in the kernel (``n // A * A``) so the
compiler knows row and plane starts are aligned and can vectorise. Offsets are int64 from the
channel/plane term on, so tensors above 2**31 elements are addressed correctly (in-plane steps stay
int32: H*W < 2**31 is checked).
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

__all__ = ["cross_scan", "cross_merge", "tile_shape", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Elements per program. 4096 holds a whole padded 56x56 plane (64x64), so channel-first K=4 tiles at
# VMamba's largest map write each direction as one contiguous run. Swept by benchmarks/cross_scan_kernels.py.
TILE_ELEMENTS = 4096
# Channel-last K=4 tiles need runs along C (reads) and along H and W (writes) at once: a 16x16 pixel
# block with TILE_ELEMENTS / 256 channels keeps each run >= 16 elements.
CHANNELS_LAST_PIXELS = 256


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _alignment(n: int, cap: int = 16) -> int:
    """Largest power of two dividing ``n``, at most ``cap`` (1 for n == 0)."""
    return min(n & -n, cap) if n > 0 else 1


def tile_shape(channels: int, height: int, width: int, directions: int, channels_last: bool,
               tile_elements: int = TILE_ELEMENTS, channels_last_pixels: int = CHANNELS_LAST_PIXELS):
    """(logical height, logical width, BLOCK_C, BLOCK_H, BLOCK_W) for an image and direction count.

    K < 4 views the image as one row of H*W pixels (only the flat pixel order matters then).
    """
    if directions != 4:
        height, width = 1, height * width
    c2, h2, w2 = _pow2_at_least(channels), _pow2_at_least(height), _pow2_at_least(width)
    if channels_last:
        if directions == 4:  # square-ish pixel block: column writes run along H, row writes along W
            block_w = min(w2, 16, channels_last_pixels)
            block_h = min(h2, max(1, channels_last_pixels // block_w))
        else:  # reads run along C, writes along the pixels: 32 channels x (tile / 32) pixels
            block_h = 1
            block_w = min(w2, max(1, tile_elements // min(c2, 32, tile_elements)))
    else:
        # whole rows first (row writes become one run per channel), then as many rows as fit
        block_w = min(w2, 64 if directions == 4 else 1024, tile_elements)
        block_h = min(h2, max(1, tile_elements // block_w))
    block_c = min(c2, max(1, tile_elements // (block_h * block_w)))
    return height, width, block_c, block_h, block_w


def _num_warps(tile: int) -> int:
    return max(1, min(8, tile // 512))


@triton.jit
def _tile_indices(C, H, W, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
                  CHANNELS_LAST: tl.constexpr):
    """(batch, channel, row, column indices) of this program's tile. Consecutive programs take neighbouring
    tiles along the image's contiguous axis, so partly used 32-byte sectors are completed while in L2."""
    pid = tl.program_id(0)
    tiles_c = tl.cdiv(C, BLOCK_C)
    tiles_h = tl.cdiv(H, BLOCK_H)
    tiles_w = tl.cdiv(W, BLOCK_W)
    if CHANNELS_LAST:
        tile_c = pid % tiles_c
        rest = pid // tiles_c
        tile_w = rest % tiles_w
        rest = rest // tiles_w
        tile_h = rest % tiles_h
        batch = rest // tiles_h
    else:
        tile_w = pid % tiles_w
        rest = pid // tiles_w
        tile_h = rest % tiles_h
        rest = rest // tiles_h
        tile_c = rest % tiles_c
        batch = rest // tiles_c
    c = tile_c * BLOCK_C + tl.arange(0, BLOCK_C)
    i = tile_h * BLOCK_H + tl.arange(0, BLOCK_H)
    j = tile_w * BLOCK_W + tl.arange(0, BLOCK_W)
    return batch, c, i, j


@triton.jit
def _image_offsets(batch, c, i, j, C, H, W, CHANNELS_LAST: tl.constexpr):
    """[BLOCK_C, BLOCK_H, BLOCK_W] int64 element offsets of the tile in the image."""
    pixel = i[:, None] * W + j[None, :]  # row-major pixel index, < H*W < 2**31
    if CHANNELS_LAST:
        image = batch.to(tl.int64) * (H * W)
        return (image + pixel.to(tl.int64))[None, :, :] * C + c[:, None, None]
    else:
        plane = (batch.to(tl.int64) * C + c) * (H * W)
        return plane[:, None, None] + pixel[None, :, :]


@triton.jit
def _sequence_offsets(batch, k: tl.constexpr, c, step, C, L, K: tl.constexpr):
    """int64 offsets into (batch, K, C, L) of channels ``c`` at the (2D tile of) steps ``step``."""
    plane = ((batch.to(tl.int64) * K + k) * C + c) * L
    return plane[:, None, None] + step[None, :, :]


@triton.jit
def _column_steps(c, i, j, C, H, W):
    """Column-major steps and mask of the tile, with its row and column axes swapped: [BLOCK_C, BLOCK_W, BLOCK_H].

    Triton lays a load/store out along the axis its pointers are contiguous on and, when none is (the
    reversed directions count down), along the last axis. With i last, both column directions are
    coalesced; addressed through the untransposed tile, the reversed columns would be a scatter.
    """
    cols = j[:, None] * H + i[None, :]  # step of pixel (i, j) in column-major order
    mask = (c < C)[:, None, None] & ((j < W)[:, None] & (i < H)[None, :])[None, :, :]
    return cols, mask


@triton.jit
def _widen(values, FP64: tl.constexpr):
    """The merge's accumulation type: float32, or float64 for float64 input."""
    if FP64:
        return values.to(tl.float64)
    else:
        return values.to(tl.float32)


@triton.jit
def _aligned(n, ALIGN: tl.constexpr):
    # n is a multiple of ALIGN (the host checked), so this is n; written so the compiler learns it
    return n // ALIGN * ALIGN


@triton.jit
def _cross_scan_kernel(x_ptr, out_ptr, C, H, W,
                       K: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                       ALIGN_C: tl.constexpr, ALIGN_H: tl.constexpr, ALIGN_W: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    C = _aligned(C, ALIGN_C)
    H = _aligned(H, ALIGN_H)
    W = _aligned(W, ALIGN_W)
    L = H * W
    batch, c, i, j = _tile_indices(C, H, W, BLOCK_C, BLOCK_H, BLOCK_W, CHANNELS_LAST)
    mask = (c < C)[:, None, None] & ((i < H)[:, None] & (j < W)[None, :])[None, :, :]
    tile = tl.load(x_ptr + _image_offsets(batch, c, i, j, C, H, W, CHANNELS_LAST), mask=mask)
    rows = i[:, None] * W + j[None, :]  # step of pixel (i, j) in row-major order
    tl.store(out_ptr + _sequence_offsets(batch, 0, c, rows, C, L, K), tile, mask=mask)
    if K == 2:
        tl.store(out_ptr + _sequence_offsets(batch, 1, c, (L - 1) - rows, C, L, K), tile, mask=mask)
    if K == 4:
        # the column directions store the transposed tile [BLOCK_C, BLOCK_W, BLOCK_H] (see _column_steps)
        cols, mask_t = _column_steps(c, i, j, C, H, W)
        tile_t = tl.permute(tile, (0, 2, 1))
        tl.store(out_ptr + _sequence_offsets(batch, 1, c, cols, C, L, K), tile_t, mask=mask_t)
        tl.store(out_ptr + _sequence_offsets(batch, 2, c, (L - 1) - rows, C, L, K), tile, mask=mask)
        tl.store(out_ptr + _sequence_offsets(batch, 3, c, (L - 1) - cols, C, L, K), tile_t, mask=mask_t)


@triton.jit
def _cross_merge_kernel(y_ptr, out_ptr, C, H, W,
                        K: tl.constexpr, CHANNELS_LAST: tl.constexpr, ACC_FP64: tl.constexpr,
                        ALIGN_C: tl.constexpr, ALIGN_H: tl.constexpr, ALIGN_W: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    C = _aligned(C, ALIGN_C)
    H = _aligned(H, ALIGN_H)
    W = _aligned(W, ALIGN_W)
    L = H * W
    batch, c, i, j = _tile_indices(C, H, W, BLOCK_C, BLOCK_H, BLOCK_W, CHANNELS_LAST)
    mask = (c < C)[:, None, None] & ((i < H)[:, None] & (j < W)[None, :])[None, :, :]
    rows = i[:, None] * W + j[None, :]
    # summed in the reference's order ((y0 + y2') + (y1 + y3')), so float32 results equal it exactly
    merged = _widen(tl.load(y_ptr + _sequence_offsets(batch, 0, c, rows, C, L, K), mask=mask, other=0), ACC_FP64)
    if K == 2:
        merged += _widen(tl.load(y_ptr + _sequence_offsets(batch, 1, c, (L - 1) - rows, C, L, K), mask=mask,
                                 other=0), ACC_FP64)
    if K == 4:
        merged += _widen(tl.load(y_ptr + _sequence_offsets(batch, 2, c, (L - 1) - rows, C, L, K), mask=mask,
                                 other=0), ACC_FP64)
        cols, mask_t = _column_steps(c, i, j, C, H, W)  # column directions: read as transposed tiles
        col_sum = _widen(tl.load(y_ptr + _sequence_offsets(batch, 1, c, cols, C, L, K), mask=mask_t, other=0),
                         ACC_FP64)
        col_sum += _widen(tl.load(y_ptr + _sequence_offsets(batch, 3, c, (L - 1) - cols, C, L, K), mask=mask_t,
                                  other=0), ACC_FP64)
        merged += tl.permute(col_sum, (0, 2, 1))
    tl.store(out_ptr + _image_offsets(batch, c, i, j, C, H, W, CHANNELS_LAST),
             merged.to(out_ptr.dtype.element_ty), mask=mask)


def _check(t: torch.Tensor, directions: int, what: str) -> None:
    if directions not in (1, 2, 4):
        raise ValueError(f"{what}: directions must be 1, 2 or 4, got {directions}")
    if t.dim() != 4:
        raise ValueError(f"{what} expects a 4D tensor, got shape {tuple(t.shape)}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{what}: unsupported dtype {t.dtype} (supported: {SUPPORTED_DTYPES})")


def _launch(kernel, src, dst, channels, height, width, directions, channels_last, tile, **extra):
    height, width, block_c, block_h, block_w = tile_shape(channels, height, width, directions, channels_last,
                                                          **(tile or {}))
    if height * width >= 2 ** 31:
        raise ValueError(f"maps of {height * width} pixels (>= 2**31) are not supported")
    programs = src.shape[0] * triton.cdiv(channels, block_c) * triton.cdiv(height, block_h) * \
        triton.cdiv(width, block_w)
    # Triton launches on the current device: make it the tensors' (e.g. cuda:1 while cuda:0 is current)
    with torch.cuda.device(src.device) if src.is_cuda else contextlib.nullcontext():
        kernel[(programs,)](src, dst, channels, height, width, K=directions, CHANNELS_LAST=channels_last, **extra,
                            ALIGN_C=_alignment(channels), ALIGN_H=_alignment(height), ALIGN_W=_alignment(width),
                            BLOCK_C=block_c, BLOCK_H=block_h, BLOCK_W=block_w,
                            num_warps=_num_warps(block_c * block_h * block_w))


def cross_scan(x: torch.Tensor, directions: int, channels_last: bool, tile: dict | None = None) -> torch.Tensor:
    """(batch, C, H, W), or (batch, H, W, C) when ``channels_last``, -> (batch, K, C, H*W), same dtype.

    ``tile`` overrides :func:`tile_shape`'s budgets (``tile_elements``, ``channels_last_pixels``), for sweeps.
    """
    _check(x, directions, "cross_scan")
    x = x.contiguous()
    batch, height, width, channels = x.shape if channels_last else (x.shape[0], *x.shape[2:], x.shape[1])
    out = torch.empty(batch, directions, channels, height * width, dtype=x.dtype, device=x.device)
    if out.numel():
        _launch(_cross_scan_kernel, x, out, channels, height, width, directions, channels_last, tile)
    return out


def cross_merge(y: torch.Tensor, height: int, width: int, directions: int, channels_last: bool,
                tile: dict | None = None) -> torch.Tensor:
    """(batch, K, C, H*W) -> image (batch, C, H, W) or (batch, H, W, C): the sum of the K directions at each
    pixel, accumulated in float32 (float64 for float64 input) and stored in y's dtype."""
    _check(y, directions, "cross_merge")
    batch, k, channels, length = y.shape
    if k != directions or length != height * width:
        raise ValueError(f"cross_merge expects (batch, {directions}, C, {height}*{width}), got {tuple(y.shape)}")
    y = y.contiguous()
    shape = (batch, height, width, channels) if channels_last else (batch, channels, height, width)
    out = torch.empty(shape, dtype=y.dtype, device=y.device)
    if out.numel():
        _launch(_cross_merge_kernel, y, out, channels, height, width, directions, channels_last, tile,
                ACC_FP64=y.dtype == torch.float64)
    return out
