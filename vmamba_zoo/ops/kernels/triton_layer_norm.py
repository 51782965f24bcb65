"""Triton LayerNorm over the last dimension, for many short rows (VMamba: C = 96..1024, rows = B*H*W).

torch's ``vectorized_layer_norm_kernel`` gives each row to a thread block; with rows of 96..768
elements most of the block idles, and the kernel runs at a fraction of the memory bandwidth. Here each
program owns a [BLOCK_ROWS, BLOCK_C] tile (BLOCK_C = next power of two >= C, masked): BLOCK_ROWS whole
rows, loaded with one coalesced access, per-row statistics reduced along the tile's second axis.

Forward: y = (x - mean) * rstd * weight + bias, statistics in float32 whatever the input dtype
(two passes over the row held in registers: mean, then the centred variance, so no cancellation).
y is written in ``out_dtype`` directly (under autocast: the float16/bfloat16 the next Linear wants),
mean and rstd (float32, one per row) are saved for the backward.

Backward, with xhat = (x - mean) * rstd and g = weight * dy:
    dx      = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))      (per row)
    dweight = sum_rows(dy * xhat),  dbias = sum_rows(dy)
Each backward program walks a fixed, strided set of tiles, accumulates dweight / dbias elementwise in a
[BLOCK_ROWS, BLOCK_C] float32 tile (no cross-thread reduction inside the loop), reduces it over its rows
once at the end, and writes one partial row per program; torch sums the (programs, C) partials
afterwards. Same inputs and device, same order of additions: bitwise reproducible, no atomics.

Rows are addressed with int64 offsets (tensors above 2**31 elements work).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

__all__ = ["layer_norm_fwd", "layer_norm_bwd", "SUPPORTED_DTYPES", "MAX_COLUMNS", "tile_rows"]

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# a whole row lives in registers; beyond this the tile would spill (use the reference backend)
MAX_COLUMNS = 16384
# Elements per tile. Forward: 4096 = 32 rows of C=96 (padded to 128) or 4 rows of C=768 (padded to 1024),
# 32 float32 values per thread at 4 warps. The backward holds x, dy and two accumulators per element,
# so its tile is smaller to keep registers (and occupancy) in check. benchmarks/layer_norm_kernels.py
# --sweep times other choices.
FWD_TILE_ELEMENTS = 4096
BWD_TILE_ELEMENTS = 2048
# backward programs per SM: enough warps in flight to cover memory latency, few enough that the
# (programs, C) partial sums stay small next to the activations
BWD_PROGRAMS_PER_SM = 8
# no SM count on the CPU (interpreter): a small fixed number, so tests exercise programs that loop
_CPU_PROGRAMS = 4
# narrow rows are padded to this many columns: tiny C is rare, and tiles with a 1-wide axis are an odd case
_MIN_BLOCK_C = 16


def tile_rows(columns: int, tile_elements: int) -> Tuple[int, int]:
    """(BLOCK_ROWS, BLOCK_C) of a tile of about ``tile_elements`` elements for rows of ``columns``."""
    block_c = max(_MIN_BLOCK_C, triton.next_power_of_2(columns))
    return max(1, tile_elements // block_c), block_c


def _num_warps(tile: int) -> int:
    # 4 warps up to 4096 elements (32 per thread), more for the single-row tiles of very wide rows
    return max(4, min(16, tile // 1024))


@triton.jit
def _row_mean(total, n_cols):
    # IEEE division: Triton's plain fp32 `/` is approximate, so with C = 1 the mean was not x (noise in dx)
    return tl.fdiv(total, total * 0.0 + n_cols, ieee_rounding=True)


@triton.jit
def _layer_norm_fwd_kernel(x_ptr, y_ptr, weight_ptr, bias_ptr, mean_ptr, rstd_ptr, n_rows, n_cols, eps,
                           HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
                           BLOCK_ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_C)
    row_mask = rows < n_rows
    col_mask = cols < n_cols
    mask = row_mask[:, None] & col_mask[None, :]
    offsets = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    mean = _row_mean(tl.sum(x, axis=1), n_cols)
    centred = tl.where(mask, x - mean[:, None], 0.0)  # padding columns must not enter the variance
    variance = _row_mean(tl.sum(centred * centred, axis=1), n_cols)
    rstd = tl.rsqrt(variance + eps)
    y = centred * rstd[:, None]
    if HAS_WEIGHT:
        weight = tl.load(weight_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        y = y * weight[None, :]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        y = y + bias[None, :]
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + rows, mean, mask=row_mask)
    tl.store(rstd_ptr + rows, rstd, mask=row_mask)


@triton.jit
def _layer_norm_bwd_kernel(dy_ptr, x_ptr, weight_ptr, mean_ptr, rstd_ptr, dx_ptr,
                           dweight_partial_ptr, dbias_partial_ptr, n_rows, n_cols, n_tiles,
                           HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
                           BLOCK_ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    program = tl.program_id(0)
    n_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_C)
    col_mask = cols < n_cols
    if HAS_WEIGHT:
        weight = tl.load(weight_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    dweight_acc = tl.zeros([BLOCK_ROWS, BLOCK_C], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_ROWS, BLOCK_C], dtype=tl.float32)
    # tiles program, program + n_programs, ...: a fixed assignment, so the partial sums are reproducible
    for tile in range(program, n_tiles, n_programs):
        rows = tile * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row_mask = rows < n_rows
        mask = row_mask[:, None] & col_mask[None, :]
        offsets = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + rows, mask=row_mask, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=row_mask, other=0.0)
        # masked entries: x = dy = 0 and rstd = 0 on padding rows, so xhat = 0 there and nothing leaks
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        if HAS_WEIGHT:
            g = dy * weight[None, :]
            dweight_acc += dy * xhat
        else:
            g = dy
        if HAS_BIAS:
            dbias_acc += dy
        g_mean = _row_mean(tl.sum(g, axis=1), n_cols)
        gxhat_mean = _row_mean(tl.sum(g * xhat, axis=1), n_cols)
        dx = (g - g_mean[:, None] - xhat * gxhat_mean[:, None]) * rstd[:, None]
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    partial_offsets = program.to(tl.int64) * n_cols + cols
    if HAS_WEIGHT:
        tl.store(dweight_partial_ptr + partial_offsets, tl.sum(dweight_acc, axis=0), mask=col_mask)
    if HAS_BIAS:
        tl.store(dbias_partial_ptr + partial_offsets, tl.sum(dbias_acc, axis=0), mask=col_mask)


def _check(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor]) -> int:
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"triton layer_norm: unsupported dtype {x.dtype} (supported: {SUPPORTED_DTYPES})")
    if x.dim() == 0:
        raise ValueError("triton layer_norm: input must have at least one dimension")
    columns = x.shape[-1]
    if not 0 < columns <= MAX_COLUMNS:
        raise ValueError(f"triton layer_norm: last dimension {columns} outside 1..{MAX_COLUMNS}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (columns,):
            raise ValueError(f"triton layer_norm: {name} must be ({columns},), got {tuple(t.shape)}")
    return columns


def layer_norm_fwd(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], eps: float,
                   out_dtype: torch.dtype, tile_elements: int = FWD_TILE_ELEMENTS
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y in ``out_dtype`` shaped like x, mean, rstd (float32, shape x.shape[:-1])). Contiguous outputs."""
    columns = _check(x, weight, bias)
    x = x.contiguous()
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    mean = torch.empty(x.shape[:-1], dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    rows = x.numel() // columns
    if rows == 0:
        return y, mean, rstd
    block_rows, block_c = tile_rows(columns, tile_elements)
    grid = (triton.cdiv(rows, block_rows),)
    # absent weight / bias: any pointer will do, the kernel never reads it (HAS_* are compile-time)
    _layer_norm_fwd_kernel[grid](
        x, y, x if weight is None else weight.contiguous(), x if bias is None else bias.contiguous(), mean, rstd,
        rows, columns, float(eps), HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
        BLOCK_ROWS=block_rows, BLOCK_C=block_c, num_warps=_num_warps(block_rows * block_c))
    return y, mean, rstd


def _backward_programs(device: torch.device, n_tiles: int, programs_per_sm: int) -> int:
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(n_tiles, sms * programs_per_sm))
    return max(1, min(n_tiles, _CPU_PROGRAMS))


