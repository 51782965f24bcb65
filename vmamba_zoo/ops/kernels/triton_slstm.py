"""Triton sLSTM: the whole recurrence in one launch, forward and backward (see :mod:`vmamba_zoo.ops.slstm`).

One program per (block of BLOCK_B sequences of the batch, direction x head); it walks the L positions in a
loop with h, c, n, m in registers, so the per-position kernel launches of an eager loop disappear. The
recurrent matmul of a step is four (BLOCK_B, d) x (d, d) dots, one per gate, in IEEE float32 (no TF32: the
values of the PyTorch reference). The backward runs the reverse recurrence of the gate gradients the same way,
on pre-activations torch recomputes in one batched matmul; torch also forms dR from the gate gradients.
Head widths up to 128 (a gate's (d, d) block of R is one tile).
"""
from contextlib import nullcontext

import torch
import triton
import triton.language as tl

BLOCK_B = 16  # sequences per program: the smallest M of tl.dot


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    return 2.0 * _sigmoid(2.0 * x) - 1.0


@triton.jit
def _log_sigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _tile_offsets(batch, L, HEADS, D: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """Offsets of this program's (BLOCK_B, BLOCK_D) tile at step 0 in a (batch, K, L, heads, D) tensor, its
    mask, and the index of its direction x head."""
    g = tl.program_id(1)
    k, head = g // HEADS, g % HEADS
    K = tl.num_programs(1) // HEADS
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < batch) & (cols[None, :] < D)
    offsets = ((rows[:, None] * K + k) * L * HEADS + head) * D + cols[None, :]
    return offsets, mask, g


