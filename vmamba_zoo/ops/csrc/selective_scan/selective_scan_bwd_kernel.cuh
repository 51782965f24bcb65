// Selective scan backward kernel, deterministic (fixed-order sums, no atomics).
//
// Same layout as the forward: one warp per (batch, channel), lanes over the kItems positions of a
// chunk. With g_t the adjoint of h_t (dL/dh_t):
//   g_t = a_{t+1} g_{t+1} + dy_t C_t          (dy = dout * silu(z), or dout)
//   ddt_t += g_t (A_n a_t h_{t-1} + B_t u_t)  du_t += g_t dt_t B_t     dA_n += g_t h_{t-1} a_t dt_t
//   dB_t[n] += g_t dt_t u_t                   dC_t[n] += dy_t h_t      summed over the group's channels
// Pass 1 walks the sequence forwards and stores the state at every chunk start, unless a training forward
// saved them (states_saved: the backward then reads u, delta and B once, not twice). Pass 2 walks the chunks
// from last to first; in each it rebuilds h by the forward warp scan from that chunk's stored start, runs the
// adjoint recurrence by the mirrored warp scan (carrying a_s g_s of the chunk's first position s back to the
// previous chunk), and accumulates.
// Per-channel sums over positions (dA, dD, ddelta_bias) stay in the warp; dB/dC are summed over the
// block's channels in shared memory, in warp order, one fp32 slice per block (the host adds the slices).
// Both passes load one step ahead, raw (RawItems): a chunk's u, delta (and dout, z) while the chunk before it
// is walked, and B/C of the next (chunk, state row) pair while this pair is. On nvidia-h200 that took the
// VMamba-T stage-0 backward from 2.43 to 2.05 ms, spills (about 170 bytes at fp16) included; without the
// B/C/dout prefetch it had none but took 2.14.
#pragma once

#include "selective_scan_common.cuh"

