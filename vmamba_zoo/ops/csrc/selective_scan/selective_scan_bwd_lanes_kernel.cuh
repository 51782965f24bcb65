// Selective scan backward at d_state 1 from a training forward's saved states: one channel a lane.
//
// The chunked backward (selective_scan_bwd_kernel.cuh) lays a warp along the positions of one channel. Every chunk
// it rebuilds h and runs the adjoint with two warp scans, and sums dB/dC over its block's channels between two
// block barriers: about 3.2 warp instructions an element at d_state 1 in the sm_90 SASS, which an H200 cannot issue
// fast enough for 70% of copy bandwidth (benchmarks/scan_issue_floors.md).
// Here a warp holds 32 channels of one group, a lane each, and every lane walks its row backwards kItems positions
// (a span) at a time, step by step:
//   - the state before the span is the forward's saved one (states_stride(1) == kItems), so h is rebuilt over the
//     span without a scan, and the adjoint g_t = a_{t+1} g_{t+1} + dy_t C_t runs straight through from the
//     following span's (the carry a_s g_s, as in the chunked kernel);
//   - B and C are the same for every lane of the warp (one group), one broadcast load each;
//   - dB and dC are summed over the warp's 32 channels in shared memory: one fp32 slice per warp, no block barrier.
// Loads run one span ahead, as in the other kernels. The host runs it for d_state 1 with saved states only.
#pragma once

#include "selective_scan_common.cuh"

