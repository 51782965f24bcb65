"""Triton fused SS2D scan, forward and backward: no directional copies, no delta tensor, one merged output,
and the sequence split into segments that run in parallel (a chunked scan, as Mamba-2's).

Why segments: one program walking a whole 56x56 sequence step by step is latency-bound (VMamba-T stage 0:
1.5 ms forward at 4% of copy bandwidth). Here every (segment, channel block, batch) is its own program:

1. summaries: each segment is scanned from a zero state; it keeps the product of its decays P and its end
   state hE (and, for the backward, the adjoint's carry-out E from a zero carry-in);
2. carries: a short pass over the segments of each (batch, direction, channel, state) turns these into the
   state at every segment start (and the adjoint carry at every segment end);
3. outputs: each segment is re-scanned from its true start state, y is computed and merged.

Directions come in pairs that cover the same pixels: the reversed direction's segments are laid out from
the end of its scan (a negative padding at its start), so segment s of direction k and of k + K/2 hold the
same pixels. One program does both, adding into the merged float32 output in turn; the two pairs of K = 4
are two launches (the second adds onto the first), so the merge needs no atomics and is deterministic.

The delta projection delta = softplus(W_dt @ dts + bias) is computed per tile (a tensor-core dot when the
channel block is 16 wide and the rank large, rank-1 updates otherwise), and its backward reduces the dts and
W_dt gradients the same way. The
backward's parameter gradients are per-program partial sums that torch adds up in a fixed order.
"""
import torch
import triton
import triton.language as tl

from .triton_selective_scan import _expand, _expand_states, _first_order, _softplus, _sum_channels, _sum_states

# rows = channel block x d_state per program, BLOCK_L steps per tile, seg_steps tiles per segment;
# `benchmarks/ss2d_tune.py` sweeps it on the GPU
SS2D_TILE = {"rows": 32, "block_l": 32, "seg_steps": 4, "num_warps": 4, "num_warps_large_state": 2,
             "dot_min_rank": 12}


@triton.jit
def _reversed(k, K: tl.constexpr):
    return ((K == 4) & (k >= 2)) | ((K == 2) & (k == 1))


@triton.jit
def _pixel_of(l, H, W, L, K: tl.constexpr, k):
    """Row-major pixel index of step ``l`` of direction ``k`` (K=4: rows, columns, both reversed)."""
    l = tl.where(_reversed(k, K), L - 1 - l, l)
    columns = (K == 4) & (k % 2 == 1)
    return tl.where(columns, (l % H) * W + l // H, l)


@triton.jit
def _segment_start(seg, k, L, n_seg, SEG: tl.constexpr, K: tl.constexpr):
    """First scan step of segment ``seg``: reversed directions start before 0 so that their segment s covers
    the pixels of their partner's segment s (their segments are numbered in scan order, from the end)."""
    pad = tl.where(_reversed(k, K), n_seg * SEG - L, 0)
    return seg * SEG - pad


@triton.jit
def _pair_segment(seg, j, n_seg):
    # the partner (j = 1) scans the pair's pixels backwards: its segment holding them is numbered from the end
    return tl.where(j == 0, seg, n_seg - 1 - seg)


@triton.jit
def _pixel_offsets(pid_b, chan, p, L, channels, CHANNELS_LAST: tl.constexpr):
    """(BLOCK_D, BLOCK_L) element offsets of channels ``chan`` at pixels ``p`` in the image layout."""
    if CHANNELS_LAST:
        return ((pid_b * L + p).to(tl.int64) * channels)[None, :] + chan[:, None]
    return ((pid_b * channels + chan).to(tl.int64) * L)[:, None] + p[None, :]


@triton.jit
def _dts_tile(dts_ptr, dts_base, l, valid, L, R: tl.constexpr, RP: tl.constexpr):
    ranks = tl.arange(0, RP)
    return tl.load(dts_ptr + dts_base + ranks[:, None] * L + l[None, :],
                   mask=(ranks[:, None] < R) & valid[None, :], other=0.0).to(tl.float32)


@triton.jit
def _matmul(a, b, IEEE: tl.constexpr):
    """a (M, K) @ b (K, N) in float32 on tensor cores (TF32 for 16-bit activations, whose values TF32 holds
    exactly; IEEE float32 for float32 ones)."""
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b, input_precision="tf32")


