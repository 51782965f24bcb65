// Selective scan forward, one lane per (batch, channel): each thread walks its channel's whole sequence
// in order, its d_state states in registers. No warp scan, no re-walk, no shuffles: the warp-per-channel
// kernel (selective_scan_fwd_kernel.cuh) does each step's recurrence twice (fold, then re-walk) plus a
// 5-round warp scan per chunk and state row, about 76 instructions per element at d_state 1 on an H200,
// where this kernel needs about half. It needs many channels to fill the GPU (the host picks it when
// batch * channels >= kMinChannelLanes and d_state <= kMaxDStateLanes) and reads its rows through L1:
// a warp's lanes touch 32 rows at once, each lane a 32-byte sector per row and step.
#pragma once

#include "selective_scan_common.cuh"

namespace vmamba_zoo_cuda {
namespace {

// positions a lane takes per step: one 32-byte sector of u / delta (a whole sector per DRAM request)
template <typename T>
constexpr int lane_items() {
  return 32 / static_cast<int>(sizeof(T));
}

// kStates: register slots for the states (>= d_state; slots past d_state stay idle)
template <typename input_t, typename output_t, int kStates>
__global__ void __launch_bounds__(kLaneWarpsFwd * 32)
selective_scan_fwd_lanes_kernel(const SelectiveScanParams p) {
  constexpr int N = lane_items<input_t>();
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= static_cast<int64_t>(p.batch) * p.channels) return;
  const int batch = static_cast<int>(index / p.channels), channel = static_cast<int>(index % p.channels);
  const int group = channel / p.group_size;
  const int length = p.length, d_state = p.d_state;

  const input_t* u_row = static_cast<const input_t*>(p.u) + index * length;
  const input_t* delta_row = static_cast<const input_t*>(p.delta) + index * length;
  const input_t* z_row = p.z != nullptr ? static_cast<const input_t*>(p.z) + index * length : nullptr;
  output_t* out_row = static_cast<output_t*>(p.out) + index * length;
  const int64_t bc_offset = (static_cast<int64_t>(batch) * p.groups + group) * d_state * length;
  const input_t* B_rows = static_cast<const input_t*>(p.B) + bc_offset;
  const input_t* C_rows = static_cast<const input_t*>(p.C) + bc_offset;
  const float D_value = p.D != nullptr ? p.D[channel] : 0.f;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[channel] : 0.f;
  float A[kStates], h[kStates];
#pragma unroll
  for (int n = 0; n < kStates; ++n) {
    A[n] = n < d_state ? p.A[static_cast<int64_t>(channel) * d_state + n] : 0.f;
    h[n] = 0.f;
  }

  // one step ahead, as the warp kernel: the next step's u and delta load while this one is walked
  RawItems<input_t, N> u_next = fetch_items<N>(u_row, 0, length);
  RawItems<input_t, N> delta_next = fetch_items<N>(delta_row, 0, length);
  for (int pos0 = 0; pos0 < length; pos0 += N) {
    const RawItems<input_t, N> u_raw = u_next, delta_raw = delta_next;
    RawItems<input_t, N> z_raw;
    if (z_row != nullptr) z_raw = fetch_items<N>(z_row, pos0, length);
    u_next = fetch_items<N>(u_row, pos0 + N, length);
    delta_next = fetch_items<N>(delta_row, pos0 + N, length);
    float u[N], dt[N], dtu[N], y[N];
    to_floats(u_raw, u);
    to_floats(delta_raw, dt);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const float raw = dt[i] + bias;
      // past the end: dt = 0 leaves the states as they are (and nothing is stored there)
      dt[i] = pos0 + i < length ? (p.delta_softplus ? fast_softplus(raw) : raw) : 0.f;
      dtu[i] = dt[i] * u[i];
      y[i] = D_value * u[i];
    }
#pragma unroll
    for (int n = 0; n < kStates; ++n) {
      if (n >= d_state) break;
      // the same address in every lane of a group: one broadcast load per warp, and L1 hits for its neighbours
      float B_vals[N], C_vals[N];
      to_floats(fetch_items<N>(B_rows + static_cast<int64_t>(n) * length, pos0, length), B_vals);
      to_floats(fetch_items<N>(C_rows + static_cast<int64_t>(n) * length, pos0, length), C_vals);
#pragma unroll
      for (int i = 0; i < N; ++i) {
        h[n] = fmaf(fast_exp(dt[i] * A[n]), h[n], dtu[i] * B_vals[i]);
        y[i] = fmaf(C_vals[i], h[n], y[i]);
      }
    }
    if (z_row != nullptr) {
      float z_vals[N];
      to_floats(z_raw, z_vals);
#pragma unroll
      for (int i = 0; i < N; ++i) y[i] *= z_vals[i] * sigmoid(z_vals[i]);
    }
    store_items(out_row, pos0, length, y);
  }
}

}  // namespace
}  // namespace vmamba_zoo_cuda