namespace vmamba_zoo_cuda {
namespace {

// Shared memory per block, in floats: three per-warp arrays of d_state (chunk-start state carry of
// pass 1, adjoint carry of pass 2, dA sum) and two reduction buffers (dB, dC) of one padded chunk per
// warp. A lane's kItems values sit at lane * (kItems + 1): the pad spreads a store of item i by the 32
// lanes over distinct banks.
// (Tried, session 27: two pairs of buffers in the d_state-1 build, taken in turn by chunk, for one block barrier a
// chunk instead of two. It moved the register allocation, 2 more local loads a chunk, and ran 5% slower on an H100:
// benchmarks/cuda_scan_h100_2026-12-07_session28.txt.)
constexpr int kReductionStride = 32 * (kItems + 1);

// kSingleState: a build for d_state 1 (VMamba's) in blocks of at most kMaxWarpsBwdSingle warps, whose one-row
// loops the compiler can flatten; registers capped for VMAMBA_ZOO_CUDA_BWD_SINGLE_MIN_BLOCKS such blocks per SM.
// nvidia-h200, VMamba-T stage 0: 1.47 ms for the op alone at 2 (128 registers), 2.36 at 3 (85, spilling); through
// autograd 1.74 ms (1.85 in session 10's run, before this build) (benchmarks/cuda_scan_variants_h200_2026-12-03.txt).
constexpr int kMaxWarpsBwdSingle = 8;
#ifndef VMAMBA_ZOO_CUDA_BWD_SINGLE_MIN_BLOCKS
#define VMAMBA_ZOO_CUDA_BWD_SINGLE_MIN_BLOCKS 2
#endif

// d_state 1 runs its own build, unless VMAMBA_ZOO_CUDA_BWD_WARPS asked for wider blocks than it allows
inline bool bwd_single_state(const SelectiveScanParams& p) {
  return p.d_state == 1 && p.warps_per_block <= kMaxWarpsBwdSingle;
}

// the launch's shared memory, in floats (as laid out above)
inline size_t bwd_smem_floats(const SelectiveScanParams& p) {
  return static_cast<size_t>(p.warps_per_block) * (3 * p.d_state + 2 * kReductionStride);
}

// threadIdx.x, read where it is used: the compiler does not keep what is derived from it in registers across the
// chunk loop (the backward is at its 128-register cap; two hoisted offsets cost 16 more bytes of spills)
__device__ __forceinline__ int thread_index_unhoisted() {
#ifdef VMAMBA_ZOO_CUDA_EMULATION
  return static_cast<int>(threadIdx.x);
#else
  int index;
  asm volatile("mov.u32 %0, %%tid.x;" : "=r"(index));
  return index;
#endif
}

// One (chunk, state row)'s dB and dC, summed over the block's warps in warp order (deterministic) from the
// reduction buffers, into the block's slice rows (dB_row / dC_row: the state row's [length] of the slices).
template <bool kSingleState>
__device__ __forceinline__ void sum_block_partials(const float* reduce_B, const float* reduce_C, float* dB_row,
                                                   float* dC_row, int chunk_start, int length, int warps) {
  if (kSingleState && warps == kMaxWarpsBwdSingle) {
    // a full block of the d_state-1 build has one thread per position, and the offsets are known at compile time:
    // about 60 instructions a thread and chunk in the sm_90 SASS, against 2 x 64 for the loop below
    static_assert(kMaxWarpsBwdSingle * 32 == kChunk, "one thread per position of a chunk");
    const int t = thread_index_unhoisted();
    const int offset = (t / kItems) * (kItems + 1) + t % kItems;
    float total_B = 0.f, total_C = 0.f;
#pragma unroll
    for (int k = 0; k < kMaxWarpsBwdSingle; ++k) {
      total_B += reduce_B[offset + k * kReductionStride];
      total_C += reduce_C[offset + k * kReductionStride];
    }
    if (chunk_start + t < length) {
      dB_row[chunk_start + t] = total_B;
      dC_row[chunk_start + t] = total_C;
    }
    return;
  }
  if (!kSingleState && warps == kMaxWarpsBwd) {
    // a full block of the general build has one thread per position of dB, then of dC: 16 loads a thread at offsets
    // known at compile time (sm_90 SASS: 54 instructions a thread and state row, against 92 for the loop below)
    static_assert(kMaxWarpsBwd * 32 == 2 * kChunk, "one thread per position of a chunk's dB and dC");
    const int idx = thread_index_unhoisted();
    const bool is_C = idx >= kChunk;
    const int t = is_C ? idx - kChunk : idx;
    const float* buffer = (is_C ? reduce_C : reduce_B) + (t / kItems) * (kItems + 1) + t % kItems;
    float total = 0.f;
#pragma unroll
    for (int k = 0; k < kMaxWarpsBwd; ++k) total += buffer[k * kReductionStride];
    if (chunk_start + t < length) (is_C ? dC_row : dB_row)[chunk_start + t] = total;
    return;
  }
  for (int idx = threadIdx.x; idx < 2 * kChunk; idx += blockDim.x) {
    const bool is_C = idx >= kChunk;
    const int t = is_C ? idx - kChunk : idx;
    const float* buffer = (is_C ? reduce_C : reduce_B) + (t / kItems) * (kItems + 1) + t % kItems;
    float total = 0.f;
    for (int k = 0; k < warps; ++k) total += buffer[k * kReductionStride];
    if (chunk_start + t < length) (is_C ? dC_row : dB_row)[chunk_start + t] = total;
  }
}

// One warp's row (the kernel's body); kWholeSpans: whole_aligned_spans holds for its rows
template <typename input_t, typename dout_t, bool kSingleState, bool kWholeSpans>
__device__ __forceinline__ void selective_scan_bwd_row(const SelectiveScanParams& p, const WarpChannel& w,
                                                       float* shared) {
  const int lane = w.lane, warp = w.warp, warps = p.warps_per_block;
  const int d_state = kSingleState ? 1 : p.d_state;
  const int length = p.length;
  // A spare warp (past its group's end) runs every loop with an empty sequence, so it reaches the same
  // block barriers and adds exact zeros to the dB/dC sums, and writes nothing.
  const int seq_length = w.valid ? length : 0;

  float* h_carry = shared + warp * d_state;
  float* g_carry = shared + (warps + warp) * d_state;
  float* dA_sum = shared + (2 * warps + warp) * d_state;
  float* reduce_B = shared + 3 * warps * d_state;  // [warp][kReductionStride]
  float* reduce_C = reduce_B + warps * kReductionStride;
  float* my_reduce_B = reduce_B + warp * kReductionStride + lane * (kItems + 1);
  float* my_reduce_C = reduce_C + warp * kReductionStride + lane * (kItems + 1);

  const int64_t row = (static_cast<int64_t>(w.batch) * p.channels + w.channel) * length;
  const input_t* u_row = static_cast<const input_t*>(p.u) + row;
  const input_t* delta_row = static_cast<const input_t*>(p.delta) + row;
  const input_t* z_row = p.z != nullptr ? static_cast<const input_t*>(p.z) + row : nullptr;
  const dout_t* dout_row = static_cast<const dout_t*>(p.dout) + row;
  input_t* du_row = static_cast<input_t*>(p.du) + row;
  input_t* ddelta_row = static_cast<input_t*>(p.ddelta) + row;
  input_t* dz_row = p.dz != nullptr ? static_cast<input_t*>(p.dz) + row : nullptr;
  const int64_t bc_offset = (static_cast<int64_t>(w.batch) * p.groups + w.group) * d_state * length;
  const input_t* B_rows = static_cast<const input_t*>(p.B) + bc_offset;
  const input_t* C_rows = static_cast<const input_t*>(p.C) + bc_offset;
  // this block's slice of the dB/dC partial sums: [batch][group][block_in_group][n][position]
  const int64_t part_offset =
      ((static_cast<int64_t>(w.batch) * p.groups + w.group) * p.blocks_per_group + w.block_in_group) * d_state *
      length;
  float* dB_slice = p.dB_part + part_offset;
  float* dC_slice = p.dC_part + part_offset;
  const float* A_row = p.A + static_cast<int64_t>(w.channel) * d_state;
  // kSingleState: A read once, not every chunk (the compiler cannot tell A from the gradients the loop writes)
  const float A_first = A_row[0];
  const float D_value = p.D != nullptr ? p.D[w.channel] : 0.f;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[w.channel] : 0.f;
  // [chunk][n]: state at each chunk's start (chunk 0 starts at 0 and is not stored)
  float* states = p.chunk_states != nullptr
                      ? p.chunk_states + (static_cast<int64_t>(w.batch) * p.channels + w.channel) * p.n_chunks * d_state
                      : nullptr;

  for (int n = lane; n < d_state; n += 32) {
    h_carry[n] = 0.f;
    g_carry[n] = 0.f;  // nothing follows the last chunk
    dA_sum[n] = 0.f;
  }
  __syncwarp();

  // ---- pass 1: states at the chunk starts (the last chunk's end state is never needed), unless the forward
  // kept them
  if (!p.states_saved) {
    // pass 1 covers the chunks before the last; fetches past their end read nothing
    const int pass_end = seq_length < (p.n_chunks - 1) * kChunk ? seq_length : (p.n_chunks - 1) * kChunk;
    RawItems<input_t> u_next = fetch_items<kWholeSpans>(u_row, lane * kItems, pass_end);
    RawItems<input_t> delta_next = fetch_items<kWholeSpans>(delta_row, lane * kItems, pass_end);
    RawItems<input_t> B_next = fetch_items<kWholeSpans>(B_rows, lane * kItems, pass_end);
    for (int chunk = 0; chunk + 1 < p.n_chunks; ++chunk) {
      const int pos0 = chunk * kChunk + lane * kItems;
      float u[kItems], dt[kItems];
      to_floats(u_next, u);
      to_floats(delta_next, dt);
      u_next = fetch_items<kWholeSpans>(u_row, pos0 + kChunk, pass_end);
      delta_next = fetch_items<kWholeSpans>(delta_row, pos0 + kChunk, pass_end);
      float unused_slope[kItems];
      delta_to_dt(dt, unused_slope, bias, p.delta_softplus, pos0, seq_length);
      for (int n = 0; n < d_state; ++n) {
        float B_vals[kItems];
        to_floats(B_next, B_vals);
        const bool last_row = n + 1 == d_state;  // then the next pair is the next chunk's first row
        B_next = fetch_items<kWholeSpans>(B_rows + (last_row ? 0 : static_cast<int64_t>(n + 1) * length),
                             last_row ? pos0 + kChunk : pos0, pass_end);
        const float A_n_log2e = (kSingleState ? A_first : A_row[n]) * kLog2e;
        float lane_a = 1.f, lane_b = 0.f;
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          const float decay = fast_exp2(dt[i] * A_n_log2e);
          lane_b = fmaf(decay, lane_b, dt[i] * B_vals[i] * u[i]);
          lane_a *= decay;
        }
        warp_scan_forward(lane_a, lane_b, lane);
        const float h_in = h_carry[n];
        const float h_out = __shfl_sync(kFullMask, apply_affine(lane_a, lane_b, h_in), 31);
        __syncwarp();
        if (lane == 0) {
          h_carry[n] = h_out;
          if (w.valid) states[static_cast<int64_t>(chunk + 1) * d_state + n] = h_out;
        }
        __syncwarp();  // orders lane 0's stores (shared and global) before the other lanes' reads
      }
    }
  }

