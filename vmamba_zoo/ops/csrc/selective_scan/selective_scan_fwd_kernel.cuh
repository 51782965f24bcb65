// Selective scan forward kernel: y = scan(...) (+ D u) (* silu(z)), fp32 state and sums.
//
// One warp per (batch, channel). For each chunk of kChunk positions (lane l holds positions
// l*kItems ... l*kItems + kItems - 1 of it) and each state row n:
//   1. every lane folds its kItems steps h -> a_i h + b_i (a_i = exp(dt_i A_n), b_i = dt_i B_i u_i)
//      into one affine map,
//   2. a warp scan of those maps gives each lane the map from the chunk's start to its own start,
//   3. applied to the state carried in from the previous chunk, it gives the lane's starting state,
//      from which the lane re-walks its kItems steps and adds C_i h_i to y_i.
// The state at the chunk's end (lane 31's map applied to the carry) is carried to the next chunk
// in shared memory (one float per state row and warp).
// Loads run one step ahead, raw: u and delta of the next chunk while this one is walked, and B/C of the
// next (chunk, state row) pair while this pair is; the walk waits on memory only where it has run out of
// independent work. nvidia-h200, VMamba-T stage-0 shape, kernel alone, with / without it: 1.76 / 2.05 ms at
// d_state 16 (the Mamba mixer's), 0.80 / 0.75 at d_state 1 (benchmarks/cuda_scan_check_h200_2026-12-03.txt).
// Rows of whole 16-byte spans (whole_aligned_spans: lengths that are multiples of 8, as at every VMamba stage) take
// a copy of the loop whose loads and stores carry no per-lane tests (session 21: the generic loads' register copy
// waited on the loads issued a chunk ahead).
// A training forward also stores the state at every chunk start (p.chunk_states) for the backward.
// kSingleState: a build for d_state 1 (VMamba's), whose carry stays in a register (no shared memory, no warp
// barriers), and whose one-row loop the compiler can flatten. With it, D*u and dt*u taken once per chunk, and
// registers capped for 6 blocks (24 warps) per SM instead of 4: 0.81 -> 0.63 ms at d_state 1, 1.70 -> 1.38 at
// d_state 16 (benchmarks/cuda_fwd_variants_h200_2026-12-03.txt). The cap spills a few registers to L1; the
// occupancy it buys is worth more (the kernel waits on memory latency, not bandwidth).
#pragma once

#include "selective_scan_common.cuh"

