"""Triton fused SS2D scan, forward and backward: no directional copies, no delta tensor, one merged output.

One program per (batch, block of channels) walks the K scan directions one after the other. For each it
gathers u straight from the image through the direction's index map, computes delta = softplus(W_dt @ dts +
bias) on the fly from the low-rank dts, runs the chunked scan (the same helpers as the plain selective
scan) and adds y into the merged float32 output at the pixel it came from. Only this program touches its
channels, so the K-way sum needs no atomics and is deterministic.

The backward does the same walk in reverse: a first pass stores the state at every chunk start (the
forward without output), the second re-scans each chunk from it, runs the adjoint recurrence backwards,
scatters du onto the pixels (merged across directions in place, as the forward), and reduces the
gradients of the low-rank projection (dts, W_dt) and of B, C on the fly into per-block partial sums that
torch adds up in a fixed order.
"""
import torch
import triton
import triton.language as tl

from ..reference.ss2d import STATE_STEPS, states_shape
from .triton_selective_scan import _expand, _expand_states, _first_order, _softplus, _sum_channels, _sum_states

# tile of the fused kernels, separate from the plain scan's: rows = BLOCK_D * d_state per program, BLOCK_L
# steps per chunk. `benchmarks/ss2d_tune.py` on nvidia-h200 (2026-11-22, session 3): small single-warp
# programs win, T stage 0 fwd/bwd 1.55/7.37 -> 1.43/5.47 ms (benchmarks/ss2d_tune_h200_2026-11-22.txt)
SS2D_TILE = {"rows": 8, "block_l": 16, "num_warps": 1, "num_warps_large_state": 2}
STEP_STATES = tl.constexpr(STATE_STEPS)  # saved step states: the state before every 8th step


def _block_sizes(channels: int, d_state: int, length: int):
    """Largest power-of-two channel block dividing ``channels`` with BLOCK_D * N <= rows, and BLOCK_L."""
    block_d = 1
    while block_d * 2 * d_state <= SS2D_TILE["rows"] and channels % (block_d * 2) == 0:
        block_d *= 2
    return block_d, min(SS2D_TILE["block_l"], max(16, triton.next_power_of_2(length)))


def _num_warps(d_state: int) -> int:
    return SS2D_TILE["num_warps"] if d_state < 8 else SS2D_TILE["num_warps_large_state"]