@triton.jit
def _slstm_fwd_kernel(wx_ptr, r_ptr, h_ptr, c_ptr, n_ptr, m_ptr, batch, L, HEADS, D: tl.constexpr,
                      BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    state, mask, g = _tile_offsets(batch, L, HEADS, D, BLOCK_B, BLOCK_D)
    # wx is (batch, K, L, heads, 4, D): the same tile with 4x the step and head strides, plus gate * D
    cols = state % D
    gates = (state - cols) * 4 + cols
    # R^T of each gate: element (j_in, j_out) = R[g, gate * D + j_out, j_in]
    j_in, j_out = tl.arange(0, BLOCK_D)[:, None], tl.arange(0, BLOCK_D)[None, :]
    r_mask = (j_in < D) & (j_out < D)
    r_tile = r_ptr + g * 4 * D * D + j_out * D + j_in
    h = tl.zeros((BLOCK_B, BLOCK_D), tl.float32)
    c, n, m = h, h, h
    for t in range(L):
        wx = wx_ptr + gates + t * HEADS * 4 * D
        i = tl.load(wx, mask=mask, other=0.0) + tl.dot(h, tl.load(r_tile, mask=r_mask, other=0.0),
                                                       input_precision="ieee")
        f = tl.load(wx + D, mask=mask, other=0.0) + tl.dot(h, tl.load(r_tile + D * D, mask=r_mask, other=0.0),
                                                           input_precision="ieee")
        z = tl.load(wx + 2 * D, mask=mask, other=0.0) + tl.dot(
            h, tl.load(r_tile + 2 * D * D, mask=r_mask, other=0.0), input_precision="ieee")
        o = tl.load(wx + 3 * D, mask=mask, other=0.0) + tl.dot(
            h, tl.load(r_tile + 3 * D * D, mask=r_mask, other=0.0), input_precision="ieee")
        log_f = _log_sigmoid(f) + m
        m = tl.maximum(log_f, i)
        i_gate, f_gate = tl.exp(i - m), tl.exp(log_f - m)
        c = f_gate * c + i_gate * _tanh(z)
        n = f_gate * n + i_gate
        h = tl.where(mask, _sigmoid(o) * c / n, 0.0)  # zeros in the padding: it feeds the next dot
        step = state + t * HEADS * D
        tl.store(h_ptr + step, h, mask=mask)
        tl.store(c_ptr + step, c, mask=mask)
        tl.store(n_ptr + step, n, mask=mask)
        tl.store(m_ptr + step, m, mask=mask)


@triton.jit
def _slstm_bwd_kernel(pre_ptr, r_ptr, dh_ptr, c_ptr, n_ptr, m_ptr, dpre_ptr, batch, L, HEADS, D: tl.constexpr,
                      BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    state, mask, g = _tile_offsets(batch, L, HEADS, D, BLOCK_B, BLOCK_D)
    cols = state % D
    gates = (state - cols) * 4 + cols
    # R of each gate as (j_out, j_in): the recurrent gradient is dpre_gate @ R_gate
    j_out, j_in = tl.arange(0, BLOCK_D)[:, None], tl.arange(0, BLOCK_D)[None, :]
    r_mask = (j_out < D) & (j_in < D)
    r_tile = r_ptr + g * 4 * D * D + j_out * D + j_in
    zero = tl.zeros((BLOCK_B, BLOCK_D), tl.float32)
    dc, dn, di, df, dz, do = zero, zero, zero, zero, zero, zero
    for step_back in range(L):
        t = L - 1 - step_back
        dh = tl.load(dh_ptr + state + t * HEADS * D, mask=mask, other=0.0)
        dh += tl.dot(di, tl.load(r_tile, mask=r_mask, other=0.0), input_precision="ieee")
        dh += tl.dot(df, tl.load(r_tile + D * D, mask=r_mask, other=0.0), input_precision="ieee")
        dh += tl.dot(dz, tl.load(r_tile + 2 * D * D, mask=r_mask, other=0.0), input_precision="ieee")
        dh += tl.dot(do, tl.load(r_tile + 3 * D * D, mask=r_mask, other=0.0), input_precision="ieee")
        pre = pre_ptr + gates + t * HEADS * 4 * D
        i = tl.load(pre, mask=mask, other=0.0)
        f = tl.load(pre + D, mask=mask, other=0.0)
        z = tl.load(pre + 2 * D, mask=mask, other=0.0)
        o = tl.load(pre + 3 * D, mask=mask, other=0.0)
        here = state + t * HEADS * D
        c = tl.load(c_ptr + here, mask=mask, other=0.0)
        n = tl.load(n_ptr + here, mask=mask, other=1.0)
        m = tl.load(m_ptr + here, mask=mask, other=0.0)
        before = mask & (t > 0)
        c_prev = tl.load(c_ptr + here - HEADS * D, mask=before, other=0.0)
        n_prev = tl.load(n_ptr + here - HEADS * D, mask=before, other=0.0)
        m_prev = tl.load(m_ptr + here - HEADS * D, mask=before, other=0.0)
        i_gate = tl.exp(i - m)
        f_gate = tl.exp(_log_sigmoid(f) + m_prev - m)
        tz, so = _tanh(z), _sigmoid(o)
        dc += dh * so / n
        dn -= dh * so * c / (n * n)
        do = tl.where(mask, dh * (c / n) * so * (1.0 - so), 0.0)
        di = tl.where(mask, (dc * tz + dn) * i_gate, 0.0)
        df = tl.where(mask, (dc * c_prev + dn * n_prev) * f_gate * _sigmoid(-f), 0.0)
        dz = tl.where(mask, dc * i_gate * (1.0 - tz * tz), 0.0)
        out = dpre_ptr + gates + t * HEADS * 4 * D
        tl.store(out, di, mask=mask)
        tl.store(out + D, df, mask=mask)
        tl.store(out + 2 * D, dz, mask=mask)
        tl.store(out + 3 * D, do, mask=mask)
        dc, dn = dc * f_gate, dn * f_gate


def _launch(kernel, wx: torch.Tensor, *args):
    batch, k, length, heads, _, d = wx.shape
    grid = (triton.cdiv(batch, BLOCK_B), k * heads)
    kernel[grid](*args, batch, length, heads, d, BLOCK_B=BLOCK_B, BLOCK_D=max(16, triton.next_power_of_2(d)))


def slstm_fwd(wx: torch.Tensor, R: torch.Tensor):
    wx, R = wx.contiguous(), R.contiguous()
    states = [wx.new_empty(wx.shape[:4] + wx.shape[5:]) for _ in range(4)]  # h, c, n, m
    with torch.cuda.device(wx.device) if wx.is_cuda else nullcontext():
        _launch(_slstm_fwd_kernel, wx, wx, R, *states)
    return tuple(states)


def _h_prev(h: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros_like(h[:, :, :1]), h[:, :, :-1]], dim=2)


def slstm_bwd(dh, wx, R, h, c, n, m):
    batch, k, length, heads, _, d = wx.shape
    h_prev = _h_prev(h)
    # the pre-activations of every step at once: wx + R h_{t-1}
    pre = (wx.view(batch, k, length, heads, 4 * d)
           + torch.einsum("bklhd,khed->bklhe", h_prev, R)).view_as(wx).contiguous()
    dpre = torch.empty_like(pre)
    with torch.cuda.device(wx.device) if wx.is_cuda else nullcontext():
        _launch(_slstm_bwd_kernel, wx, pre, R.contiguous(), dh.contiguous(), c.contiguous(), n.contiguous(),
                m.contiguous(), dpre)
    d_r = torch.einsum("bklhe,bklhd->khed", dpre.view(batch, k, length, heads, 4 * d), h_prev)
    return dpre, d_r