namespace vmamba_zoo_cuda {
namespace {

// blocks per SM the register allocation must allow (a tuning knob: benchmarks/cuda_scan_variants.py sweeps it)
#ifndef VMAMBA_ZOO_CUDA_FWD_MIN_BLOCKS
#define VMAMBA_ZOO_CUDA_FWD_MIN_BLOCKS 6
#endif

// Which build a launch runs, and the shared memory it needs in floats (the launchers and the CPU emulation use both)
inline bool fwd_single_state(const SelectiveScanParams& p) { return p.d_state == 1; }
inline size_t fwd_smem_floats(const SelectiveScanParams& p) {
  return fwd_single_state(p) ? 0 : static_cast<size_t>(p.warps_per_block) * p.d_state;  // <= 4 * 256: under 48 KB
}

// One warp's row; kWholeSpans: whole_aligned_spans holds for its rows (loads and stores without per-lane tests)
template <typename input_t, typename output_t, bool kSingleState, bool kWholeSpans>
__device__ __forceinline__ void selective_scan_fwd_row(const SelectiveScanParams& p, const WarpChannel& w,
                                                       float* shared) {
  const int lane = w.lane;
  const int length = p.length, d_state = kSingleState ? 1 : p.d_state;

  const int64_t row = (static_cast<int64_t>(w.batch) * p.channels + w.channel) * length;
  const input_t* u_row = static_cast<const input_t*>(p.u) + row;
  const input_t* delta_row = static_cast<const input_t*>(p.delta) + row;
  const input_t* z_row = p.z != nullptr ? static_cast<const input_t*>(p.z) + row : nullptr;
  output_t* out_row = static_cast<output_t*>(p.out) + row;
  // B[batch][group][n][:], C likewise; row n is at + n * length
  const int64_t bc_offset = (static_cast<int64_t>(w.batch) * p.groups + w.group) * d_state * length;
  const input_t* B_rows = static_cast<const input_t*>(p.B) + bc_offset;
  const input_t* C_rows = static_cast<const input_t*>(p.C) + bc_offset;
  const float* A_row = p.A + static_cast<int64_t>(w.channel) * d_state;
  const float D_value = p.D != nullptr ? p.D[w.channel] : 0.f;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[w.channel] : 0.f;
  const float A_first_log2e = A_row[0] * kLog2e;

  // the chunk-start states a training forward keeps for the backward ([chunk][n] of this row), or null
  float* const states =
      p.chunk_states != nullptr
          ? p.chunk_states + (static_cast<int64_t>(w.batch) * p.channels + w.channel) * p.n_chunks * d_state
          : nullptr;
  if (states != nullptr) {
    for (int n = lane; n < d_state; n += 32) states[n] = 0.f;  // chunk 0 starts from 0
  }
  float* carry = shared + w.warp * d_state;  // state at the current chunk's start, per state row
  float carry_single = 0.f;  // kSingleState's carry
  if (!kSingleState) {
    for (int n = lane; n < d_state; n += 32) carry[n] = 0.f;
    __syncwarp();
  }

  // one step ahead: past the sequence's end a fetch reads nothing and gives zeros
  RawItems<input_t> u_next = fetch_items<kWholeSpans>(u_row, lane * kItems, length);
  RawItems<input_t> delta_next = fetch_items<kWholeSpans>(delta_row, lane * kItems, length);
  RawItems<input_t> B_next = fetch_items<kWholeSpans>(B_rows, lane * kItems, length);
  RawItems<input_t> C_next = fetch_items<kWholeSpans>(C_rows, lane * kItems, length);
  for (int chunk = 0; chunk < p.n_chunks; ++chunk) {
    const int pos0 = chunk * kChunk + lane * kItems;
    const RawItems<input_t> u_raw = u_next, delta_raw = delta_next;
    RawItems<input_t> z_raw;  // used at the chunk's end
    if (z_row != nullptr) z_raw = fetch_items<kWholeSpans>(z_row, pos0, length);
    u_next = fetch_items<kWholeSpans>(u_row, pos0 + kChunk, length);
    delta_next = fetch_items<kWholeSpans>(delta_row, pos0 + kChunk, length);
    float u[kItems], dt[kItems], y[kItems];
    to_floats(u_raw, u);
    to_floats(delta_raw, dt);
    float unused_slope[kItems];
    delta_to_dt(dt, unused_slope, bias, p.delta_softplus, pos0, length);
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      y[i] = D_value * u[i];
      u[i] *= dt[i];  // from here on u holds dt*u, the drive's common factor
    }

    for (int n = 0; n < d_state; ++n) {
      float B_vals[kItems], C_vals[kItems];
      to_floats(B_next, B_vals);
      to_floats(C_next, C_vals);
      const bool last_row = n + 1 == d_state;  // then the next pair is the next chunk's first row
      const int64_t next_row = last_row ? 0 : static_cast<int64_t>(n + 1) * length;
      const int next_pos = last_row ? pos0 + kChunk : pos0;
      B_next = fetch_items<kWholeSpans>(B_rows + next_row, next_pos, length);
      C_next = fetch_items<kWholeSpans>(C_rows + next_row, next_pos, length);
      // A_n log2(e) once per row: exp(dt A) = 2^(dt A log2 e). kSingleState's from before the loop (read here, the
      // load would repeat every chunk: the compiler cannot tell A from the output it writes)
      const float A_n_log2e = kSingleState ? A_first_log2e : A_row[n] * kLog2e;
      float decay[kItems], drive[kItems];
      float lane_a = 1.f, lane_b = 0.f;  // the lane's steps composed: h -> lane_a*h + lane_b
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        decay[i] = fast_exp2(dt[i] * A_n_log2e);
        drive[i] = B_vals[i] * u[i];
        lane_b = fmaf(decay[i], lane_b, drive[i]);
        lane_a *= decay[i];
      }
      warp_scan_forward(lane_a, lane_b, lane);  // now: chunk start -> end of this lane
      const float h_in = kSingleState ? carry_single : carry[n];
      float h = lane_entry<true>(lane_a, lane_b, h_in, lane);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        h = fmaf(decay[i], h, drive[i]);
        y[i] = fmaf(C_vals[i], h, y[i]);
      }
      const float h_out = __shfl_sync(kFullMask, apply_affine(lane_a, lane_b, h_in), 31);
      if (states != nullptr && lane == 0 && chunk + 1 < p.n_chunks) {
        states[static_cast<int64_t>(chunk + 1) * d_state + n] = h_out;
      }
      if (kSingleState) {
        carry_single = h_out;
      } else {
        __syncwarp();  // every lane has read carry[n]
        if (lane == 0) carry[n] = h_out;
        __syncwarp();  // ... and sees the new value next chunk
      }
    }

    if (z_row != nullptr) {  // one branch, not one per item (nvcc does not hoist the test out of the loop)
      float z_vals[kItems];
      to_floats(z_raw, z_vals);
#pragma unroll
      for (int i = 0; i < kItems; ++i) y[i] *= z_vals[i] * sigmoid(z_vals[i]);
    }
    store_items<kWholeSpans>(out_row, pos0, length, y);
  }
}

template <typename input_t, typename output_t, bool kSingleState = false>
__global__ void __launch_bounds__(kMaxWarpsFwd * 32, VMAMBA_ZOO_CUDA_FWD_MIN_BLOCKS)
selective_scan_fwd_kernel(const SelectiveScanParams p) {
  const WarpChannel w = locate_warp(p);
  if (!w.valid) return;  // no block-wide barriers in the forward: spare warps can leave
  if (whole_aligned_spans(p.length, p.u, p.delta, p.z, p.out, p.B, p.C)) {
    selective_scan_fwd_row<input_t, output_t, kSingleState, true>(p, w, dynamic_shared_memory());
  } else {
    selective_scan_fwd_row<input_t, output_t, kSingleState, false>(p, w, dynamic_shared_memory());
  }
}

}  // namespace
}  // namespace vmamba_zoo_cuda