  // ---- pass 2: chunks from last to first
  float dD_lane = 0.f, dbias_lane = 0.f;  // this lane's share of the channel's dD / ddelta_bias
  const int last_pos0 = (p.n_chunks - 1) * kChunk + lane * kItems;
  RawItems<input_t> u_next = fetch_items<kWholeSpans>(u_row, last_pos0, seq_length);
  RawItems<input_t> delta_next = fetch_items<kWholeSpans>(delta_row, last_pos0, seq_length);
  RawItems<dout_t> dout_next = fetch_items<kWholeSpans>(dout_row, last_pos0, seq_length);  // 0 past the end: no adjoint
  RawItems<input_t> z_next;
  if (z_row != nullptr) z_next = fetch_items<kWholeSpans>(z_row, last_pos0, seq_length);
  RawItems<input_t> B_next = fetch_items<kWholeSpans>(B_rows, last_pos0, seq_length);
  RawItems<input_t> C_next = fetch_items<kWholeSpans>(C_rows, last_pos0, seq_length);
  for (int chunk = p.n_chunks - 1; chunk >= 0; --chunk) {
    const int pos0 = chunk * kChunk + lane * kItems;
    const int prev_pos0 = chunk > 0 ? pos0 - kChunk : seq_length;  // the next chunk walked; none after chunk 0
    float u[kItems], dt[kItems], dy[kItems];
    float gate_grad[kItems];  // dout * silu'(z): dz = gate_grad * (y before the gate)
    float y[kItems];          // y before the gate (needed for dz only)
    float ddt[kItems], du[kItems];
    float slope[kItems];      // d softplus(raw) / d raw = sigmoid(raw)
    to_floats(u_next, u);
    to_floats(delta_next, dt);
    to_floats(dout_next, dy);
    u_next = fetch_items<kWholeSpans>(u_row, prev_pos0, seq_length);
    delta_next = fetch_items<kWholeSpans>(delta_row, prev_pos0, seq_length);
    dout_next = fetch_items<kWholeSpans>(dout_row, prev_pos0, seq_length);
    if (z_row != nullptr) {
      float z_vals[kItems];
      to_floats(z_next, z_vals);
      z_next = fetch_items<kWholeSpans>(z_row, prev_pos0, seq_length);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const float sig = sigmoid(z_vals[i]);
        gate_grad[i] = dy[i] * sig * fmaf(z_vals[i], 1.f - sig, 1.f);
        dy[i] *= z_vals[i] * sig;
      }
    }
    delta_to_dt(dt, slope, bias, p.delta_softplus, pos0, seq_length);
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      y[i] = 0.f;
      ddt[i] = 0.f;
      du[i] = 0.f;
    }

