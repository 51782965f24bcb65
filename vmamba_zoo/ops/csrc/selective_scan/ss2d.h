// Fused SS2D scan (cross-scan -> delta projection -> selective scan -> cross-merge) CUDA kernels: what the host
// code (ss2d.cpp) and the kernels (ss2d_kernel.cuh, ss2d.cu) share.
//
// Shapes (contiguous; image channels-last; K directions, R = dt_rank, N = d_state, L = H*W):
//   x (batch, H, W, D)        dts (batch, K, R, L), Bs, Cs (batch, K, N, L): in each direction's scan order
//   dt_weight (K, D, R) fp32  dt_bias, Ds (K*D) fp32   A (K*D, N) fp32        out, dy (batch, H, W, D) fp32
// Direction k walks the pixels in its own order (K=4: rows, columns, rows reversed, columns reversed);
// delta = softplus(dt_weight[k] @ dts[k] + dt_bias[k]) is computed on the fly, and the K outputs are summed
// into `out` at the pixel each step came from.
//
// Work split: the 32 lanes of a warp are 32 consecutive channels (a channels-last pixel is then one
// coalesced load), and each lane walks its steps one after the other in registers. The default forward gives
// each (tile of 32 channels, batch, direction) one warp, which adds its outputs atomically (summation order
// varies between runs). Deterministic mode's forward and the re-walking backward: a block is one
// (batch, tile of 32 channels); its warps split the sequence into `segments` pieces, walked in parallel
// and joined by composing each piece's affine map h -> P h + Q in shared memory. The block walks the K
// directions one after another, so it alone adds the K outputs of its pixels: no atomics, deterministic.
//
// Training: the forward also saves the state before every kSS2DSubSteps-th step, states (batch, K, ceil(L/8), N, D)
// fp32, and the backward then needs no forward re-walk: one warp per (channel tile, batch, direction) walks its
// direction once from the end (ss2d_bwd_states_kernel). Each direction writes its own du plane, summed by the host.
#pragma once

#include <algorithm>
#include <cstdint>

#include <cuda_runtime.h>

#include "selective_scan.h"

namespace vmamba_zoo_cuda {

constexpr int kSS2DSubSteps = 8;          // steps walked per sub-chunk (their dts, B, C staged in shared memory)
constexpr int kSS2DSubStepsFwd = 4;       // the forward's: half the registers, twice the warps per SM
constexpr int kSS2DMaxSegments = 16;      // forward warps per block
constexpr int kSS2DMaxSegmentsBwd = 4;    // backward: 4-warp blocks (16 warps an SM at 128 registers, 8 at 230)
constexpr int kSS2DMaxRank = 64;          // dt_rank the kernels are built for (register arrays)
constexpr int kSS2DTargetWarps = 8192;    // enough warps in flight to cover the GPU's latency (~60 per SM)

// Largest rank of each kernel build: the rank loops are unrolled to it and dt_weight's row lives in registers.
// Multiples of 8 up to 32, then 48 and 64: VMamba's dt_rank is ceil(dim / 16) (6, 12, 24, 48 for T).
inline int ss2d_rank_bucket(int rank) {
  return rank <= 8 ? 8 : rank <= 16 ? 16 : rank <= 24 ? 24 : rank <= 32 ? 32 : rank <= 48 ? 48 : 64;
}

// Shared-memory layout sizes (floats) of a kernel built for ranks up to R, d_state N and sub-chunks of S steps.
template <int R, int N, int S = kSS2DSubSteps>
struct SS2DLayout {
  static constexpr int kStride = (R + 2 * N + 3) / 4 * 4;  // one staged step: dts (R), B (N), C (N), padding
  static constexpr int kStage = S * kStride;                 // one warp's staged sub-chunk
  static constexpr int kHeld = ((R + 2 * N) * S + 31) / 32;  // a lane's share of it, held between load and store
  static constexpr int kVals = 2 * N * S * 33;               // backward: per-step dB, dC to sum over lanes
  static constexpr int fwd_floats(int segments) { return 2 * N * segments * 32 + segments * kStage; }
  static constexpr int bwd_floats(int segments) {
    return 3 * N * segments * 32 + (N + 1) * 32 + segments * (kStage + kVals);
  }
};

template <int R, int N>
using SS2DFwdLayout = SS2DLayout<R, N, kSS2DSubStepsFwd>;

struct SS2DParams {
  int batch = 0, height = 0, width = 0, length = 0, channels = 0, directions = 0, rank = 0, d_state = 0;
  int tiles = 0;     // ceil(channels / 32)
  int segments = 1;  // warps per block
  int seg_len = 0;   // steps per segment, a multiple of kSS2DSubSteps (and of kSS2DSubStepsFwd)
  int subs = 0;      // seg_len / kSS2DSubSteps
  // forward: one warp per (tile, batch, direction), outputs added atomically onto a zero-filled `out`
  // (ss2d_fwd_directions_kernel), instead of segments joined in shared memory (ss2d_fwd_kernel, deterministic)
  bool by_direction = false;

