"""Triton cross-scan / cross-merge: an image to its K directional sequences, and their sum back to an image.

Layouts. The sequences are (batch, K, C, L) with L = H*W contiguous. The image is (batch, C, H, W)
(channel-first: W contiguous) or (batch, H, W, C) (channel-last: C contiguous). Direction k visits
pixel (i, j) at step
    rows: i*W + j        columns: j*H + i        reversed rows / columns: L-1 minus those
(K=4: rows, columns, reversed rows, reversed columns; K=2: rows, reversed rows; K=1: rows), as
:mod:`vmamba_zoo.ops.reference.cross_scan` defines.

Scan design: every program writes one tile of one direction's sequence, at ascending steps, so that every
store is whole 16-byte vectors. Counting down in a store is what made the first kernel slow: Triton cannot
vectorise it, and each lane's 2-byte store then reaches L2 as a write of its own (Nsight Compute, H200,
VMamba-T stage 0: 82 M sectors written to L2 where the output has 9.6 M; 1.2 ms where a copy of the same
bytes takes 0.1). The order of the pixels is moved to the reads instead, which L1 gathers line by line:
- ``_cross_scan_steps_kernel``: [BLOCK_C channels, BLOCK_Q steps] tiles of each direction, reading the
  pixels the steps visit. Channel-last images give runs of channels in any pixel order; channel-first rows
  give runs of pixels counting up or down (the step axis is last, so both coalesce). It runs every
  direction, except the channel-first column directions:
- ``_cross_scan_columns_kernel``: channel-first columns read [BLOCK_C, BLOCK_I rows, BLOCK_J columns] tiles
  along the image's rows and store them along the columns (Triton transposes in shared memory); reversed
  columns read the mirrored tile, counting down along its last axis.
The directions of one image tile are neighbouring programs, so their repeated reads of it meet in L2.

Merge design: each program owns a tile of [BLOCK_C channels, BLOCK_H rows, BLOCK_W columns] of one image.
It loads the tile's K sequence values and stores their float32 sum once. The pointer tensors are
contiguous along a different tile axis on each side: along W (channel-first image, row-direction
sequences), along C (channel-last image) or along H (column-direction sequences). Triton lays each
load/store out to be coalesced along its own contiguous axis and transposes between them in shared
memory. The reversed directions count down, which Triton's analysis does not call contiguous; it then
runs consecutive threads along the last tile axis, so the column directions go through the transposed
tile [BLOCK_C, BLOCK_W, BLOCK_H] (rows last) and the reversed ones still read consecutive (descending)
addresses from consecutive threads. Tiles that cover whole rows (BLOCK_W >= W) make the row-direction
reads one contiguous run per channel, and tiles that cover whole columns do the same for the column
directions; the tile shapes below aim for that at VMamba's map sizes (56/28/14/7). With K < 4 no
direction needs the 2D structure, so the image is viewed as one row of L pixels (H=1, W=L).

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

__all__ = ["cross_scan", "cross_merge", "tile_shape", "scan_step_blocks", "scan_column_blocks", "default_tile_elements",
           "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# The scan's tiles (scan_step_blocks / scan_column_blocks): elements per program, and the longest run of
# channels (channel-last reads) or steps (channel-first rows, every store) one tile spans.
SCAN_TILE_ELEMENTS = 4096
SCAN_CHANNEL_RUN = 64
SCAN_STEP_RUN = 1024
# The merge's tiles (tile_shape): elements per program. 4096 holds a whole padded 56x56 plane (64x64), so
# channel-first K=4 tiles at VMamba's largest map read each direction as one contiguous run. Channel-last K=4
# tiles need runs along C (writes) and along H and W (reads) at once: a 16x16 pixel block with
# TILE_ELEMENTS / 256 channels keeps each run >= 16 elements.
TILE_ELEMENTS = 4096
# Budgets that beat those at K=4 (benchmarks/cross_scan_kernels.py --sweep, nvidia-h200, 2026-12-03, VMamba-T
# stages, % of copy at 56/28/14/7): channel-first scan 1024 (64/68/58/27 against 61/60/49/26), channel-first
# merge 1024 (76/86/77/54 against 62/71/60/40), channel-last merge 2048 (52/61/71/60 against 48/61/64/53).
# Smaller tiles mean more programs in flight per SM. Everything else keeps the budgets above.
_K4_BUDGETS = {("scan", False): 1024, ("merge", False): 1024, ("merge", True): 2048}


def default_tile_elements(op: str, directions: int, channels_last: bool) -> int:
    """The element budget ``op`` ("scan" or "merge") uses unless a ``tile`` argument overrides it."""
    default = SCAN_TILE_ELEMENTS if op == "scan" else TILE_ELEMENTS
    return _K4_BUDGETS.get((op, channels_last), default) if directions == 4 else default


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
def _source_pixels(q, L, H, W, REVERSE: tl.constexpr, COLUMNS: tl.constexpr):
    """Row-major index of the pixel that step ``q`` of a direction visits."""
    if REVERSE:
        q = (L - 1) - q
    if COLUMNS:
        q = (q % H) * W + q // H
    return q


@triton.jit
def _scan_steps_tile(x_ptr, out_ptr, batch, k, c, q, C, H, W, L, K: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                     REVERSE: tl.constexpr, COLUMNS: tl.constexpr):
    """Steps ``q`` of direction ``k`` for channels ``c``: a [BLOCK_C, BLOCK_Q] tile stored at ascending steps."""
    pixel = _source_pixels(q, L, H, W, REVERSE, COLUMNS)
    mask = (c < C)[:, None] & (q < L)[None, :]
    if CHANNELS_LAST:  # any pixel order reads whole runs of channels
        src = (batch.to(tl.int64) * L + pixel)[None, :] * C + c[:, None]
    else:  # rows: ascending or descending runs of pixels (the step axis is last, so both coalesce)
        src = ((batch.to(tl.int64) * C + c) * L)[:, None] + pixel[None, :]
    dst = (((batch.to(tl.int64) * K + k) * C + c) * L)[:, None] + q[None, :]
    tl.store(out_ptr + dst, tl.load(x_ptr + src, mask=mask), mask=mask)


@triton.jit
def _cross_scan_steps_kernel(x_ptr, out_ptr, C, H, W, K: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                             ROWS_ONLY: tl.constexpr, ALIGN_C: tl.constexpr, ALIGN_L: tl.constexpr,
                             BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr):
    """Directions tiled along their steps: each program one direction's [BLOCK_C, BLOCK_Q] tile of one image.
    ROWS_ONLY: just the row directions (0 and 2 of K=4; channel-first column directions have their own kernel)."""
    C = _aligned(C, ALIGN_C)
    L = _aligned(H * W, ALIGN_L)
    SLOTS: tl.constexpr = 2 if (ROWS_ONLY and K == 4) else K
    pid = tl.program_id(0)
    tiles_q = tl.cdiv(L, BLOCK_Q)
    tile_q = pid % tiles_q
    rest = pid // tiles_q
    slot = rest % SLOTS  # the directions of one tile are neighbours: their reads of the image meet in L2
    rest = rest // SLOTS
    tiles_c = tl.cdiv(C, BLOCK_C)
    tile_c = rest % tiles_c
    batch = rest // tiles_c
    c = tile_c * BLOCK_C + tl.arange(0, BLOCK_C)
    q = tile_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    for s in tl.static_range(SLOTS):  # one branch per direction, each with its own pixel order compiled in
        if slot == s:
            k: tl.constexpr = 2 * s if (ROWS_ONLY and K == 4) else s
            _scan_steps_tile(x_ptr, out_ptr, batch, k, c, q, C, H, W, L, K, CHANNELS_LAST,
                             REVERSE=k >= 2 if K == 4 else k == 1, COLUMNS=K == 4 and k % 2 == 1)


@triton.jit
def _scan_columns_tile(x_ptr, out_ptr, batch, k, c, i, j, C, H, W, L, REVERSE: tl.constexpr):
    """Channel-first column direction ``k`` over a [BLOCK_C, BLOCK_I, BLOCK_J] tile of pixels (rows i, columns j).

    The read runs along j (the image's rows), the store along i (the direction's steps, ascending): Triton
    transposes between them in shared memory. The reversed direction reads the mirrored pixels, counting down
    along j, which is the tile's last axis, so that read still coalesces."""
    if REVERSE:
        pixel = ((H - 1) - i)[:, None] * W + ((W - 1) - j)[None, :]
    else:
        pixel = i[:, None] * W + j[None, :]
    mask = (c < C)[:, None, None] & ((i < H)[:, None] & (j < W)[None, :])[None, :, :]
    src = ((batch.to(tl.int64) * C + c) * L)[:, None, None] + pixel[None, :, :]
    dst = (((batch.to(tl.int64) * 4 + k) * C + c) * L)[:, None, None] + (j[None, :] * H + i[:, None])[None, :, :]
    tl.store(out_ptr + dst, tl.load(x_ptr + src, mask=mask), mask=mask)