    for (int n = 0; n < d_state; ++n) {
      float B_vals[kItems], C_vals[kItems];
      to_floats(B_next, B_vals);
      to_floats(C_next, C_vals);
      const bool last_row = n + 1 == d_state;  // then the next pair is the previous chunk's first row
      const int64_t next_row = last_row ? 0 : static_cast<int64_t>(n + 1) * length;
      B_next = fetch_items<kWholeSpans>(B_rows + next_row, last_row ? prev_pos0 : pos0, seq_length);
      C_next = fetch_items<kWholeSpans>(C_rows + next_row, last_row ? prev_pos0 : pos0, seq_length);
      const float A_n = kSingleState ? A_first : A_row[n];
      const float A_n_log2e = A_n * kLog2e;  // exp(dt A) = 2^(dt A log2 e), as the forward takes it

      // forward: rebuild h over the chunk (as the forward kernel), keeping h_{t-1} of each item
      float decay[kItems], h_before[kItems];
      float lane_a = 1.f, lane_b = 0.f;
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        decay[i] = fast_exp2(dt[i] * A_n_log2e);
        lane_b = fmaf(decay[i], lane_b, dt[i] * B_vals[i] * u[i]);
        lane_a *= decay[i];
      }
      warp_scan_forward(lane_a, lane_b, lane);
      const float h_in = (chunk == 0 || !w.valid) ? 0.f : states[static_cast<int64_t>(chunk) * d_state + n];
      float h = lane_entry<true>(lane_a, lane_b, h_in, lane);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        h_before[i] = h;
        h = fmaf(decay[i], h, dt[i] * B_vals[i] * u[i]);
        y[i] = fmaf(C_vals[i], h, y[i]);
        my_reduce_C[i] = dy[i] * h;  // this channel's dC
      }

      // adjoint: g_i = next_decay_i * g_{i+1} + dy_i C_i, where next_decay is a at the following position.
      // The chunk's last position takes next_decay = 1 and g_{next} = g_carry[n] = a_s g_s of the
      // following chunk's first position s (0 after the last chunk).
      const float first_decay_of_next_lane = __shfl_down_sync(kFullMask, decay[0], 1);
      float lane_ra = 1.f, lane_rb = 0.f;  // this lane's steps composed, last item first