@triton.jit
def _raw_delta(dts_ptr, dts_base, w_ptr, kc, w_tile, bias, l, valid, L, R: tl.constexpr, RP: tl.constexpr,
               BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, DOT: tl.constexpr, IEEE: tl.constexpr):
    """W_dt[k] @ dts[k] + bias at steps ``l``: a tensor-core dot for large ranks, rank-1 updates for small ones
    (a dot's operands go through shared memory, which costs more than a few FMAs per element)."""
    if DOT:
        return _matmul(w_tile, _dts_tile(dts_ptr, dts_base, l, valid, L, R, RP), IEEE) + bias[:, None]
    dt = tl.zeros([BLOCK_D, BLOCK_L], tl.float32) + bias[:, None]
    for r in range(R):
        w_r = tl.load(w_ptr + kc * R + r).to(tl.float32)
        d_r = tl.load(dts_ptr + dts_base + r * L + l, mask=valid, other=0.0).to(tl.float32)
        dt += w_r[:, None] * d_r[None, :]
    return dt


@triton.jit
def _setup(A_ptr, bias_ptr, D_ptr, w_ptr, pid_b, k, d0, chan, rows, channels, L,
           K: tl.constexpr, R: tl.constexpr, RP: tl.constexpr, N: tl.constexpr):
    """Direction k's parameters of this program's channels and its offsets into B/C and dts."""
    kc = k * channels + chan  # index into the K*D per-direction parameters
    A_rows = tl.load(A_ptr + (k * channels + d0 + rows // N) * N + rows % N).to(tl.float32)
    bias = tl.load(bias_ptr + kc).to(tl.float32)
    Dv = tl.load(D_ptr + kc).to(tl.float32)
    ranks = tl.arange(0, RP)
    w_tile = tl.load(w_ptr + kc[:, None] * R + ranks[None, :], mask=ranks[None, :] < R, other=0.0).to(tl.float32)
    st_off = ((pid_b * K + k) * N + tl.arange(0, N)).to(tl.int64) * L
    dts_base = (pid_b * K + k).to(tl.int64) * R * L
    return kc, A_rows, bias, Dv, w_tile, st_off, dts_base


@triton.jit
def _tile(x_ptr, dts_ptr, w_ptr, B_ptr, pid_b, chan, l, H, W, L, channels, k, dts_base, st_off, w_tile, bias, A_rows,
          K: tl.constexpr, R: tl.constexpr, RP: tl.constexpr, N: tl.constexpr, BLOCK_D: tl.constexpr,
          BLOCK_L: tl.constexpr, CHANNELS_LAST: tl.constexpr, DOT: tl.constexpr, IEEE: tl.constexpr):
    """Inputs of one tile of steps ``l``: u gathered from the image, delta, B, the decay a = exp(delta*A)
    (1 outside the sequence, so a padded step passes the state through) and the drive delta*B*u."""
    valid = (l >= 0) & (l < L)
    offs = _pixel_offsets(pid_b, chan, _pixel_of(l, H, W, L, K, k), L, channels, CHANNELS_LAST)
    u = tl.load(x_ptr + offs, mask=valid[None, :], other=0.0).to(tl.float32)
    dt_raw = _raw_delta(dts_ptr, dts_base, w_ptr, k * channels + chan, w_tile, bias, l, valid, L, R, RP, BLOCK_D,
                        BLOCK_L, DOT, IEEE)
    dt = _softplus(dt_raw)
    Bv = tl.load(B_ptr + st_off[:, None] + l[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
    a = tl.where(valid[None, :], tl.exp(_expand(dt, BLOCK_D, N, BLOCK_L) * A_rows[:, None]), 1.0)
    drive = _expand(dt * u, BLOCK_D, N, BLOCK_L) * _expand_states(Bv, BLOCK_D, N, BLOCK_L)
    return valid, offs, u, dt_raw, dt, Bv, a, drive


@triton.jit
def _last(x, cols, BLOCK_L: tl.constexpr):
    return tl.sum(tl.where(cols[None, :] == BLOCK_L - 1, x, 0.0), axis=1)


@triton.jit
def _first(x, cols):
    return tl.sum(tl.where(cols[None, :] == 0, x, 0.0), axis=1)


@triton.jit
def _adjoint_combine(g_r, q_r, f_r, g_l, q_l, f_l):
    """Reverse-scan combine of the adjoint g_t = a_{t+1} g_{t+1} + s_t over (later r, earlier l) spans.

    A span [i, j] holds g (its g_i from a zero carry), q = a_{i+1} ... a_j and f = a_i; leaves (s_t, 1, a_t).
    Carrying the decay of the span's first step avoids shifting a by one step inside the tile."""
    return g_l + q_l * f_r * g_r, q_l * f_r * q_r, f_l


@triton.jit
def _adjoint(a, source, carry, cols, BLOCK_L: tl.constexpr):
    """g over a tile whose last step receives ``carry`` = a_{t+1} g_{t+1} from the next tile; returns g and
    the carry a_t g_t for the previous tile."""
    source = tl.where(cols[None, :] == BLOCK_L - 1, source + carry[:, None], source)
    g, _, f = tl.associative_scan((source, tl.full(a.shape, 1.0, tl.float32), a), axis=1,
                                  combine_fn=_adjoint_combine, reverse=True)
    return g, _first(f * g, cols)


@triton.jit
def _summary_kernel(x_ptr, dts_ptr, w_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dy_ptr, decay_ptr, end_ptr,
                    adj_ptr, H, W, channels, n_seg,
                    K: tl.constexpr, R: tl.constexpr, RP: tl.constexpr, N: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_L: tl.constexpr, SEG_STEPS: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                    DOT: tl.constexpr, IEEE: tl.constexpr, ADJOINT: tl.constexpr):
    """Per (segment, channel block, batch x direction): decay product P, end state hE from a zero start and,
    with ADJOINT, the adjoint carry-out E from a zero carry-in. Stored (n_seg, batch*K*D*N)."""
    seg = tl.program_id(0)
    d0 = tl.program_id(1) * BLOCK_D
    pid_b = tl.program_id(2) // K
    k = tl.program_id(2) % K
    L = H * W
    chan = d0 + tl.arange(0, BLOCK_D)
    rows = tl.arange(0, BLOCK_D * N)
    cols = tl.arange(0, BLOCK_L)
    kc, A_rows, bias, Dv, w_tile, st_off, dts_base = _setup(A_ptr, bias_ptr, D_ptr, w_ptr, pid_b, k, d0, chan,
                                                            rows, channels, L, K, R, RP, N)
    l0 = _segment_start(seg, k, L, n_seg, BLOCK_L * SEG_STEPS, K)
    decay = tl.full([BLOCK_D * N], 1.0, tl.float32)
    end = tl.zeros([BLOCK_D * N], tl.float32)
    adj = tl.zeros([BLOCK_D * N], tl.float32)
    for i in range(SEG_STEPS):
        l = l0 + i * BLOCK_L + cols
        valid, offs, u, dt_raw, dt, Bv, a, drive = _tile(
            x_ptr, dts_ptr, w_ptr, B_ptr, pid_b, chan, l, H, W, L, channels, k, dts_base, st_off, w_tile, bias, A_rows,
            K, R, RP, N, BLOCK_D, BLOCK_L, CHANNELS_LAST, DOT, IEEE)
        drive = tl.where(cols[None, :] == 0, drive + a * end[:, None], drive)
        prod, h = tl.associative_scan((a, drive), axis=1, combine_fn=_first_order)
        end = _last(h, cols, BLOCK_L)
        if ADJOINT:  # this tile's carry-out from a zero carry-in, moved through the tiles before it
            dy = tl.load(dy_ptr + offs, mask=valid[None, :], other=0.0).to(tl.float32)
            Cv = tl.load(C_ptr + st_off[:, None] + l[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
            source = _expand(dy, BLOCK_D, N, BLOCK_L) * _expand_states(Cv, BLOCK_D, N, BLOCK_L)
            _, tile_adj = _adjoint(a, source, tl.zeros([BLOCK_D * N], tl.float32), cols, BLOCK_L)
            adj += decay * tile_adj
        decay = decay * _last(prod, cols, BLOCK_L)
    out = seg.to(tl.int64) * tl.num_programs(2) * channels * N + ((pid_b * K + k) * channels + d0) * N + rows
    tl.store(decay_ptr + out, decay)
    tl.store(end_ptr + out, end)
    if ADJOINT:
        tl.store(adj_ptr + out, adj)


@triton.jit
def _carry_kernel(decay_ptr, end_ptr, adj_ptr, start_ptr, carry_in_ptr, n_rows, n_seg,
                  BLOCK: tl.constexpr, ADJOINT: tl.constexpr):
    """State at every segment start (h0[s+1] = P[s] h0[s] + hE[s]) and, with ADJOINT, the adjoint carry into
    every segment end (q[s-1] = P[s] q[s] + E[s]); arrays (n_seg, n_rows)."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = rows < n_rows
    stride = tl.zeros([BLOCK], tl.int64) + n_rows  # 64-bit offsets
    h = tl.zeros([BLOCK], tl.float32)
    for s in range(0, n_seg):
        off = s * stride + rows
        tl.store(start_ptr + off, h, mask=mask)
        h = tl.load(decay_ptr + off, mask=mask, other=0.0) * h + tl.load(end_ptr + off, mask=mask, other=0.0)
    if ADJOINT:
        q = tl.zeros([BLOCK], tl.float32)
        for step in range(0, n_seg):
            off = (n_seg - 1 - step) * stride + rows
            tl.store(carry_in_ptr + off, q, mask=mask)
            q = tl.load(decay_ptr + off, mask=mask, other=0.0) * q + tl.load(adj_ptr + off, mask=mask, other=0.0)


@triton.jit
def _ss2d_fwd_kernel(x_ptr, dts_ptr, w_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, start_ptr, out_ptr,
                     H, W, channels, n_seg, pair,
                     K: tl.constexpr, R: tl.constexpr, RP: tl.constexpr, N: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_L: tl.constexpr, SEG_STEPS: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                     DOT: tl.constexpr, IEEE: tl.constexpr):
    """Segment ``program_id(0)`` of direction ``pair`` and of its partner, re-scanned from the true start
    state, y added into the merged float32 output (written by direction 0, added by the others)."""
    seg = tl.program_id(0)
    d0 = tl.program_id(1) * BLOCK_D
    pid_b = tl.program_id(2)
    L = H * W
    chan = d0 + tl.arange(0, BLOCK_D)
    rows = tl.arange(0, BLOCK_D * N)
    cols = tl.arange(0, BLOCK_L)
    for j in range(2 if K > 1 else 1):
        k = pair + j * (K // 2)
        kc, A_rows, bias, Dv, w_tile, st_off, dts_base = _setup(A_ptr, bias_ptr, D_ptr, w_ptr, pid_b, k, d0, chan,
                                                                rows, channels, L, K, R, RP, N)
        s = _pair_segment(seg, j, n_seg)
        l0 = _segment_start(s, k, L, n_seg, BLOCK_L * SEG_STEPS, K)
        carry = tl.load(start_ptr + s.to(tl.int64) * tl.num_programs(2) * K * channels * N
                        + ((pid_b * K + k) * channels + d0) * N + rows)
        for i in range(SEG_STEPS):
            l = l0 + i * BLOCK_L + cols
            valid, offs, u, dt_raw, dt, Bv, a, drive = _tile(
                x_ptr, dts_ptr, w_ptr, B_ptr, pid_b, chan, l, H, W, L, channels, k, dts_base, st_off, w_tile, bias, A_rows,
                K, R, RP, N, BLOCK_D, BLOCK_L, CHANNELS_LAST, DOT, IEEE)
            drive = tl.where(cols[None, :] == 0, drive + a * carry[:, None], drive)
            _, h = tl.associative_scan((a, drive), axis=1, combine_fn=_first_order)
            carry = _last(h, cols, BLOCK_L)
            Cv = tl.load(C_ptr + st_off[:, None] + l[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
            y = _sum_states(h * _expand_states(Cv, BLOCK_D, N, BLOCK_L), BLOCK_D, N, BLOCK_L) + Dv[:, None] * u
            y += tl.load(out_ptr + offs, mask=valid[None, :] & (k > 0), other=0.0)
            tl.store(out_ptr + offs, y, mask=valid[None, :])
        tl.debug_barrier()  # the partner reads what every thread of this program wrote


@triton.jit
def _ss2d_bwd_kernel(x_ptr, dy_ptr, dts_ptr, w_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, start_ptr, carry_in_ptr,
                     tile_ptr, dx_ptr, ddts_part_ptr, dw_part_ptr, dbias_part_ptr, dA_part_ptr, dB_part_ptr,
                     dC_part_ptr, dD_part_ptr, H, W, channels, n_seg, pair,
                     K: tl.constexpr, R: tl.constexpr, RP: tl.constexpr, N: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_L: tl.constexpr, SEG_STEPS: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                     DOT: tl.constexpr, IEEE: tl.constexpr):
    """Gradients of segment ``program_id(0)`` of direction ``pair`` and of its partner: the states at its
    tile starts (stored to ``tile_ptr``), then the tiles backwards: forward states re-scanned, the adjoint
    scanned from the carry of the next segment, du added into the merged float32 dx."""
    seg = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2)
    n_dblocks = tl.num_programs(1)
    batch = tl.num_programs(2)
    d0 = pid_d * BLOCK_D
    L = H * W
    chan = d0 + tl.arange(0, BLOCK_D)
    rows = tl.arange(0, BLOCK_D * N)
    cols = tl.arange(0, BLOCK_L)
    states = tl.arange(0, N)
    ranks = tl.arange(0, RP)
    for j in range(2 if K > 1 else 1):
        k = pair + j * (K // 2)
        kc, A_rows, bias, Dv, w_tile, st_off, dts_base = _setup(A_ptr, bias_ptr, D_ptr, w_ptr, pid_b, k, d0, chan,
                                                                rows, channels, L, K, R, RP, N)
        s = _pair_segment(seg, j, n_seg)
        l0 = _segment_start(s, k, L, n_seg, BLOCK_L * SEG_STEPS, K)
        row_off = ((pid_b * K + k) * channels + d0) * N + rows
        seg_off = s.to(tl.int64) * batch * K * channels * N + row_off
        tile_off = (s.to(tl.int64) * batch * K * channels * N + row_off) * SEG_STEPS
        carry = tl.load(start_ptr + seg_off)
        for i in range(SEG_STEPS):  # the state at every tile start of the segment
            tl.store(tile_ptr + tile_off + i, carry)
            l = l0 + i * BLOCK_L + cols
            valid, offs, u, dt_raw, dt, Bv, a, drive = _tile(
                x_ptr, dts_ptr, w_ptr, B_ptr, pid_b, chan, l, H, W, L, channels, k, dts_base, st_off, w_tile, bias, A_rows,
                K, R, RP, N, BLOCK_D, BLOCK_L, CHANNELS_LAST, DOT, IEEE)
            _, h = tl.associative_scan((a, tl.where(cols[None, :] == 0, drive + a * carry[:, None], drive)), axis=1,
                                       combine_fn=_first_order)
            carry = _last(h, cols, BLOCK_L)
        tl.debug_barrier()
        # partial sums: dB, dC (batch, K, n_dblocks, N, L); ddts (n_dblocks, batch, K, R, L); per program the rest
        part_off = (((pid_b * K + k) * n_dblocks + pid_d) * N + states).to(tl.int64) * L
        ddts_base = ((pid_d * batch + pid_b) * K + k).to(tl.int64) * R * L
        prog = s.to(tl.int64) * batch + pid_b  # (n_seg, batch, ...) partials
        adj_carry = tl.load(carry_in_ptr + seg_off)
        dA_acc = tl.zeros([BLOCK_D * N], tl.float32)
        dD_acc = tl.zeros([BLOCK_D], tl.float32)
        dbias_acc = tl.zeros([BLOCK_D], tl.float32)
        dw_acc = tl.zeros([BLOCK_D, RP], tl.float32)
        for step in range(SEG_STEPS):
            i = SEG_STEPS - 1 - step
            l = l0 + i * BLOCK_L + cols
            valid, offs, u, dt_raw, dt, Bv, a, drive = _tile(
                x_ptr, dts_ptr, w_ptr, B_ptr, pid_b, chan, l, H, W, L, channels, k, dts_base, st_off, w_tile, bias, A_rows,
                K, R, RP, N, BLOCK_D, BLOCK_L, CHANNELS_LAST, DOT, IEEE)
            h0 = tl.load(tile_ptr + tile_off + i)
            _, h = tl.associative_scan((a, tl.where(cols[None, :] == 0, drive + a * h0[:, None], drive)), axis=1,
                                       combine_fn=_first_order)
            Cv = tl.load(C_ptr + st_off[:, None] + l[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
            C_rows = _expand_states(Cv, BLOCK_D, N, BLOCK_L)
            dy = tl.load(dy_ptr + offs, mask=valid[None, :], other=0.0).to(tl.float32)  # merge's adjoint: a gather
            dD_acc += tl.sum(dy * u, axis=1)
            tl.store(dC_part_ptr + part_off[:, None] + l[None, :],
                     _sum_channels(h * _expand(dy, BLOCK_D, N, BLOCK_L), BLOCK_D, N, BLOCK_L), mask=valid[None, :])
            g, adj_carry = _adjoint(a, _expand(dy, BLOCK_D, N, BLOCK_L) * C_rows, adj_carry, cols, BLOCK_L)
            # g * a_t * h_{t-1}: the gradient w.r.t. delta*A, without dividing by a
            g_decay = tl.where(valid[None, :], g * (h - drive), 0.0)
            dA_acc += tl.sum(g_decay * _expand(dt, BLOCK_D, N, BLOCK_L), axis=1)
            gB = _sum_states(g * _expand_states(Bv, BLOCK_D, N, BLOCK_L), BLOCK_D, N, BLOCK_L)
            tl.store(dB_part_ptr + part_off[:, None] + l[None, :],
                     _sum_channels(g * _expand(dt * u, BLOCK_D, N, BLOCK_L), BLOCK_D, N, BLOCK_L),
                     mask=valid[None, :])
            ddt = _sum_states(g_decay * A_rows[:, None], BLOCK_D, N, BLOCK_L) + gB * u
            ddt = tl.where(valid[None, :], ddt * tl.sigmoid(dt_raw), 0.0)  # through the softplus
            dbias_acc += tl.sum(ddt, axis=1)
            # the low-rank projection: dW_dt += ddt @ dts^T, ddts = W_dt^T @ ddt
            if DOT:
                dw_acc += _matmul(ddt, tl.trans(_dts_tile(dts_ptr, dts_base, l, valid, L, R, RP)), IEEE)
                tl.store(ddts_part_ptr + ddts_base + ranks[:, None] * L + l[None, :],
                         _matmul(tl.trans(w_tile), ddt, IEEE), mask=(ranks[:, None] < R) & valid[None, :])
            else:
                for r in range(R):
                    w_r = tl.load(w_ptr + kc * R + r).to(tl.float32)
                    d_r = tl.load(dts_ptr + dts_base + r * L + l, mask=valid, other=0.0).to(tl.float32)
                    dw_acc += tl.where(ranks[None, :] == r, tl.sum(ddt * d_r[None, :], axis=1)[:, None], 0.0)
                    tl.store(ddts_part_ptr + ddts_base + r * L + l, tl.sum(ddt * w_r[:, None], axis=0), mask=valid)
            du = gB * dt + dy * Dv[:, None]
            du += tl.load(dx_ptr + offs, mask=valid[None, :] & (k > 0), other=0.0)
            tl.store(dx_ptr + offs, du, mask=valid[None, :])
        tl.store(dA_part_ptr + (prog * K * channels + k * channels + d0) * N + rows, dA_acc)
        tl.store(dD_part_ptr + prog * K * channels + kc, dD_acc)
        tl.store(dbias_part_ptr + prog * K * channels + kc, dbias_acc)
        tl.store(dw_part_ptr + ((prog * K * channels + kc) * R)[:, None] + ranks[None, :], dw_acc,
                 mask=ranks[None, :] < R)
        tl.debug_barrier()  # the partner adds onto the du this program wrote


def _geometry(x, tensors, channels_last):
    if channels_last:
        batch, height, width, channels = x.shape
    else:
        batch, channels, height, width = x.shape
    length, d_state, dt_rank = height * width, tensors[4].shape[1], tensors[1].shape[2]
    block_d = 1
    while block_d * 2 * d_state <= SS2D_TILE["rows"] and channels % (block_d * 2) == 0:
        block_d *= 2
    block_l = min(SS2D_TILE["block_l"], max(16, triton.next_power_of_2(length)))
    seg_steps = max(1, min(SS2D_TILE["seg_steps"], triton.cdiv(length, block_l)))
    dot = block_d >= 16 and dt_rank >= SS2D_TILE["dot_min_rank"]  # tl.dot needs 16-wide tiles
    flags = dict(K=tensors[1].shape[1], R=dt_rank, RP=max(16 if dot else 1, triton.next_power_of_2(dt_rank)),
                 N=d_state, BLOCK_D=block_d, BLOCK_L=block_l, SEG_STEPS=seg_steps, CHANNELS_LAST=channels_last,
                 DOT=dot, IEEE=tensors[1].dtype == torch.float32,
                 num_warps=SS2D_TILE["num_warps"] if d_state < 8 else SS2D_TILE["num_warps_large_state"])
    n_seg = triton.cdiv(length, block_l * seg_steps)
    return dict(batch=batch, channels=channels, height=height, width=width, n_seg=n_seg), flags


def _segment_starts(tensors, dy, geo, flags):
    """(start states, adjoint carries or None), each (n_seg, batch*K*D*N) float32."""
    batch, channels, n_seg = geo["batch"], geo["channels"], geo["n_seg"]
    k, n = flags["K"], flags["N"]
    n_rows = batch * k * channels * n
    dev = tensors[0].device
    decay, end = (torch.empty(n_seg, n_rows, device=dev, dtype=torch.float32) for _ in range(2))
    adj = torch.empty_like(decay) if dy is not None else decay
    _summary_kernel[(n_seg, channels // flags["BLOCK_D"], batch * k)](
        *tensors, dy if dy is not None else tensors[0], decay, end, adj, geo["height"], geo["width"], channels, n_seg,
        ADJOINT=dy is not None, **flags)
    start = torch.empty_like(decay)
    carry_in = torch.empty_like(decay) if dy is not None else start
    block = 128
    _carry_kernel[(triton.cdiv(n_rows, block),)](decay, end, adj, start, carry_in, n_rows, n_seg, BLOCK=block,
                                                  ADJOINT=dy is not None)
    return start, (carry_in if dy is not None else None)


def _pairs(k: int) -> range:
    return range(max(1, k // 2))


def ss2d_scan_fwd(x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last):
    tensors = [t.contiguous() for t in (x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds)]
    geo, flags = _geometry(x, tensors, channels_last)
    start, _ = _segment_starts(tensors, None, geo, flags)
    out = torch.empty(x.shape, dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
    grid = (geo["n_seg"], geo["channels"] // flags["BLOCK_D"], geo["batch"])
    for pair in _pairs(directions):  # in order: the second pair adds onto the first
        _ss2d_fwd_kernel[grid](*tensors, start, out, geo["height"], geo["width"], geo["channels"], geo["n_seg"], pair,
                               **flags)
    return out


def ss2d_scan_bwd(dy, x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last):
    """Gradients (dx, ddts, ddt_weight, ddt_bias, dA, dBs, dCs, dDs) in the dtypes of the inputs."""
    tensors = [t.contiguous() for t in (x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds)]
    dy = dy.contiguous()
    geo, flags = _geometry(x, tensors, channels_last)
    batch, channels, n_seg = geo["batch"], geo["channels"], geo["n_seg"]
    k, n, r, length = directions, flags["N"], flags["R"], geo["height"] * geo["width"]
    n_dblocks, dev, f32 = channels // flags["BLOCK_D"], x.device, torch.float32
    start, carry_in = _segment_starts(tensors, dy, geo, flags)
    tile_states = torch.empty(n_seg, batch * k * channels * n, flags["SEG_STEPS"], device=dev, dtype=f32)
    dx = torch.empty(x.shape, device=dev, dtype=f32)
    ddts_part = torch.empty(n_dblocks, batch, k, r, length, device=dev, dtype=f32)
    dw_part = torch.empty(n_seg, batch, k, channels, r, device=dev, dtype=f32)
    dbias_part = torch.empty(n_seg, batch, k * channels, device=dev, dtype=f32)
    dD_part = torch.empty_like(dbias_part)
    dA_part = torch.empty(n_seg, batch, k * channels * n, device=dev, dtype=f32)
    dB_part = torch.empty(batch, k, n_dblocks, n, length, device=dev, dtype=f32)
    dC_part = torch.empty_like(dB_part)
    for pair in _pairs(directions):
        _ss2d_bwd_kernel[(n_seg, n_dblocks, batch)](
            tensors[0], dy, *tensors[1:], start, carry_in, tile_states, dx, ddts_part, dw_part, dbias_part, dA_part,
            dB_part, dC_part, dD_part, geo["height"], geo["width"], channels, n_seg, pair, **flags)
    _, dts, dt_weight, dt_bias, A, Bs, Cs, Ds = tensors
    return (dx.to(x.dtype), ddts_part.sum(0).to(dts.dtype), dw_part.sum((0, 1)).to(dt_weight.dtype),
            dbias_part.sum((0, 1)).to(dt_bias.dtype), dA_part.sum((0, 1)).view_as(A).to(A.dtype),
            dB_part.sum(2).to(Bs.dtype), dC_part.sum(2).to(Cs.dtype), dD_part.sum((0, 1)).to(Ds.dtype))