@triton.jit
def _cross_scan_columns_kernel(x_ptr, out_ptr, C, H, W, ALIGN_C: tl.constexpr, ALIGN_H: tl.constexpr,
                               ALIGN_W: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
                               BLOCK_J: tl.constexpr):
    """Directions 1 and 3 of a channel-first K=4 scan (columns, reversed columns)."""
    C = _aligned(C, ALIGN_C)
    H = _aligned(H, ALIGN_H)
    W = _aligned(W, ALIGN_W)
    L = H * W
    pid = tl.program_id(0)
    tiles_j = tl.cdiv(W, BLOCK_J)
    tile_j = pid % tiles_j
    rest = pid // tiles_j
    tiles_i = tl.cdiv(H, BLOCK_I)
    tile_i = rest % tiles_i
    rest = rest // tiles_i
    slot = rest % 2
    rest = rest // 2
    tiles_c = tl.cdiv(C, BLOCK_C)
    tile_c = rest % tiles_c
    batch = rest // tiles_c
    c = tile_c * BLOCK_C + tl.arange(0, BLOCK_C)
    i = tile_i * BLOCK_I + tl.arange(0, BLOCK_I)
    j = tile_j * BLOCK_J + tl.arange(0, BLOCK_J)
    if slot == 0:
        _scan_columns_tile(x_ptr, out_ptr, batch, 1, c, i, j, C, H, W, L, False)
    else:
        _scan_columns_tile(x_ptr, out_ptr, batch, 3, c, i, j, C, H, W, L, True)


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


