"""Triton selective scan: forward, and a backward that recomputes the forward states chunk by chunk.

One program per (batch, block of BLOCK_D channels). The (channel, state) pairs of the block are the
rows of a (BLOCK_D * N, BLOCK_L) tile; the sequence is walked in chunks of BLOCK_L positions, each chunk
scanned with ``tl.associative_scan`` and chained through a per-row carry. B and C are shared by a group
of channels, so a channel block never straddles a group (BLOCK_D divides the group size).
The backward writes per-batch / per-block partial sums that torch adds up: deterministic, no atomics.
"""
import torch
import triton
import triton.language as tl

from ..reference.selective_scan import STATES_CHUNK


@triton.jit
def _first_order(a1, b1, a2, b2):
    # compose h -> a1 h + b1 then h -> a2 h + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)


@triton.jit
def _expand(x, BLOCK_D: tl.constexpr, N: tl.constexpr, BLOCK_L: tl.constexpr):
    """(BLOCK_D, BLOCK_L) per channel -> (BLOCK_D * N, BLOCK_L) per (channel, state) row."""
    return tl.reshape(tl.broadcast_to(x[:, None, :], (BLOCK_D, N, BLOCK_L)), (BLOCK_D * N, BLOCK_L))


@triton.jit
def _expand_states(x, BLOCK_D: tl.constexpr, N: tl.constexpr, BLOCK_L: tl.constexpr):
    """(N, BLOCK_L) per state -> (BLOCK_D * N, BLOCK_L) per (channel, state) row."""
    return tl.reshape(tl.broadcast_to(x[None, :, :], (BLOCK_D, N, BLOCK_L)), (BLOCK_D * N, BLOCK_L))


@triton.jit
def _sum_states(x, BLOCK_D: tl.constexpr, N: tl.constexpr, BLOCK_L: tl.constexpr):
    return tl.sum(tl.reshape(x, (BLOCK_D, N, BLOCK_L)), axis=1)


@triton.jit
def _sum_channels(x, BLOCK_D: tl.constexpr, N: tl.constexpr, BLOCK_L: tl.constexpr):
    return tl.sum(tl.reshape(x, (BLOCK_D, N, BLOCK_L)), axis=0)