namespace vmamba_zoo_cuda {
namespace {

// registers for this many one-warp blocks per SM (a tuning knob, as VMAMBA_ZOO_CUDA_BWD_SINGLE_MIN_BLOCKS)
#ifndef VMAMBA_ZOO_CUDA_BWD_LANES_MIN_BLOCKS
#define VMAMBA_ZOO_CUDA_BWD_LANES_MIN_BLOCKS 16
#endif

// The reduction buffer: one row of a span's dB then dC values per lane, rows 16-byte aligned. The second half-warp's
// rows sit 16 floats further on, so when lane k sums column k % 16 over its half's rows, both halves read
// distinct banks.
constexpr int kLanesPitch = 2 * kItems + 4;
constexpr int kLanesSmemFloats = 32 * kLanesPitch + 16;

__device__ __forceinline__ int lanes_row_offset(int row) { return row * kLanesPitch + (row & 16); }

template <typename input_t, typename dout_t, bool kHasZ, bool kWholeSpans>
__device__ __forceinline__ void selective_scan_bwd_lanes_row(const SelectiveScanParams& p, float* reduce) {
  const LaneChannel c = locate_lane_channel(p);  // a spare lane reads no row and writes nothing
  const int lane = c.lane, channel = c.channel, length = p.length, row_length = c.row_length;
  const bool valid = c.valid;
  const int64_t channel_index = c.channel_index, row = c.row;
  const input_t* u_row = static_cast<const input_t*>(p.u) + row;
  const input_t* delta_row = static_cast<const input_t*>(p.delta) + row;
  const input_t* z_row = kHasZ ? static_cast<const input_t*>(p.z) + row : nullptr;
  const dout_t* dout_row = static_cast<const dout_t*>(p.dout) + row;
  const int64_t bc_row = (static_cast<int64_t>(c.batch) * p.groups + c.group) * length;
  const input_t* B_row = static_cast<const input_t*>(p.B) + bc_row;
  const input_t* C_row = static_cast<const input_t*>(p.C) + bc_row;
  // this warp's slice of the dB/dC partial sums: [batch][group][slice][position]
  const int64_t part_row =
      ((static_cast<int64_t>(c.batch) * p.groups + c.group) * p.blocks_per_group + c.slice) * length;
  const float A = p.A[channel], A_log2e = A * kLog2e;
  const float D_value = p.D != nullptr ? p.D[channel] : 0.f;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[channel] : 0.f;
  const float* states = p.chunk_states + channel_index * p.n_states;  // before positions 0, kItems, 2 kItems ...

  const int n_spans = (length + kItems - 1) / kItems;
  int pos0 = (n_spans - 1) * kItems;
  RawItems<input_t> u_next = fetch_items<kWholeSpans>(u_row, pos0, row_length);
  RawItems<input_t> delta_next = fetch_items<kWholeSpans>(delta_row, pos0, row_length);
  RawItems<dout_t> dout_next = fetch_items<kWholeSpans>(dout_row, pos0, row_length);  // 0 for a spare lane
  RawItems<input_t> z_next;
  if (kHasZ) z_next = fetch_items<kWholeSpans>(z_row, pos0, row_length);
  RawItems<input_t> B_next = fetch_items<kWholeSpans>(B_row, pos0, length);
  RawItems<input_t> C_next = fetch_items<kWholeSpans>(C_row, pos0, length);
  float h_next = valid ? states[n_spans - 1] : 0.f;

  float g_carry = 0.f;  // a_s g_s at the first position s of the span walked before (0 after the sequence's end)
  float dA = 0.f, dD = 0.f, dbias = 0.f;
  for (int span = n_spans - 1; span >= 0; --span) {
    pos0 = span * kItems;
    float u[kItems], dt[kItems], dy[kItems], B_vals[kItems], C_vals[kItems], slope[kItems];
    to_floats(u_next, u);
    to_floats(delta_next, dt);
    to_floats(dout_next, dy);
    to_floats(B_next, B_vals);
    to_floats(C_next, C_vals);
    float gate_grad[kItems];  // dout * silu'(z): dz = gate_grad * (y before the gate)
    if (kHasZ) {
      float z_vals[kItems];
      to_floats(z_next, z_vals);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const float sig = sigmoid(z_vals[i]);
        gate_grad[i] = dy[i] * sig * fmaf(z_vals[i], 1.f - sig, 1.f);
        dy[i] *= z_vals[i] * sig;
      }
    }
    const float h_start = h_next;
    const int prev_pos0 = span > 0 ? pos0 - kItems : length;  // the span walked next; none after the first
    u_next = fetch_items<kWholeSpans>(u_row, prev_pos0, row_length);
    delta_next = fetch_items<kWholeSpans>(delta_row, prev_pos0, row_length);
    dout_next = fetch_items<kWholeSpans>(dout_row, prev_pos0, row_length);
    if (kHasZ) z_next = fetch_items<kWholeSpans>(z_row, prev_pos0, row_length);
    B_next = fetch_items<kWholeSpans>(B_row, prev_pos0, length);
    C_next = fetch_items<kWholeSpans>(C_row, prev_pos0, length);
    h_next = valid && span > 0 ? states[span - 1] : 0.f;
    delta_to_dt(dt, slope, bias, p.delta_softplus, pos0, length);

    // forward over the span from the saved state: the decays, and h before each position
    float decay[kItems], h_before[kItems], y[kItems];
    float h = h_start;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      decay[i] = fast_exp2(dt[i] * A_log2e);
      h_before[i] = h;
      h = fmaf(decay[i], h, dt[i] * B_vals[i] * u[i]);
      y[i] = fmaf(C_vals[i], h, D_value * u[i]);  // y before the gate, for dz (dropped without z)
    }