def _on_device(t: torch.Tensor):
    # Triton launches on the current device: make it the tensors' (e.g. cuda:1 while cuda:0 is current)
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _check_map_size(pixels: int) -> None:
    if pixels >= 2 ** 31:
        raise ValueError(f"maps of {pixels} pixels (>= 2**31) are not supported")


def _launch_merge(y, out, channels, height, width, directions, channels_last, tile):
    tile = {"tile_elements": default_tile_elements("merge", directions, channels_last), **(tile or {})}
    height, width, block_c, block_h, block_w = tile_shape(channels, height, width, directions, channels_last, **tile)
    _check_map_size(height * width)
    programs = y.shape[0] * triton.cdiv(channels, block_c) * triton.cdiv(height, block_h) * \
        triton.cdiv(width, block_w)
    with _on_device(y):
        _cross_merge_kernel[(programs,)](
            y, out, channels, height, width, K=directions, CHANNELS_LAST=channels_last,
            ACC_FP64=y.dtype == torch.float64, ALIGN_C=_alignment(channels), ALIGN_H=_alignment(height),
            ALIGN_W=_alignment(width), BLOCK_C=block_c, BLOCK_H=block_h, BLOCK_W=block_w,
            num_warps=_num_warps(block_c * block_h * block_w))


def scan_step_blocks(channels: int, length: int, channels_last: bool,
                     tile_elements: int = SCAN_TILE_ELEMENTS) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_Q) of the scan's tiles along the steps: runs of channels (channel-last reads) or of
    steps (everything else) long enough to fill whole 32-byte sectors."""
    c2, l2 = _pow2_at_least(channels), _pow2_at_least(length)
    if channels_last:
        block_c = min(c2, SCAN_CHANNEL_RUN, tile_elements)
        return block_c, min(l2, max(1, tile_elements // block_c))
    block_q = min(l2, SCAN_STEP_RUN, tile_elements)
    return min(c2, max(1, tile_elements // block_q)), block_q


def scan_column_blocks(channels: int, height: int, width: int,
                       tile_elements: int = SCAN_TILE_ELEMENTS) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_I, BLOCK_J) of the channel-first column directions' tiles: whole columns first (the
    steps' runs), then as many columns, then channels, as fit."""
    block_i = min(_pow2_at_least(height), 64, tile_elements)
    block_j = min(_pow2_at_least(width), max(1, tile_elements // block_i))
    return min(_pow2_at_least(channels), max(1, tile_elements // (block_i * block_j))), block_i, block_j


def _launch_scan(x, out, channels, height, width, directions, channels_last, tile_elements=None):
    if tile_elements is None:
        tile_elements = default_tile_elements("scan", directions, channels_last)
    length = height * width
    _check_map_size(length)
    batch = x.shape[0]
    rows_only = directions == 4 and not channels_last  # channel-first columns: _cross_scan_columns_kernel
    block_c, block_q = scan_step_blocks(channels, length, channels_last, tile_elements)
    programs = batch * triton.cdiv(channels, block_c) * (2 if rows_only else directions) * \
        triton.cdiv(length, block_q)
    with _on_device(x):
        _cross_scan_steps_kernel[(programs,)](
            x, out, channels, height, width, K=directions, CHANNELS_LAST=channels_last, ROWS_ONLY=rows_only,
            ALIGN_C=_alignment(channels), ALIGN_L=_alignment(length), BLOCK_C=block_c, BLOCK_Q=block_q,
            num_warps=_num_warps(block_c * block_q))
        if rows_only:
            block_c, block_i, block_j = scan_column_blocks(channels, height, width, tile_elements)
            programs = batch * triton.cdiv(channels, block_c) * 2 * triton.cdiv(height, block_i) * \
                triton.cdiv(width, block_j)
            _cross_scan_columns_kernel[(programs,)](
                x, out, channels, height, width, ALIGN_C=_alignment(channels), ALIGN_H=_alignment(height),
                ALIGN_W=_alignment(width), BLOCK_C=block_c, BLOCK_I=block_i, BLOCK_J=block_j,
                num_warps=_num_warps(block_c * block_i * block_j))


def cross_scan(x: torch.Tensor, directions: int, channels_last: bool, tile: dict | None = None) -> torch.Tensor:
    """(batch, C, H, W), or (batch, H, W, C) when ``channels_last``, -> (batch, K, C, H*W), same dtype.

    ``tile`` overrides the tiles' element budget (``tile_elements``, see :func:`scan_step_blocks`), for sweeps.
    """
    _check(x, directions, "cross_scan")
    x = x.contiguous()
    batch, height, width, channels = x.shape if channels_last else (x.shape[0], *x.shape[2:], x.shape[1])
    out = torch.empty(batch, directions, channels, height * width, dtype=x.dtype, device=x.device)
    if out.numel():
        _launch_scan(x, out, channels, height, width, directions, channels_last, **(tile or {}))
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
        _launch_merge(y, out, channels, height, width, directions, channels_last, tile)
    return out