def layer_norm_bwd(dy: torch.Tensor, x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                   mean: torch.Tensor, rstd: torch.Tensor, tile_elements: int = BWD_TILE_ELEMENTS,
                   programs_per_sm: int = BWD_PROGRAMS_PER_SM
                   ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(dx like x, dweight like weight or None, dbias like bias or None). ``bias`` only says whether
    dbias is wanted (and its dtype); mean / rstd are the forward's."""
    columns = _check(x, weight, bias)
    if dy.shape != x.shape:
        raise ValueError(f"triton layer_norm backward: dy shape {tuple(dy.shape)} != x shape {tuple(x.shape)}")
    x, dy = x.contiguous(), dy.contiguous()
    mean, rstd = mean.contiguous().float(), rstd.contiguous().float()
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    rows = x.numel() // columns
    block_rows, block_c = tile_rows(columns, tile_elements)
    n_tiles = triton.cdiv(rows, block_rows)
    n_programs = _backward_programs(x.device, n_tiles, programs_per_sm)
    partial_shape = (n_programs, columns)
    dweight_partial = None if weight is None else torch.empty(partial_shape, dtype=torch.float32, device=x.device)
    dbias_partial = None if bias is None else torch.empty(partial_shape, dtype=torch.float32, device=x.device)
    if rows > 0:
        _layer_norm_bwd_kernel[(n_programs,)](
            dy, x, x if weight is None else weight.contiguous(), mean, rstd, dx,
            dx if dweight_partial is None else dweight_partial, dx if dbias_partial is None else dbias_partial,
            rows, columns, n_tiles, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
            BLOCK_ROWS=block_rows, BLOCK_C=block_c, num_warps=_num_warps(block_rows * block_c))
    else:  # no rows: the partials were never written, the gradients are zero
        for partial in (dweight_partial, dbias_partial):
            if partial is not None:
                partial.zero_()
    # torch's sum over the program axis: a fixed reduction order for a given shape and device
    dweight = None if weight is None else dweight_partial.sum(0).to(weight.dtype)
    dbias = None if bias is None else dbias_partial.sum(0).to(bias.dtype)
    return dx, dweight, dbias