    // adjoint, last position first; h is now the state after the span's last position
    float du[kItems], ddt[kItems], dz[kItems], dB[kItems], dC[kItems];
    float g_scaled = g_carry;  // a_{t+1} g_{t+1}
#pragma unroll
    for (int i = kItems - 1; i >= 0; --i) {
      const float g = fmaf(dy[i], C_vals[i], g_scaled);
      dC[i] = dy[i] * (i + 1 < kItems ? h_before[i + 1] : h);
      dB[i] = g * dt[i] * u[i];
      const float g_B = g * B_vals[i];
      du[i] = fmaf(g_B, dt[i], D_value * dy[i]);
      const float g_decay_h = g * decay[i] * h_before[i];  // g_t * d(a_t h_{t-1}) / d(dt A)
      ddt[i] = fmaf(A, g_decay_h, g_B * u[i]) * slope[i];  // through the softplus (slope 1 without it)
      dA = fmaf(g_decay_h, dt[i], dA);
      dD = fmaf(dy[i], u[i], dD);
      dbias += ddt[i];  // 0 past the sequence's end: no dy there and no adjoint carried in, so g = 0
      dz[i] = kHasZ ? gate_grad[i] * y[i] : 0.f;
      g_scaled = decay[i] * g;
    }
    g_carry = g_scaled;
    if (valid) {
      store_items<kWholeSpans>(static_cast<input_t*>(p.du) + row, pos0, length, du);
      store_items<kWholeSpans>(static_cast<input_t*>(p.ddelta) + row, pos0, length, ddt);
      if (kHasZ) store_items<kWholeSpans>(static_cast<input_t*>(p.dz) + row, pos0, length, dz);
    }

    // dB, dC summed over the warp's channels: lane k adds column k % 16 (dB's kItems, then dC's) over its
    // half-warp's rows, then the other half's sum; the same fixed order on every run
    float4* my_row = reinterpret_cast<float4*>(reduce + lanes_row_offset(lane));
    static_assert(kItems == 8, "a row is two float4 of dB and two of dC");
    my_row[0] = make_float4(dB[0], dB[1], dB[2], dB[3]);
    my_row[1] = make_float4(dB[4], dB[5], dB[6], dB[7]);
    my_row[2] = make_float4(dC[0], dC[1], dC[2], dC[3]);
    my_row[3] = make_float4(dC[4], dC[5], dC[6], dC[7]);
    __syncwarp();
    const int column = lane & 15, first_row = lane & 16;
    float total = 0.f;
#pragma unroll
    for (int r = 0; r < 16; ++r) total += reduce[lanes_row_offset(first_row + r) + column];
    total += __shfl_xor_sync(kFullMask, total, 16);  // partners add the same two numbers: equal bits
    const int pos = pos0 + column % kItems;
    if (lane < 16 && pos < length) (column < kItems ? p.dB_part : p.dC_part)[part_row + pos] = total;
    __syncwarp();  // every lane has read the buffer before the next span rewrites it
  }

  if (valid) {
    p.dA_part[channel_index] = dA;  // (batch, K*D, 1)
    if (p.dD_part != nullptr) p.dD_part[channel_index] = dD;
    if (p.dbias_part != nullptr) p.dbias_part[channel_index] = dbias;
  }
}

template <typename input_t, typename dout_t>
__global__ void __launch_bounds__(32, VMAMBA_ZOO_CUDA_BWD_LANES_MIN_BLOCKS)
selective_scan_bwd_lanes_kernel(const SelectiveScanParams p) {
  float* reduce = dynamic_shared_memory();
  by_gate_and_spans(
      p,
      [&](auto has_z, auto whole) {
        selective_scan_bwd_lanes_row<input_t, dout_t, decltype(has_z)::value, decltype(whole)::value>(p, reduce);
      },
      p.u, p.delta, p.dout, p.du, p.ddelta, p.dz, p.B, p.C);
}

}  // namespace

// The launcher (selective_scan.h), here so the CPU emulation runs it too: one translation unit of each library
// includes this header (selective_scan_bwd.cu; tests/cuda_emulation/emulate.cpp)
cudaError_t launch_selective_scan_bwd_lanes(const SelectiveScanParams& params, ScalarKind input_kind, bool fp32_dout,
                                            cudaStream_t stream) {
  return launch_lanes_by_dtype(params, input_kind, fp32_dout, kLanesSmemFloats, stream, [](auto in, auto dout) {
    return selective_scan_bwd_lanes_kernel<typename decltype(in)::type, typename decltype(dout)::type>;
  });
}

}  // namespace vmamba_zoo_cuda
