// Selective scan (Mamba S6) CUDA kernels: what the host code (selective_scan.cpp) and the kernels
// (selective_scan_fwd.cu / selective_scan_bwd.cu) share. Kept free of ATen so the .cu files compile fast.
//
// Shapes (all contiguous; K groups of D channels share B and C; L = length, N = d_state):
//   u, delta, z, out, du, ddelta, dz: (batch, K*D, L)    A: (K*D, N) fp32    B, C: (batch, K, N, L)
//   D, delta_bias: (K*D,) fp32
// Recurrence per channel c, with dt = softplus(delta + delta_bias) when asked:
//   h_t = exp(dt_t * A_c) * h_{t-1} + dt_t * B_t * u_t,   y_t = <C_t, h_t> + D_c u_t,   y_t *= silu(z_t)
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace vmamba_zoo_cuda {

// Work split: one warp per (batch, channel); its 32 lanes cover kChunk = 32 * kItems consecutive positions
// (kItems each), and the warp walks the sequence chunk by chunk, carrying the state of every d_state
// row between chunks. A thread block holds the warps of consecutive channels of one group, so the
// backward can sum the group's dB/dC contributions over its channels in shared memory.
constexpr int kItems = 8;
constexpr int kChunk = 32 * kItems;
constexpr int kMaxWarpsFwd = 4;   // forward warps never talk to each other: small blocks schedule best
constexpr int kMaxWarpsBwd = 16;  // backward: the kernel's launch bound (<= 128 registers per thread)
constexpr int kMaxDState = 256;   // shared memory holds a few floats per (warp, state)

enum class ScalarKind : int { kFloat = 0, kHalf = 1, kBFloat16 = 2 };

// Channels per block: at most max_warps, spread evenly over the blocks a group needs (group_size 96 with
// max 16 -> 6 blocks of 16; group_size 6 -> 1 block of 6), so few warps idle.
inline int warps_per_block_for(int group_size, int max_warps) {
  if (group_size <= 0) return 1;  // no channels: nothing is launched
  const int blocks = (group_size + max_warps - 1) / max_warps;
  return (group_size + blocks - 1) / blocks;
}

// Backward channels per block (at most). More channels per block mean fewer dB/dC partial slices (each a
// (N, L) fp32 array per batch and group) but block-wide barriers that stall more warps at once; with few
// state rows the slices are small, so two blocks of 8 warps per SM (128 registers per thread allow 512
// threads) hide the barriers better. The host lets VMAMBA_ZOO_CUDA_BWD_WARPS override it.
inline int default_bwd_max_warps(int d_state) { return d_state <= 4 ? 8 : kMaxWarpsBwd; }

inline int blocks_per_group_for(int group_size, int warps_per_block) {
  return (group_size + warps_per_block - 1) / warps_per_block;
}

inline int chunks_for(int64_t length) { return static_cast<int>((length + kChunk - 1) / kChunk); }

struct SelectiveScanParams {
  int batch = 0, channels = 0, length = 0, d_state = 0, groups = 0, group_size = 0;
  int warps_per_block = 1, blocks_per_group = 1, n_chunks = 1;
  bool delta_softplus = false;

  // inputs; D, z, delta_bias may be null (absent)
  const void* u = nullptr;
  const void* delta = nullptr;
  const float* A = nullptr;
  const void* B = nullptr;
  const void* C = nullptr;
  const float* D = nullptr;
  const void* z = nullptr;
  const float* delta_bias = nullptr;

  // forward output
  void* out = nullptr;

  // backward: dout in, gradients out. Reductions the kernel cannot finish alone go to fp32 partial
  // sums that the host adds up in a fixed order (deterministic, no atomics):
  //   dA_part (batch, K*D, N); dD_part, dbias_part (batch, K*D);
  //   dB_part, dC_part (batch, K, blocks_per_group, N, L): one slice per channel block of a group.
  const void* dout = nullptr;
  void* du = nullptr;
  void* ddelta = nullptr;
  void* dz = nullptr;
  float* dA_part = nullptr;
  float* dB_part = nullptr;
  float* dC_part = nullptr;
  float* dD_part = nullptr;
  float* dbias_part = nullptr;
  // (batch, K*D, n_chunks, N): the state at the start of every chunk (chunk 0's is 0). A training forward writes
  // it when non-null and the backward then reads it (states_saved); otherwise the backward recomputes it here, a
  // pass over u, delta and B of its own (null when there is one chunk).
  float* chunk_states = nullptr;
  bool states_saved = false;
  // the lanes forward: lanes a channel (1, or 2 with half the states each)
  int lanes_per_channel = 1;
};

// Launchers (selective_scan_fwd.cu / selective_scan_bwd.cu). input_kind: dtype of u, delta, B, C, z (and of
// du, ddelta, dz); fp32_out / fp32_dout: whether out / dout are float32 (else input_kind). They return the
// launch error, cudaSuccess when all went well.
cudaError_t launch_selective_scan_fwd(const SelectiveScanParams& params, ScalarKind input_kind, bool fp32_out,
                                      cudaStream_t stream);
cudaError_t launch_selective_scan_bwd(const SelectiveScanParams& params, ScalarKind input_kind, bool fp32_dout,
                                      cudaStream_t stream);
// The forward with one channel a lane, or two (params.lanes_per_channel; selective_scan_fwd_lanes_kernel.cuh):
// d_state kLanesFwdStates only; one-warp blocks, grid (groups * blocks_per_group, batch), blocks_per_group = slices
// of kLanesChannels / lanes_per_channel channels.
cudaError_t launch_selective_scan_fwd_lanes(const SelectiveScanParams& params, ScalarKind input_kind, bool fp32_out,
                                            cudaStream_t stream);
constexpr int kLanesChannels = 32;  // lanes a warp of the lanes kernel, a channel each (or a pair a channel)
constexpr int kLanesFwdStates = 16;
// one-warp blocks of the lanes forward an SM that its registers allow (its launch bound): 12 gives the one-lane build
// 168 registers and lane_pairs 155, neither spilling in the fp16 sm_90 build (16 spilled 128 bytes one lane a channel)
constexpr int kLanesFwdBlocksPerSm = 12;

// Whether the current device can run these kernels (the build holds code for its architecture).
bool selective_scan_kernels_available();

}  // namespace vmamba_zoo_cuda