@triton.jit
def _pixel_of(l, H, W, L, K: tl.constexpr, k):
    """Row-major pixel index of step ``l`` of direction ``k`` (K=4: rows, columns, both reversed).

    ``k`` is a run-time loop index: unrolling the directions (and the rank loops) made the backward's
    compile take minutes at dt_rank 48.
    """
    reversed_ = ((K == 4) & (k >= 2)) | ((K == 2) & (k == 1))
    l = tl.where(reversed_, L - 1 - l, l)
    columns = (K == 4) & (k % 2 == 1)
    return tl.where(columns, (l % H) * W + l // H, l)


@triton.jit
def _pixel_offsets(pid_b, chan, p, L, channels, CHANNELS_LAST: tl.constexpr):
    """(BLOCK_D, BLOCK_L) element offsets of channels ``chan`` at pixels ``p`` in the image layout."""
    if CHANNELS_LAST:
        return ((pid_b * L + p).to(tl.int64) * channels)[None, :] + chan[:, None]
    return ((pid_b * channels + chan).to(tl.int64) * L)[:, None] + p[None, :]


@triton.jit
def _raw_delta(dts_ptr, dts_base, w_ptr, kc, bias, l, valid, L, R: tl.constexpr, BLOCK_D: tl.constexpr,
               BLOCK_L: tl.constexpr):
    """W_dt[k] @ dts[k] + bias at steps ``l``: rank R, a few FMAs per element."""
    dt = tl.zeros([BLOCK_D, BLOCK_L], tl.float32) + bias[:, None]
    for r in range(R):
        w_r = tl.load(w_ptr + kc * R + r).to(tl.float32)
        d_r = tl.load(dts_ptr + dts_base + r * L + l, mask=valid, other=0.0).to(tl.float32)
        dt += w_r[:, None] * d_r[None, :]
    return dt


@triton.jit
def _direction_setup(A_ptr, bias_ptr, D_ptr, pid_b, k, d0, chan, rows, channels, L, n_chunks,
                     K: tl.constexpr, R: tl.constexpr, N: tl.constexpr):
    """Direction k's parameters of this program's channels and its offsets into B/C, dts and chunk states."""
    kc = k * channels + chan  # index into the K*D per-direction parameters
    A_rows = tl.load(A_ptr + (k * channels + d0 + rows // N) * N + rows % N).to(tl.float32)
    bias = tl.load(bias_ptr + kc).to(tl.float32)
    Dv = tl.load(D_ptr + kc).to(tl.float32)
    st_off = ((pid_b * K + k) * N + tl.arange(0, N)).to(tl.int64) * L
    dts_base = (pid_b * K + k).to(tl.int64) * R * L
    state_off = (((pid_b * K + k) * channels + d0) * N + rows).to(tl.int64) * n_chunks
    return kc, A_rows, bias, Dv, st_off, dts_base, state_off


@triton.jit
def _ss2d_fwd_kernel(x_ptr, dts_ptr, w_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, out_ptr, states_ptr,
                     step_states_ptr, H, W, channels, n_chunks,
                     K: tl.constexpr, R: tl.constexpr, N: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_L: tl.constexpr, CHANNELS_LAST: tl.constexpr, WRITE_OUT: tl.constexpr,
                     WRITE_STATES: tl.constexpr, SAVE_STEP_STATES: tl.constexpr):
    pid_b = tl.program_id(0)
    d0 = tl.program_id(1) * BLOCK_D
    L = H * W
    chan = d0 + tl.arange(0, BLOCK_D)
    rows = tl.arange(0, BLOCK_D * N)
    cols = tl.arange(0, BLOCK_L)
    for k in range(K):
        kc, A_rows, bias, Dv, st_off, dts_base, state_off = _direction_setup(
            A_ptr, bias_ptr, D_ptr, pid_b, k, d0, chan, rows, channels, L, n_chunks, K, R, N)
        carry = tl.zeros([BLOCK_D * N], tl.float32)
        # step states (batch, K, n_steps, N, D): the state before every STEP_STATES-th step, for the CUDA backward
        n_steps = (L + STEP_STATES - 1) // STEP_STATES
        step_off = ((pid_b * K + k) * n_steps).to(tl.int64) * (N * channels) + (rows % N) * channels + d0 + rows // N
        if SAVE_STEP_STATES:  # the state before step 0
            tl.store(step_states_ptr + step_off, carry)
        for chunk in range(0, n_chunks):
            if WRITE_STATES:
                tl.store(states_ptr + state_off + chunk, carry)
            l = chunk * BLOCK_L + cols
            valid = l < L
            offs = _pixel_offsets(pid_b, chan, _pixel_of(l, H, W, L, K, k), L, channels, CHANNELS_LAST)
            u = tl.load(x_ptr + offs, mask=valid[None, :], other=0.0).to(tl.float32)
            dt = _softplus(_raw_delta(dts_ptr, dts_base, w_ptr, kc, bias, l, valid, L, R, BLOCK_D, BLOCK_L))
            Bv = tl.load(B_ptr + st_off[:, None] + l[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
            a = tl.where(valid[None, :], tl.exp(_expand(dt, BLOCK_D, N, BLOCK_L) * A_rows[:, None]), 0.0)
            drive = _expand(dt * u, BLOCK_D, N, BLOCK_L) * _expand_states(Bv, BLOCK_D, N, BLOCK_L)
            drive = tl.where(cols[None, :] == 0, drive + a * carry[:, None], drive)
            _, h = tl.associative_scan((a, drive), axis=1, combine_fn=_first_order)
            carry = tl.sum(tl.where(cols[None, :] == BLOCK_L - 1, h, 0.0), axis=1)
            if SAVE_STEP_STATES:
                # the state after step l is the one before step l + 1: a masked store straight from the scanned
                # tile, where picking each state out first (a reduction over steps) cost up to 0.6 ms at 56x56
                j = (l + 1) // STEP_STATES
                keep = ((l + 1) % STEP_STATES == 0) & (j < n_steps)
                tl.store(step_states_ptr + step_off[:, None] + (j * (N * channels)).to(tl.int64)[None, :], h,
                         mask=keep[None, :])
            if WRITE_OUT:
                Cv = tl.load(C_ptr + st_off[:, None] + l[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
                y = _sum_states(h * _expand_states(Cv, BLOCK_D, N, BLOCK_L), BLOCK_D, N, BLOCK_L) + Dv[:, None] * u
                # merge: add onto the directions already written by this program
                y += tl.load(out_ptr + offs, mask=valid[None, :] & (k > 0), other=0.0)
                tl.store(out_ptr + offs, y, mask=valid[None, :])
        tl.debug_barrier()  # the next direction reads what every thread of this program wrote


@triton.jit
def _ss2d_bwd_kernel(x_ptr, dy_ptr, dts_ptr, w_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, states_ptr,
                     dx_acc_ptr, dx_ptr, ddts_part_ptr, dw_part_ptr, dbias_part_ptr, dA_part_ptr, dB_part_ptr,
                     dC_part_ptr, dD_part_ptr,
                     H, W, channels, n_chunks,
                     K: tl.constexpr, R: tl.constexpr, RP: tl.constexpr, N: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_L: tl.constexpr, CHANNELS_LAST: tl.constexpr):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    n_dblocks = tl.num_programs(1)
    batch = tl.num_programs(0)
    d0 = pid_d * BLOCK_D
    L = H * W
    chan = d0 + tl.arange(0, BLOCK_D)
    rows = tl.arange(0, BLOCK_D * N)
    cols = tl.arange(0, BLOCK_L)
    states = tl.arange(0, N)
    ranks = tl.arange(0, RP)
    for k in range(K):
        kc, A_rows, bias, Dv, st_off, dts_base, state_off = _direction_setup(
            A_ptr, bias_ptr, D_ptr, pid_b, k, d0, chan, rows, channels, L, n_chunks, K, R, N)
        # partial sums over this block's channels: dB, dC (batch, K, n_dblocks, N, L); ddts (n_dblocks, batch, K, R, L)
        part_off = (((pid_b * K + k) * n_dblocks + pid_d) * N + states).to(tl.int64) * L
        ddts_base = ((pid_d * batch + pid_b) * K + k).to(tl.int64) * R * L
        adj_carry = tl.zeros([BLOCK_D * N], tl.float32)  # a_{t+1} g_{t+1} at the next chunk's first step
        dA_acc = tl.zeros([BLOCK_D * N], tl.float32)
        dD_acc = tl.zeros([BLOCK_D], tl.float32)
        dbias_acc = tl.zeros([BLOCK_D], tl.float32)
        dw_acc = tl.zeros([BLOCK_D, RP], tl.float32)
        for step in range(0, n_chunks):
            chunk = n_chunks - 1 - step
            l = chunk * BLOCK_L + cols
            valid = l < L
            offs = _pixel_offsets(pid_b, chan, _pixel_of(l, H, W, L, K, k), L, channels, CHANNELS_LAST)
            u = tl.load(x_ptr + offs, mask=valid[None, :], other=0.0).to(tl.float32)
            dt_raw = _raw_delta(dts_ptr, dts_base, w_ptr, kc, bias, l, valid, L, R, BLOCK_D, BLOCK_L)
            dt = _softplus(dt_raw)
            Bv = tl.load(B_ptr + st_off[:, None] + l[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
            a = tl.where(valid[None, :], tl.exp(_expand(dt, BLOCK_D, N, BLOCK_L) * A_rows[:, None]), 0.0)
            drive = _expand(dt * u, BLOCK_D, N, BLOCK_L) * _expand_states(Bv, BLOCK_D, N, BLOCK_L)
            # states of the chunk, re-scanned from the state saved at its start
            h0 = tl.load(states_ptr + state_off + chunk)
            _, h = tl.associative_scan((a, tl.where(cols[None, :] == 0, drive + a * h0[:, None], drive)), axis=1,
                                       combine_fn=_first_order)
            Cv = tl.load(C_ptr + st_off[:, None] + l[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
            C_rows = _expand_states(Cv, BLOCK_D, N, BLOCK_L)
            dy = tl.load(dy_ptr + offs, mask=valid[None, :], other=0.0).to(tl.float32)  # merge's adjoint: a gather
            dD_acc += tl.sum(dy * u, axis=1)
            tl.store(dC_part_ptr + part_off[:, None] + l[None, :],
                     _sum_channels(h * _expand(dy, BLOCK_D, N, BLOCK_L), BLOCK_D, N, BLOCK_L), mask=valid[None, :])
            # adjoint g_t = a_{t+1} g_{t+1} + dy_t C_t, scanned backwards; a_{t+1} recomputed one step ahead
            l_next = l + 1
            next_valid = l_next < L
            dt_next = _softplus(_raw_delta(dts_ptr, dts_base, w_ptr, kc, bias, l_next, next_valid, L, R, BLOCK_D,
                                           BLOCK_L))
            a_next = tl.exp(_expand(dt_next, BLOCK_D, N, BLOCK_L) * A_rows[:, None])
            a_next = tl.where(next_valid[None, :] & (cols[None, :] < BLOCK_L - 1), a_next, 0.0)
            source = _expand(dy, BLOCK_D, N, BLOCK_L) * C_rows
            source = tl.where(cols[None, :] == BLOCK_L - 1, source + adj_carry[:, None], source)
            _, g = tl.associative_scan((a_next, source), axis=1, combine_fn=_first_order, reverse=True)
            adj_carry = tl.sum(tl.where(cols[None, :] == 0, a * g, 0.0), axis=1)
            g_decay = g * (h - drive)  # g * a * h_{t-1}: the gradient w.r.t. delta*A, without dividing by a
            dA_acc += tl.sum(g_decay * _expand(dt, BLOCK_D, N, BLOCK_L), axis=1)
            gB = _sum_states(g * _expand_states(Bv, BLOCK_D, N, BLOCK_L), BLOCK_D, N, BLOCK_L)
            tl.store(dB_part_ptr + part_off[:, None] + l[None, :],
                     _sum_channels(g * _expand(dt * u, BLOCK_D, N, BLOCK_L), BLOCK_D, N, BLOCK_L),
                     mask=valid[None, :])
            ddt = _sum_states(g_decay * A_rows[:, None], BLOCK_D, N, BLOCK_L) + gB * u
            ddt = tl.where(valid[None, :], ddt * tl.sigmoid(dt_raw), 0.0)  # through the softplus
            dbias_acc += tl.sum(ddt, axis=1)
            for r in range(R):  # the low-rank projection's gradients: dW_dt and dts
                w_r = tl.load(w_ptr + kc * R + r).to(tl.float32)
                d_r = tl.load(dts_ptr + dts_base + r * L + l, mask=valid, other=0.0).to(tl.float32)
                dw_acc += tl.where(ranks[None, :] == r, tl.sum(ddt * d_r[None, :], axis=1)[:, None], 0.0)
                tl.store(ddts_part_ptr + ddts_base + r * L + l, tl.sum(ddt * w_r[:, None], axis=0), mask=valid)
            du = gB * dt + dy * Dv[:, None]
            # merge du of all directions onto the pixels, in float32, then once in x's dtype
            du += tl.load(dx_acc_ptr + offs, mask=valid[None, :] & (k > 0), other=0.0)
            tl.store(dx_ptr + offs, du.to(dx_ptr.dtype.element_ty), mask=valid[None, :] & (k == K - 1))
            tl.store(dx_acc_ptr + offs, du, mask=valid[None, :] & (k < K - 1))
        tl.store(dA_part_ptr + (pid_b * K * channels + k * channels + d0) * N + rows, dA_acc)
        tl.store(dD_part_ptr + pid_b * K * channels + kc, dD_acc)
        tl.store(dbias_part_ptr + pid_b * K * channels + kc, dbias_acc)
        tl.store(dw_part_ptr + ((pid_b * K * channels + kc) * R)[:, None] + ranks[None, :], dw_acc,
                 mask=ranks[None, :] < R)
        tl.debug_barrier()  # the next direction reads the du this program accumulated


def _setup(x, tensors, channels_last):
    tensors = [t.contiguous() for t in tensors]
    if channels_last:
        batch, height, width, channels = x.shape
    else:
        batch, channels, height, width = x.shape
    length, d_state, dt_rank = height * width, tensors[4].shape[1], tensors[1].shape[2]
    block_d, block_l = _block_sizes(channels, d_state, length)
    return tensors, (batch, channels, height, width, length, d_state, dt_rank, block_d, block_l,
                     triton.cdiv(length, block_l))


def ss2d_scan_fwd(x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last, save_states=False):
    """(merged output, the state before every STEP_STATES-th step (batch, K, ceil(L / 8), N, D) or empty)."""
    tensors, dims = _setup(x, (x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds), channels_last)
    batch, channels, height, width, length, d_state, dt_rank, block_d, block_l, n_chunks = dims
    out = torch.empty(x.shape, dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
    shape = states_shape(batch, directions, length, d_state, channels) if save_states else (0,)
    states = torch.empty(shape, dtype=torch.float32, device=x.device)
    _ss2d_fwd_kernel[(batch, channels // block_d)](
        *tensors, out, out, states, height, width, channels, n_chunks, K=directions, R=dt_rank, N=d_state,
        BLOCK_D=block_d, BLOCK_L=block_l, CHANNELS_LAST=channels_last, WRITE_OUT=True, WRITE_STATES=False,
        SAVE_STEP_STATES=bool(save_states), num_warps=_num_warps(d_state))
    return out, states


def ss2d_scan_bwd(dy, x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last, states=None):
    """Gradients (dx, ddts, ddt_weight, ddt_bias, dA, dBs, dCs, dDs) in the dtypes of the inputs (the forward's
    saved step states are not used: this backward keeps its own chunk states)."""
    tensors, dims = _setup(x, (x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds), channels_last)
    batch, channels, height, width, length, d_state, dt_rank, block_d, block_l, n_chunks = dims
    dy = dy.contiguous()
    k, n_dblocks, dev, f32 = directions, channels // block_d, x.device, torch.float32
    grid = (batch, n_dblocks)
    flags = dict(K=k, R=dt_rank, N=d_state, BLOCK_D=block_d, BLOCK_L=block_l, CHANNELS_LAST=channels_last,
                 num_warps=_num_warps(d_state))
    # pass 1: the state at every chunk start of every direction (the forward, writing no output)
    chunk_states = torch.empty(batch, k, channels * d_state, n_chunks, device=dev, dtype=f32)
    _ss2d_fwd_kernel[grid](*tensors, chunk_states, chunk_states, chunk_states, height, width, channels, n_chunks,
                           WRITE_OUT=False, WRITE_STATES=True, SAVE_STEP_STATES=False, **flags)
    dx = torch.empty_like(x)
    dx_acc = torch.empty(x.shape, device=dev, dtype=f32) if k > 1 else dx
    ddts_part = torch.empty(n_dblocks, batch, k, dt_rank, length, device=dev, dtype=f32)
    dw_part = torch.empty(batch, k, channels, dt_rank, device=dev, dtype=f32)
    dbias_part = torch.empty(batch, k * channels, device=dev, dtype=f32)
    dD_part = torch.empty_like(dbias_part)
    dA_part = torch.empty(batch, k * channels * d_state, device=dev, dtype=f32)
    dB_part = torch.empty(batch, k, n_dblocks, d_state, length, device=dev, dtype=f32)
    dC_part = torch.empty_like(dB_part)
    _ss2d_bwd_kernel[grid](tensors[0], dy, *tensors[1:], chunk_states, dx_acc, dx, ddts_part, dw_part, dbias_part,
                           dA_part, dB_part, dC_part, dD_part, height, width, channels, n_chunks,
                           RP=triton.next_power_of_2(dt_rank), **flags)
    _, dts, dt_weight, dt_bias, A, Bs, Cs, Ds = tensors
    return (dx, ddts_part.sum(0).to(dts.dtype), dw_part.sum(0).to(dt_weight.dtype),
            dbias_part.sum(0).to(dt_bias.dtype), dA_part.sum(0).view_as(A).to(A.dtype), dB_part.sum(2).to(Bs.dtype),
            dC_part.sum(2).to(Cs.dtype), dD_part.sum(0).to(Ds.dtype))