@triton.jit
def _load_step(u_ptr, dt_ptr, b_ptr, bias, A_rows, pos, L, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
               BLOCK_D: tl.constexpr, N: tl.constexpr, BLOCK_L: tl.constexpr, ch_off, st_off):
    """Decay a = exp(delta*A) and drive delta*B*u at positions ``pos`` (rows = channel x state)."""
    valid = (pos >= 0) & (pos < L)
    u = tl.load(u_ptr + ch_off[:, None] + pos[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
    dt_raw = tl.load(dt_ptr + ch_off[:, None] + pos[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt_raw = dt_raw + bias[:, None]
    dt = dt_raw
    if SOFTPLUS:
        dt = _softplus(dt_raw)
    Bv = tl.load(b_ptr + st_off[:, None] + pos[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
    a = tl.exp(_expand(dt, BLOCK_D, N, BLOCK_L) * A_rows[:, None])
    a = tl.where(valid[None, :], a, 0.0)
    drive = _expand(dt * u, BLOCK_D, N, BLOCK_L) * _expand_states(Bv, BLOCK_D, N, BLOCK_L)
    return u, dt_raw, dt, Bv, a, drive


@triton.jit
def _load_decay(dt_ptr, bias, A_rows, pos, L, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                BLOCK_D: tl.constexpr, N: tl.constexpr, BLOCK_L: tl.constexpr, ch_off):
    """Only the decay a = exp(delta*A) at ``pos`` (0 outside the sequence)."""
    valid = (pos >= 0) & (pos < L)
    dt = tl.load(dt_ptr + ch_off[:, None] + pos[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt = dt + bias[:, None]
    if SOFTPLUS:
        dt = _softplus(dt)
    return tl.where(valid[None, :], tl.exp(_expand(dt, BLOCK_D, N, BLOCK_L) * A_rows[:, None]), 0.0)


@triton.jit
def _block_setup(A_ptr, D_ptr, bias_ptr, L, channels, group_size, n_chunks, N: tl.constexpr,
                 BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Indices and per-channel parameters of this program's (batch, channel block)."""
    pid_b = tl.program_id(0)
    d0 = tl.program_id(1) * BLOCK_D
    group = d0 // group_size
    chan = d0 + tl.arange(0, BLOCK_D)
    rows = tl.arange(0, BLOCK_D * N)
    cols = tl.arange(0, BLOCK_L)
    ch_off = (pid_b * channels + chan).to(tl.int64) * L
    st_off = ((pid_b * (channels // group_size) + group) * N + tl.arange(0, N)).to(tl.int64) * L
    state_off = (pid_b * channels * N + d0 * N + rows).to(tl.int64) * n_chunks  # (batch, KD*N, n_chunks)
    A_rows = tl.load(A_ptr + (d0 + rows // N) * N + rows % N).to(tl.float32)
    bias = tl.zeros([BLOCK_D], tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + chan).to(tl.float32)
    Dv = tl.zeros([BLOCK_D], tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + chan).to(tl.float32)
    return pid_b, d0, chan, rows, cols, ch_off, st_off, state_off, A_rows, bias, Dv


@triton.jit
def _ss_fwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, states_ptr,
                   L, channels, group_size, n_chunks, n_states,
                   N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
                   HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                   WRITE_OUT: tl.constexpr, WRITE_STATES: tl.constexpr, STATES_EVERY: tl.constexpr):
    # WRITE_STATES: the state at every STATES_EVERY-th chunk start, (batch, KD*N, n_states)
    pid_b, d0, chan, rows, cols, ch_off, st_off, state_off, A_rows, bias, Dv = _block_setup(
        A_ptr, D_ptr, bias_ptr, L, channels, group_size, n_chunks, N, BLOCK_D, BLOCK_L, HAS_D, HAS_BIAS)
    states_row = (pid_b * channels * N + d0 * N + rows).to(tl.int64) * n_states
    carry = tl.zeros([BLOCK_D * N], tl.float32)
    for chunk in range(0, n_chunks):
        pos = chunk * BLOCK_L + cols
        if WRITE_STATES:
            if chunk % STATES_EVERY == 0:
                tl.store(states_ptr + states_row + chunk // STATES_EVERY, carry)
        u, dt_raw, dt, Bv, a, drive = _load_step(u_ptr, dt_ptr, B_ptr, bias, A_rows, pos, L, HAS_BIAS, SOFTPLUS,
                                                 BLOCK_D, N, BLOCK_L, ch_off, st_off)
        drive = tl.where(cols[None, :] == 0, drive + a * carry[:, None], drive)
        _, h = tl.associative_scan((a, drive), axis=1, combine_fn=_first_order)
        carry = tl.sum(tl.where(cols[None, :] == BLOCK_L - 1, h, 0.0), axis=1)
        if WRITE_OUT:
            valid = pos < L
            Cv = tl.load(C_ptr + st_off[:, None] + pos[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
            y = _sum_states(h * _expand_states(Cv, BLOCK_D, N, BLOCK_L), BLOCK_D, N, BLOCK_L)
            if HAS_D:
                y += Dv[:, None] * u
            if HAS_Z:
                z = tl.load(z_ptr + ch_off[:, None] + pos[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
                y = y * z * tl.sigmoid(z)
            tl.store(out_ptr + ch_off[:, None] + pos[None, :], y.to(out_ptr.dtype.element_ty), mask=valid[None, :])


@triton.jit
def _ss_bwd_kernel(dout_ptr, u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr,
                   du_ptr, ddt_ptr, dz_ptr, dA_part_ptr, dB_part_ptr, dC_part_ptr, dD_part_ptr, dbias_part_ptr,
                   L, channels, group_size, n_chunks,
                   N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
                   HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    pid_b, d0, chan, rows, cols, ch_off, st_off, state_off, A_rows, bias, Dv = _block_setup(
        A_ptr, D_ptr, bias_ptr, L, channels, group_size, n_chunks, N, BLOCK_D, BLOCK_L, HAS_D, HAS_BIAS)
    # per-(batch, channel block) partial sums of dB, dC: (batch, n_dblocks, N, L)
    part_off = ((pid_b * tl.num_programs(1) + tl.program_id(1)) * N + tl.arange(0, N)).to(tl.int64) * L
    adj_carry = tl.zeros([BLOCK_D * N], tl.float32)  # a_{t+1} * g_{t+1} at the next chunk's first position
    dA_acc = tl.zeros([BLOCK_D * N], tl.float32)
    dD_acc = tl.zeros([BLOCK_D], tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], tl.float32)
    for step in range(0, n_chunks):
        chunk = n_chunks - 1 - step
        pos = chunk * BLOCK_L + cols
        valid = pos < L
        u, dt_raw, dt, Bv, a, drive = _load_step(u_ptr, dt_ptr, B_ptr, bias, A_rows, pos, L, HAS_BIAS, SOFTPLUS,
                                                 BLOCK_D, N, BLOCK_L, ch_off, st_off)
        # states of the chunk, rescanned from the state saved at its start
        h0 = tl.load(states_ptr + state_off + chunk)
        _, h = tl.associative_scan((a, tl.where(cols[None, :] == 0, drive + a * h0[:, None], drive)), axis=1,
                                   combine_fn=_first_order)
        Cv = tl.load(C_ptr + st_off[:, None] + pos[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
        C_rows = _expand_states(Cv, BLOCK_D, N, BLOCK_L)
        dy = tl.load(dout_ptr + ch_off[:, None] + pos[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
        if HAS_Z:
            z = tl.load(z_ptr + ch_off[:, None] + pos[None, :], mask=valid[None, :], other=0.0).to(tl.float32)
            y = _sum_states(h * C_rows, BLOCK_D, N, BLOCK_L) + Dv[:, None] * u
            sig = tl.sigmoid(z)
            tl.store(dz_ptr + ch_off[:, None] + pos[None, :],
                     (dy * y * sig * (1.0 + z * (1.0 - sig))).to(dz_ptr.dtype.element_ty), mask=valid[None, :])
            dy = dy * z * sig
        dD_acc += tl.sum(dy * u, axis=1)
        tl.store(dC_part_ptr + part_off[:, None] + pos[None, :],
                 _sum_channels(h * _expand(dy, BLOCK_D, N, BLOCK_L), BLOCK_D, N, BLOCK_L), mask=valid[None, :])
        # adjoint g_t = a_{t+1} g_{t+1} + dy_t C_t, scanned backwards; a_next loaded one position ahead
        a_next = _load_decay(dt_ptr, bias, A_rows, pos + 1, L, HAS_BIAS, SOFTPLUS, BLOCK_D, N, BLOCK_L, ch_off)
        source = _expand(dy, BLOCK_D, N, BLOCK_L) * C_rows
        source = tl.where(cols[None, :] == BLOCK_L - 1, source + adj_carry[:, None], source)
        a_next = tl.where(cols[None, :] == BLOCK_L - 1, 0.0, a_next)
        _, g = tl.associative_scan((a_next, source), axis=1, combine_fn=_first_order, reverse=True)
        adj_carry = tl.sum(tl.where(cols[None, :] == 0, a * g, 0.0), axis=1)
        B_rows = _expand_states(Bv, BLOCK_D, N, BLOCK_L)
        g_decay = g * (h - drive)  # g * a * h_{t-1}: the gradient w.r.t. delta*A, without dividing by a
        dt_rows = _expand(dt, BLOCK_D, N, BLOCK_L)
        dA_acc += tl.sum(g_decay * dt_rows, axis=1)
        gB = _sum_states(g * B_rows, BLOCK_D, N, BLOCK_L)
        ddt = _sum_states(g_decay * A_rows[:, None], BLOCK_D, N, BLOCK_L) + gB * u
        du = gB * dt + dy * Dv[:, None]
        tl.store(dB_part_ptr + part_off[:, None] + pos[None, :],
                 _sum_channels(g * _expand(dt * u, BLOCK_D, N, BLOCK_L), BLOCK_D, N, BLOCK_L), mask=valid[None, :])
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(dt_raw)
        ddt = tl.where(valid[None, :], ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + ch_off[:, None] + pos[None, :], du.to(du_ptr.dtype.element_ty), mask=valid[None, :])
        tl.store(ddt_ptr + ch_off[:, None] + pos[None, :], ddt.to(ddt_ptr.dtype.element_ty), mask=valid[None, :])
    tl.store(dA_part_ptr + (pid_b * channels * N + d0 * N + rows), dA_acc)
    tl.store(dD_part_ptr + pid_b * channels + chan, dD_acc)
    tl.store(dbias_part_ptr + pid_b * channels + chan, dbias_acc)


# (rows = BLOCK_D * N, BLOCK_L, num_warps): `benchmarks/scan_kernels.py --tune` on nvidia-h200 (2026-11-22)
# found short chunks of few rows best (T stage 0: bwd 14.9 -> 3.5 ms); 2 warps suit d_state >= 8.
TILE = {"rows": 16, "block_l": 32, "num_warps": 4, "num_warps_large_state": 2}


def _block_sizes(group_size: int, d_state: int, length: int):
    """Largest power-of-two channel block dividing the group with BLOCK_D * N <= TILE['rows']."""
    rows_cap = max(1, TILE["rows"] // d_state)
    block_d = 1
    while block_d * 2 <= rows_cap and group_size % (block_d * 2) == 0:
        block_d *= 2
    block_l = min(TILE["block_l"], max(16, triton.next_power_of_2(length)))
    return block_d, block_l


def _contig(t):
    return None if t is None else t.contiguous()


def _num_warps(d_state: int) -> int:
    return TILE["num_warps"] if d_state < 8 else TILE["num_warps_large_state"]


def _prepare(u, delta, A, B, C, D, z, delta_bias):
    batch, channels, length = u.shape
    groups, d_state = B.shape[1], A.shape[1]
    if C.shape[1] != groups:
        raise ValueError("triton selective scan needs B and C with the same number of groups")
    if triton.next_power_of_2(d_state) != d_state:
        raise ValueError(f"triton selective scan needs a power-of-two d_state, got {d_state}")
    group_size = channels // groups
    block_d, block_l = _block_sizes(group_size, d_state, length)
    n_chunks = triton.cdiv(length, block_l)
    tensors = [_contig(t) for t in (u, delta, A, B, C, D, z, delta_bias)]
    dummy = tensors[0]
    return tensors, dummy, (batch, channels, length, groups, d_state, group_size, block_d, block_l, n_chunks)


def _compute_dtype(*tensors):
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output):
    return _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output, False)[0]


def selective_scan_fwd_states(u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output):
    """The forward and its states at every STATES_CHUNK-position chunk start (the op's layout: (batch, K*D,
    chunks, N) float32): every (STATES_CHUNK / BLOCK_L)-th of this kernel's own chunk starts, only those stored."""
    return _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output, True)


def _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output, keep_states):
    (u, delta, A, B, C, D, z, delta_bias), dummy, dims = _prepare(u, delta, A, B, C, D, z, delta_bias)
    batch, channels, length, groups, d_state, group_size, block_d, block_l, n_chunks = dims
    out_dtype = _compute_dtype(u, delta, A, B, C) if fp32_output else u.dtype
    out = torch.empty(u.shape, dtype=out_dtype, device=u.device)
    assert STATES_CHUNK % block_l == 0, (STATES_CHUNK, block_l)
    every = STATES_CHUNK // block_l  # the op's states: every STATES_CHUNK positions, not this kernel's every chunk
    n_states = triton.cdiv(length, STATES_CHUNK)
    states = (torch.empty(batch, channels * d_state, n_states, device=u.device, dtype=torch.float32)
              if keep_states else dummy)
    grid = (batch, channels // block_d)
    _ss_fwd_kernel[grid](u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
                         delta_bias if delta_bias is not None else dummy, out, states,
                         length, channels, group_size, n_chunks, n_states,
                         N=d_state, BLOCK_D=block_d, BLOCK_L=block_l, HAS_D=D is not None, HAS_Z=z is not None,
                         HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, WRITE_OUT=True,
                         WRITE_STATES=keep_states, STATES_EVERY=every, num_warps=_num_warps(d_state))
    if not keep_states:
        return out, None
    return out, states.view(batch, channels, d_state, n_states).transpose(-1, -2).contiguous()


def selective_scan_bwd(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, saved_states=None):
    """Gradients as the reference's. ``saved_states`` goes unused: this kernel needs the states at its own, shorter
    chunks (BLOCK_L), which its first pass recomputes."""
    (u, delta, A, B, C, D, z, delta_bias), dummy, dims = _prepare(u, delta, A, B, C, D, z, delta_bias)
    batch, channels, length, groups, d_state, group_size, block_d, block_l, n_chunks = dims
    dout = dout.contiguous()
    dev, f32 = u.device, torch.float32
    n_dblocks = channels // block_d
    grid = (batch, n_dblocks)
    opt = dict(D=D if D is not None else dummy, z=z if z is not None else dummy,
               bias=delta_bias if delta_bias is not None else dummy)
    flags = dict(N=d_state, BLOCK_D=block_d, BLOCK_L=block_l, HAS_D=D is not None, HAS_Z=z is not None,
                 HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, num_warps=_num_warps(d_state))
    # pass 1: the state at the start of every chunk (recomputed rather than saved by the forward)
    states = torch.empty(batch, channels * d_state, n_chunks, device=dev, dtype=f32)
    _ss_fwd_kernel[grid](u, delta, A, B, C, opt["D"], opt["z"], opt["bias"], dummy, states,
                         length, channels, group_size, n_chunks, n_chunks, WRITE_OUT=False, WRITE_STATES=True,
                         STATES_EVERY=1, **flags)
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else dummy
    dA_part = torch.empty(batch, channels * d_state, device=dev, dtype=f32)
    dB_part = torch.empty(batch, n_dblocks, d_state, length, device=dev, dtype=f32)
    dC_part = torch.empty_like(dB_part)
    dD_part = torch.empty(batch, channels, device=dev, dtype=f32)
    dbias_part = torch.empty_like(dD_part)
    _ss_bwd_kernel[grid](dout, u, delta, A, B, C, opt["D"], opt["z"], opt["bias"], states,
                         du, ddelta, dz, dA_part, dB_part, dC_part, dD_part, dbias_part,
                         length, channels, group_size, n_chunks, **flags)
    per_group = group_size // block_d
    dB = dB_part.view(batch, groups, per_group, d_state, length).sum(2).to(B.dtype)
    dC = dC_part.view(batch, groups, per_group, d_state, length).sum(2).to(C.dtype)
    dA = dA_part.sum(0).view(channels, d_state).to(A.dtype)
    dD = dD_part.sum(0).to(D.dtype) if D is not None else None
    dbias = dbias_part.sum(0).to(delta_bias.dtype) if delta_bias is not None else None
    return du, ddelta, dA, dB, dC, dD, dz if z is not None else None, dbias
