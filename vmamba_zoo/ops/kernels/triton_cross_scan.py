"""Triton cross-scan / cross-merge: one pass over the image for all K directions.

Both kernels walk the image in pixel order (coalesced on the image side) and map each pixel to its step
in every direction: cross_scan reads a tile once and writes it into the K sequences, cross_merge gathers
the K sequence values of a tile's pixels and writes their sum once (accumulated in float32).
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _step_of(p, H, W, L, K: tl.constexpr, k: tl.constexpr):
    """Step of direction ``k`` at which row-major pixel ``p`` is visited (inverse of the scan order)."""
    REVERSED: tl.constexpr = (K == 4 and k >= 2) or (K == 2 and k == 1)
    COLUMNS: tl.constexpr = K == 4 and k % 2 == 1
    step = p
    if COLUMNS:
        step = (p % W) * H + p // W
    if REVERSED:
        step = L - 1 - step
    return step


@triton.jit
def _image_offsets(pid_b, c, p, C, L, CHANNELS_LAST: tl.constexpr):
    if CHANNELS_LAST:
        return ((pid_b * L + p).to(tl.int64) * C)[None, :] + c[:, None]
    return ((pid_b * C + c).to(tl.int64) * L)[:, None] + p[None, :]


@triton.jit
def _cross_scan_kernel(x_ptr, out_ptr, C, H, W, K: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_b = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p = tl.program_id(2) * BLOCK_L + tl.arange(0, BLOCK_L)
    L = H * W
    mask = (c < C)[:, None] & (p < L)[None, :]
    tile = tl.load(x_ptr + _image_offsets(pid_b, c, p, C, L, CHANNELS_LAST), mask=mask)
    for k in tl.static_range(K):
        step = _step_of(p, H, W, L, K, k)
        tl.store(out_ptr + ((pid_b * K + k) * C + c).to(tl.int64)[:, None] * L + step[None, :], tile, mask=mask)


@triton.jit
def _cross_merge_kernel(y_ptr, out_ptr, C, H, W, K: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_b = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p = tl.program_id(2) * BLOCK_L + tl.arange(0, BLOCK_L)
    L = H * W
    mask = (c < C)[:, None] & (p < L)[None, :]
    acc = tl.zeros([BLOCK_C, BLOCK_L], tl.float32)
    for k in tl.static_range(K):
        step = _step_of(p, H, W, L, K, k)
        acc += tl.load(y_ptr + ((pid_b * K + k) * C + c).to(tl.int64)[:, None] * L + step[None, :],
                       mask=mask).to(tl.float32)
    tl.store(out_ptr + _image_offsets(pid_b, c, p, C, L, CHANNELS_LAST), acc.to(out_ptr.dtype.element_ty),
             mask=mask)


def _grid(batch, channels, length, block_c, block_l):
    return (batch, triton.cdiv(channels, block_c), triton.cdiv(length, block_l))


def cross_scan(x, directions, channels_last):
    x = x.contiguous()
    batch, height, width, channels = x.shape if channels_last else (x.shape[0], x.shape[2], x.shape[3], x.shape[1])
    length = height * width
    out = torch.empty(batch, directions, channels, length, dtype=x.dtype, device=x.device)
    block_c, block_l = 32, 64
    _cross_scan_kernel[_grid(batch, channels, length, block_c, block_l)](
        x, out, channels, height, width, K=directions, CHANNELS_LAST=channels_last, BLOCK_C=block_c, BLOCK_L=block_l)
    return out


def cross_merge(y, height, width, directions, channels_last):
    y = y.contiguous()
    batch, _, channels, length = y.shape
    shape = (batch, height, width, channels) if channels_last else (batch, channels, height, width)
    out = torch.empty(shape, dtype=y.dtype, device=y.device)
    block_c, block_l = 32, 64
    _cross_merge_kernel[_grid(batch, channels, length, block_c, block_l)](
        y, out, channels, height, width, K=directions, CHANNELS_LAST=channels_last, BLOCK_C=block_c, BLOCK_L=block_l)
    return out