#pragma unroll
      for (int i = kItems - 1; i >= 0; --i) {
        const float next_decay = i + 1 < kItems ? decay[i + 1] : (lane == 31 ? 1.f : first_decay_of_next_lane);
        lane_rb = fmaf(next_decay, lane_rb, dy[i] * C_vals[i]);
        lane_ra *= next_decay;
      }
      warp_scan_backward(lane_ra, lane_rb, lane);  // now: from the chunk's end back to this lane's first item
      // the adjoint at the next lane's first item (the carried-in value for lane 31)
      float g = lane_entry<false>(lane_ra, lane_rb, g_carry[n], lane);
      float dA_lane = 0.f;
#pragma unroll
      for (int i = kItems - 1; i >= 0; --i) {
        const float next_decay = i + 1 < kItems ? decay[i + 1] : (lane == 31 ? 1.f : first_decay_of_next_lane);
        g = fmaf(next_decay, g, dy[i] * C_vals[i]);
        const float g_decay_h = g * decay[i] * h_before[i];  // g_t * d(a_t h_{t-1}) / d(dt A) ...
        ddt[i] = fmaf(A_n, g_decay_h, fmaf(g * B_vals[i], u[i], ddt[i]));
        du[i] = fmaf(g * B_vals[i], dt[i], du[i]);
        dA_lane = fmaf(g_decay_h, dt[i], dA_lane);  // ... times dt for dA
        my_reduce_B[i] = g * dt[i] * u[i];           // this channel's dB
      }
      // after the loop g is the adjoint at this lane's first item; lane 0's is the chunk's first position
      const float g_out = __shfl_sync(kFullMask, decay[0] * g, 0);
      const float dA_chunk = warp_sum(dA_lane);
      __syncwarp();  // every lane has read g_carry[n]
      if (lane == 0) {
        g_carry[n] = g_out;
        dA_sum[n] += dA_chunk;
      }
      __syncwarp();

      // dB/dC over the block's channels: every warp has stored its values; add them in warp order
      __syncthreads();
      sum_block_partials<kSingleState>(reduce_B, reduce_C, dB_slice + static_cast<int64_t>(n) * length,
                                        dC_slice + static_cast<int64_t>(n) * length, chunk * kChunk, length, warps);
      __syncthreads();  // the buffers are rewritten for the next state row
    }

    float dz_vals[kItems];
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const float y_before_gate = fmaf(D_value, u[i], y[i]);
      dz_vals[i] = z_row != nullptr ? gate_grad[i] * y_before_gate : 0.f;
      dD_lane = fmaf(dy[i], u[i], dD_lane);
      du[i] = fmaf(dy[i], D_value, du[i]);
      ddt[i] *= slope[i];  // through the softplus (1 without it)
      if (pos0 + i < seq_length) dbias_lane += ddt[i];
    }
    if (w.valid) {
      store_items<kWholeSpans>(du_row, pos0, length, du);
      store_items<kWholeSpans>(ddelta_row, pos0, length, ddt);
      if (dz_row != nullptr) store_items<kWholeSpans>(dz_row, pos0, length, dz_vals);
    }
  }

  const float dD_total = warp_sum(dD_lane);
  const float dbias_total = warp_sum(dbias_lane);
  __syncwarp();  // lane 0's last dA_sum update is visible to all lanes
  if (w.valid) {
    const int64_t channel_index = static_cast<int64_t>(w.batch) * p.channels + w.channel;
    for (int n = lane; n < d_state; n += 32) p.dA_part[channel_index * d_state + n] = dA_sum[n];
    if (lane == 0) {
      if (p.dD_part != nullptr) p.dD_part[channel_index] = dD_total;
      if (p.dbias_part != nullptr) p.dbias_part[channel_index] = dbias_total;
    }
  }
}

template <typename input_t, typename dout_t, bool kSingleState = false>
__global__ void __launch_bounds__(kSingleState ? kMaxWarpsBwdSingle * 32 : kMaxWarpsBwd * 32,
                                  kSingleState ? VMAMBA_ZOO_CUDA_BWD_SINGLE_MIN_BLOCKS : 1)
selective_scan_bwd_kernel(const SelectiveScanParams p) {
  const WarpChannel w = locate_warp(p);
  // the same branch in every block (it reads only the launch's pointers): the body's block barriers stay aligned
  if (whole_aligned_spans(p.length, p.u, p.delta, p.z, p.dout, p.du, p.ddelta, p.dz, p.B, p.C)) {
    selective_scan_bwd_row<input_t, dout_t, kSingleState, true>(p, w, dynamic_shared_memory());
  } else {
    selective_scan_bwd_row<input_t, dout_t, kSingleState, false>(p, w, dynamic_shared_memory());
  }
}

}  // namespace
}  // namespace vmamba_zoo_cuda