  const void* x = nullptr;
  const void* dts = nullptr;
  const float* dt_weight = nullptr;
  const float* dt_bias = nullptr;
  const float* A = nullptr;
  const void* B = nullptr;
  const void* C = nullptr;
  const float* D = nullptr;
  float* out = nullptr;  // forward
  // the state before every kSS2DSubSteps-th step (batch, K, ceil(L / kSS2DSubSteps), N, D): written by the
  // forward when not null, read by the backward from saved states
  float* states = nullptr;

  // backward: dy in; dx (x's dtype) out, summed over the directions in dx_acc (fp32, K > 1); the gradient of
  // the raw delta (before the softplus) per step, ddelta (K, batch, L, D) fp32, for the host's products with
  // dt_weight and dts. Sums the kernel cannot finish alone go to fp32 partials added up by the host in a
  // fixed order: dB_part, dC_part (batch, K, tiles, N, L); dD_part (batch, K*D); dA_part (batch, K*D, N)
  const float* dy = nullptr;
  void* dx = nullptr;
  float* dx_acc = nullptr;
  float* ddelta = nullptr;
  float* dB_part = nullptr;
  float* dC_part = nullptr;
  float* dD_part = nullptr;
  float* dA_part = nullptr;
  // scratch (batch, tiles, segments, subs, 2N, 32): each sub-chunk's start state from a zero segment start,
  // and the product of the decays from the segment start to it
  float* scratch = nullptr;
  // backward from saved states: du of each direction and the raw delta's gradient, (K, batch, L, D) in x's dtype
  void* du_dirs = nullptr;
  void* ddelta_dirs = nullptr;
};

// Shared memory (floats) of the backward from saved states: one warp's stage and its dB, dC sums
template <int R, int N>
constexpr int ss2d_bwd_states_floats() {
  return SS2DLayout<R, N>::kStage + SS2DLayout<R, N>::kVals;
}

// Segments per block: enough blocks x warps to fill the GPU, pieces of at least 4 sub-chunks.
inline void ss2d_split(SS2DParams& p, int max_segments, int target_warps = kSS2DTargetWarps) {
  const int64_t blocks = std::max<int64_t>(1, static_cast<int64_t>(p.batch) * p.tiles);
  int64_t segments = std::max<int64_t>(1, (target_warps + blocks - 1) / blocks);
  segments = std::min<int64_t>(segments, max_segments);
  segments = std::min<int64_t>(segments, std::max<int64_t>(1, p.length / (4 * kSS2DSubSteps)));
  int64_t seg_len = (p.length + segments - 1) / segments;
  seg_len = (seg_len + kSS2DSubSteps - 1) / kSS2DSubSteps * kSS2DSubSteps;
  p.seg_len = static_cast<int>(std::max<int64_t>(seg_len, kSS2DSubSteps));
  p.segments = static_cast<int>(std::max<int64_t>(1, (p.length + p.seg_len - 1) / p.seg_len));
  p.subs = p.seg_len / kSS2DSubSteps;
}

cudaError_t launch_ss2d_fwd(const SS2DParams& params, ScalarKind input_kind, cudaStream_t stream);
cudaError_t launch_ss2d_bwd(const SS2DParams& params, ScalarKind input_kind, cudaStream_t stream);
cudaError_t launch_ss2d_bwd_states(const SS2DParams& params, ScalarKind input_kind, cudaStream_t stream);

}  // namespace vmamba_zoo_cuda
