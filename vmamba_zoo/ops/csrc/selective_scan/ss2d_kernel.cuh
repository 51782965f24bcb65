// Fused SS2D scan kernels, forward and backward (layout and work split: ss2d.h).
//
// Forward, by default (ss2d_fwd_directions_kernel): one warp per (channel tile, batch, direction) walks its
// direction once and adds y_t = <C_t, h_t> + D u_t onto the zero-filled merged output at the step's pixel with
// atomic adds. In deterministic mode (ss2d_fwd_kernel), per direction: (1) each warp walks its segment from a zero
// state, leaving the segment's map h_end = P h_begin + Q per channel in shared memory; (2) each warp composes the
// maps of the segments before its own into its true start state and walks again, adding y onto the merged output
// (stored for the first direction, read-added for the others).
//
// Backward, per direction: (1) the forward walk also composes the adjoint's map over the segment (the carry
// a_t g_t handed to the previous segment is P * carry_in + sum_t (a_s0 ... a_t) C_t dy_t, computable going
// forward) and saves every sub-chunk's start; (2) the start states and incoming adjoint carries are composed
// across segments; (3) the sub-chunks are visited from the last to the first: kSS2DSubSteps steps re-walked
// forward into registers, then the adjoint g_t = a_{t+1} g_{t+1} + C_t dy_t run back over them. The gradient
// of the raw delta (before the softplus) is written per (step, channel), channels-last: the host turns it
// into the gradients of dts, dt_weight and dt_bias with three matrix products, which the tensor-core-less
// cross-lane sums they replace cost more than (nvidia-h200, 2026-11-22). dB and dC, sums over the tile's
// channels, are reduced per sub-chunk through shared memory; per-channel ones (dA, D) are summed over the
// segments in a fixed order.
//
// In training the forward also saves the state before every kSS2DSubSteps-th step, and ss2d_bwd_states_kernel
// replaces steps (1) and (2): one warp per direction visits the sub-chunks from the last, re-walking each from
// its saved start (ss2d_bwd_kernel remains for a backward without saved states).
//
// Every walk goes sub-chunk by sub-chunk: the warp first copies the sub-chunk's dts, B and C (the same for
// all its lanes) into shared memory as floats, so the rank-R projection reads them four at a time.
#pragma once

#include <climits>
#include <type_traits>

#include "selective_scan_common.cuh"
#include "ss2d.h"

// Blocks (of one warp) per SM the forward by direction's registers are capped for, up to rank 32
#ifndef VMAMBA_ZOO_SS2D_FWD_MIN_BLOCKS
#define VMAMBA_ZOO_SS2D_FWD_MIN_BLOCKS 16
#endif
// At 56x56 its warps wait most on the first use of the loads issued a sub-chunk earlier, yet loads 2 or 3 sub-chunks
// ahead (a ring of register sets) were no faster on nvidia-h200, and neither were plain stores for its atomic adds
// (commit 08f4094; benchmarks/ss2d_cuda_builds_h200_2026-12-04.txt)

namespace vmamba_zoo_cuda {
namespace {

// The channels-last element offset (pixel * channels) of step l of direction k, advanced one step at a time: rows
// move by +-channels, columns by +-W * channels and jump to the next column after H steps (no division per step).
struct PixelWalk {
  int offset, left, step, wrap, line;
  __device__ __forceinline__ void advance() {
    if (left == 0) {
      offset += wrap;
      left = line - 1;
    } else {
      offset += step;
      --left;
    }
  }
};

__device__ __forceinline__ PixelWalk walk_from(int l, int k, const SS2DParams& p) {
  const int K = p.directions, H = p.height, W = p.width, C = p.channels;
  const bool reversed = (K == 4 && k >= 2) || (K == 2 && k == 1);
  const bool columns = K == 4 && (k & 1) != 0;
  const int m = reversed ? p.length - 1 - l : l;  // index in row-major (column-major) order
  PixelWalk w;
  if (columns) {
    const int c = m / H, r = m - c * H;
    w.offset = (r * W + c) * C;
    w.line = H;
    w.step = (reversed ? -W : W) * C;
    w.left = reversed ? r : H - 1 - r;  // steps before the walk leaves this column
    w.wrap = (reversed ? (H - 1) * W - 1 : 1 - (H - 1) * W) * C;
  } else {
    w.offset = m * C;
    w.line = INT_MAX;
    w.left = INT_MAX;  // a row-major walk never wraps (L < 2^31)
    w.step = reversed ? -C : C;
    w.wrap = 0;
  }
  return w;
}

// Hides how a pointer was computed from the compiler, so that it keeps the pointer in registers instead of
// re-deriving each address from the kernel parameters (64-bit adds and shifts per access).
template <typename P>
__device__ __forceinline__ void opaque(P*& pointer) {
#ifndef VMAMBA_ZOO_CUDA_EMULATION
  asm volatile("" : "+l"(pointer));
#endif
}

// A read-only global load through a pointer the compiler cannot place (opaque): a plain load there would be generic
template <typename T>
__device__ __forceinline__ T load_global(const T* address) {
#ifdef VMAMBA_ZOO_CUDA_EMULATION
  return *address;
#else
  static_assert(sizeof(T) == 2 || sizeof(T) == 4, "16- or 32-bit elements");
  T value;
  if constexpr (sizeof(T) == 2) {
    unsigned short bits;
    asm volatile("ld.global.nc.b16 %0, [%1];" : "=h"(bits) : "l"(address));
    memcpy(&value, &bits, 2);
  } else {
    unsigned bits;
    asm volatile("ld.global.nc.b32 %0, [%1];" : "=r"(bits) : "l"(address));
    memcpy(&value, &bits, 4);
  }
  return value;
#endif
}

template <typename T>
__device__ __forceinline__ void store_global(T* address, T value) {  // as load_global, a store
#ifdef VMAMBA_ZOO_CUDA_EMULATION
  *address = value;
#else
  static_assert(sizeof(T) == 2 || sizeof(T) == 4, "16- or 32-bit elements");
  if constexpr (sizeof(T) == 2) {
    unsigned short bits;
    memcpy(&bits, &value, 2);
    asm volatile("st.global.b16 [%0], %1;" : : "l"(address), "h"(bits) : "memory");
  } else {
    unsigned bits;
    memcpy(&bits, &value, 4);
    asm volatile("st.global.b32 [%0], %1;" : : "l"(address), "r"(bits) : "memory");
  }
#endif
}

// The element offset of one step per lane, moved S steps on per sub-chunk: lane j keeps step t0 + j % S, and the
// warp reads step i's offset from lane i with one shuffle, where a per-step walk (PixelWalk) costs 5-6 integer
// instructions per step and lane. A step is index m of the direction's scan order, m = c * line + r (0 <= r < line):
// a column walk has line = H, a row walk is one column of line = L. Past the end the offset is 0 (a pixel that
// exists; such steps' values are never used).
struct LaneStep {
  int l, r, c, length, line, dr, dc, row_stride, col_stride;
  bool reversed;

  __device__ __forceinline__ LaneStep(int l0, int S, int k, const SS2DParams& p) : l(l0), length(p.length) {
    const int K = p.directions;
    reversed = (K == 4 && k >= 2) || (K == 2 && k == 1);
    const bool columns = K == 4 && (k & 1) != 0;
    line = columns ? p.height : p.length;
    row_stride = columns ? p.width * p.channels : p.channels;
    col_stride = columns ? p.channels : 0;
    dr = S % line;
    dc = S / line;
    const int m = reversed ? p.length - 1 - l0 : l0;  // may lie past either end: floored, so 0 <= r < line
    c = m >= 0 ? m / line : -((line - 1 - m) / line);
    r = m - c * line;
  }

  __device__ __forceinline__ int offset() const {
    return l >= 0 && l < length ? r * row_stride + c * col_stride : 0;
  }

  __device__ __forceinline__ void advance() { move(true); }   // S steps on
  __device__ __forceinline__ void retreat() { move(false); }  // S steps back

  __device__ __forceinline__ void move(bool on) {
    l += on ? dr + dc * line : -(dr + dc * line);
    if (on != reversed) {  // m grows
      r += dr, c += dc;
      if (r >= line) r -= line, ++c;
    } else {
      r -= dr, c -= dc;
      if (r < 0) r += line, --c;
    }
  }
};

// One lane's channel of one direction: the projection row, the decay rates and the skip.
template <typename T, int N, int R>
struct Direction {
  float w[R], A[N], bias, D;
  const T *dts, *B, *C;  // this (batch, direction)'s rows: + r * L, + n * L

  __device__ __forceinline__ Direction(const SS2DParams& p, int batch, int k, int d) {
    const int kd = k * p.channels + d;
#pragma unroll
    for (int r = 0; r < R; ++r) w[r] = r < p.rank ? p.dt_weight[static_cast<int64_t>(kd) * p.rank + r] : 0.f;
#pragma unroll
    for (int n = 0; n < N; ++n) A[n] = p.A[static_cast<int64_t>(kd) * N + n];
    bias = p.dt_bias[kd];
    D = p.D[kd];
    const int64_t bk = static_cast<int64_t>(batch) * p.directions + k;
    dts = static_cast<const T*>(p.dts) + bk * p.rank * p.length;
    B = static_cast<const T*>(p.B) + bk * N * p.length;
    C = static_cast<const T*>(p.C) + bk * N * p.length;
  }

  // W_dt @ dts + bias of a staged step (before the softplus)
  __device__ __forceinline__ float raw_delta(const float* step) const {
    float even = bias, odd = 0.f;  // two chains: half the dependent FMA latency
#pragma unroll
    for (int q = 0; q < R / 4; ++q) {
      const float4 v = reinterpret_cast<const float4*>(step)[q];
      even = fmaf(w[4 * q], v.x, even);
      odd = fmaf(w[4 * q + 1], v.y, odd);
      even = fmaf(w[4 * q + 2], v.z, even);
      odd = fmaf(w[4 * q + 3], v.w, odd);
    }
    return even + odd;
  }
};

// A warp's copy of sub-chunks of S steps of the dts, B and C rows into its stage as floats: step i at
// stage[i * kStride], dts in columns 0..rank-1, B from column R, C from R + N. Columns rank..R-1 and the padding
// are never written (zeroed once), so the projection can run over all R. With 32 / S lanes per row (32 % S == 0),
// a lane always takes step i = lane % S of rows lane / S + j * 32 / S; the row pointers are worked out once per
// walk, so fetching a sub-chunk is one load per value. In two halves, fetch and put, so that a kernel can issue
// the loads of one sub-chunk while it walks the previous one.
template <typename T, int N, int R, int S>
struct StepSources {
  static_assert(32 % S == 0, "a lane keeps one step of every row it copies");
  static constexpr int kHeld = SS2DLayout<R, N, S>::kHeld;
  static constexpr int kRowsPerLoad = 32 / S;
  template <typename H>
  using Held = H[kHeld];  // a lane's share of a sub-chunk's staged values

  const T* row[kHeld];  // the lane's element of each row at step i of the walk's first sub-chunk
  int step, first_row, rank, live;  // live: the lane's rows below rank + 2N (the rest copy nothing)

  __device__ __forceinline__ StepSources(const Direction<T, N, R>& dir, int rank_, int length, int lane)
      : step(lane % S), first_row(lane / S), rank(rank_) {
    const int rows = rank + 2 * N;
    live = 0;
#pragma unroll
    for (int j = 0; j < kHeld; ++j) {
      const int r = first_row + j * kRowsPerLoad;
      live += r < rows ? 1 : 0;
      const T* base = r < rank ? dir.dts + static_cast<int64_t>(r) * length
                      : r < rank + N ? dir.B + static_cast<int64_t>(r - rank) * length
                                     : dir.C + static_cast<int64_t>(r < rows ? r - rank - N : 0) * length;
      row[j] = base + step;
    }
  }

  // H = T keeps the loaded values raw until put: converting them at once would wait for the loads
  template <typename H>
  __device__ __forceinline__ void fetch(Held<H>& held, int t0, int steps) const {
    const bool in_range = step < steps;
#pragma unroll
    for (int j = 0; j < kHeld; ++j) held[j] = static_cast<H>(in_range && j < live ? row[j][t0] : from_float<T>(0.f));
  }

  template <typename H>
  __device__ __forceinline__ void put(float* stage, const Held<H>& held) const {
    constexpr int kStride = SS2DLayout<R, N, S>::kStride;
#pragma unroll
    for (int j = 0; j < kHeld; ++j) {
      const int r = first_row + j * kRowsPerLoad;
      if (j < live) stage[step * kStride + (r < rank ? r : R + r - rank)] = to_float(held[j]);
    }
  }

  __device__ __forceinline__ void stage_steps(float* stage, int t0, int steps) const {
    Held<float> held;  // all loads first, then the stores: they are in flight together
    fetch<float>(held, t0, steps);
    put<float>(stage, held);
  }
};

// The lane's channel, clamped into range for the spare lanes of the last tile (they compute, never write)
struct Lane {
  int lane, seg, batch, tile, channel, l_begin, l_end;
  bool valid;
};

__device__ __forceinline__ Lane locate_lane(const SS2DParams& p) {
  Lane t;
  t.lane = threadIdx.x & 31;
  t.seg = threadIdx.x >> 5;
  t.tile = blockIdx.x;
  t.batch = blockIdx.y;
  const int channel = t.tile * 32 + t.lane;
  t.valid = channel < p.channels;
  t.channel = t.valid ? channel : p.channels - 1;
  const int64_t begin = static_cast<int64_t>(t.seg) * p.seg_len;
  t.l_begin = static_cast<int>(begin < p.length ? begin : p.length);
  t.l_end = t.l_begin + p.seg_len < p.length ? t.l_begin + p.seg_len : p.length;
  return t;
}

__device__ __forceinline__ void zero_floats(float* buffer, int count, int lane) {
  for (int e = lane; e < count; e += 32) buffer[e] = 0.f;
}

template <typename T, int N, int R>
__global__ void __launch_bounds__(kSS2DMaxSegments * 32) ss2d_fwd_kernel(const SS2DParams p) {
  using Layout = SS2DFwdLayout<R, N>;
  constexpr int S = kSS2DSubStepsFwd;
  const Lane t = locate_lane(p);
  float* const maps = dynamic_shared_memory();  // [segment][P | Q][n][lane]
  float* const stage = maps + 2 * N * p.segments * 32 + t.seg * Layout::kStage;
  zero_floats(stage, Layout::kStage, t.lane);
  const int C = p.channels, L = p.length;
  const int64_t image = static_cast<int64_t>(t.batch) * L * C + t.channel;
  const T* x = static_cast<const T*>(p.x) + image;
  float* out = p.out + image;
  for (int k = 0; k < p.directions; ++k) {
    const Direction<T, N, R> dir(p, t.batch, k, t.channel);
#pragma unroll
    for (int pass = 0; pass < 2; ++pass) {
      // pass 0: the segment from a zero state, h_end = P h_begin + Q; pass 1: from the true start state
      // (the maps of the segments before composed), adding y onto the merged output
      float P[N], h[N];
#pragma unroll
      for (int n = 0; n < N; ++n) P[n] = 1.f, h[n] = 0.f;
      const bool walk_needed = pass == 1 || t.seg + 1 < p.segments;  // no segment reads the last one's map
      if (pass == 1) {
        for (int s = 0; s < t.seg; ++s) {
#pragma unroll
          for (int n = 0; n < N; ++n) {
            h[n] = fmaf(maps[((s * 2) * N + n) * 32 + t.lane], h[n], maps[((s * 2 + 1) * N + n) * 32 + t.lane]);
          }
        }
      }
      for (int t0 = t.l_begin; walk_needed && t0 < t.l_end; t0 += S) {
        const int steps = t.l_end - t0 < S ? t.l_end - t0 : S;
        if (pass == 1 && p.states != nullptr && t.valid && t0 % kSS2DSubSteps == 0) {  // for the backward
          float* saved = p.states + ((static_cast<int64_t>(t.batch) * p.directions + k) *
                                         ((L + kSS2DSubSteps - 1) / kSS2DSubSteps) + t0 / kSS2DSubSteps) * N * C +
                         t.channel;
#pragma unroll
          for (int n = 0; n < N; ++n) saved[n * C] = h[n];
        }
        int offsets[S];
        float u[S], merged[S];
        PixelWalk walk = walk_from(t0, k, p);
#pragma unroll
        for (int i = 0; i < S; ++i) {  // the sub-chunk's loads first, all in flight together
          offsets[i] = walk.offset;
          if (i < steps) {
            u[i] = to_float(x[offsets[i]]);
            merged[i] = pass == 1 && k > 0 ? out[offsets[i]] : 0.f;  // the directions before this one
          }
          walk.advance();
        }
        __syncwarp();  // every lane is done with the previous sub-chunk's stage
        StepSources<T, N, R, S>(dir, p.rank, L, t.lane).stage_steps(stage, t0, steps);  // registers: not kept
        __syncwarp();
#pragma unroll
        for (int i = 0; i < S; ++i) {
          if (i < steps) {
            const float* step = stage + i * Layout::kStride;
            const float dt = fast_softplus(dir.raw_delta(step));
            float y = dir.D * u[i];
#pragma unroll
            for (int n = 0; n < N; ++n) {
              const float a = fast_exp(dt * dir.A[n]);
              h[n] = fmaf(a, h[n], dt * step[R + n] * u[i]);
              P[n] *= a;
              y = fmaf(step[R + N + n], h[n], y);
            }
            if (pass == 1 && t.valid) out[offsets[i]] = merged[i] + y;  // this block owns these pixels
          }
        }
      }
      if (pass == 0) {
#pragma unroll
        for (int n = 0; n < N; ++n) {
          maps[((t.seg * 2) * N + n) * 32 + t.lane] = P[n];
          maps[((t.seg * 2 + 1) * N + n) * 32 + t.lane] = h[n];
        }
      }
      __syncthreads();  // pass 0: the maps are complete; pass 1: the next direction adds onto this one's output
    }
  }
}

// Forward by direction: one warp per (channel tile, batch, direction) walks its direction once, from the first
// step, and adds y onto the zero-filled merged output with atomic adds. No segments, so no second walk: at 56x56
// ss2d_fwd_kernel computes every step twice to join 16 segments. The K warps of a pixel run concurrently, so the
// order of its K additions varies between runs; deterministic mode (torch.use_deterministic_algorithms) runs
// ss2d_fwd_kernel. Few warps share an SM at 56x56 (1536 in all for VMamba-T), so each issues the loads of its next
// sub-chunk before walking the current one. The step offsets come from LaneStep, and whole sub-chunks run a build
// of the walk without the end-of-sequence checks: both cut the integer work per step (69 -> ~45 instructions
// per step at rank 8, counted in the SASS).
template <typename T, int N, int R>
__global__ void __launch_bounds__(32, R <= 32 ? VMAMBA_ZOO_SS2D_FWD_MIN_BLOCKS : 1)
    ss2d_fwd_directions_kernel(const SS2DParams p) {
  using Layout = SS2DLayout<R, N>;
  using Dir = Direction<T, N, R>;
  constexpr int S = kSS2DSubSteps;
  using Sources = StepSources<T, N, R, S>;
  const int lane = threadIdx.x & 31, tile = blockIdx.x, batch = blockIdx.y, k = blockIdx.z;
  const int C = p.channels, L = p.length;
  const bool valid = tile * 32 + lane < C;
  const int channel = valid ? tile * 32 + lane : C - 1;  // spare lanes compute on a copy, never write
  float* const stage = dynamic_shared_memory();
  zero_floats(stage, Layout::kStage, lane);
  const int64_t image = static_cast<int64_t>(batch) * L * C + channel;
  const T* x = static_cast<const T*>(p.x) + image;
  float* out = p.out + image;
  opaque(x), opaque(out);  // a step's address is then one multiply-add on the pointer, not four instructions
  const int64_t bk = static_cast<int64_t>(batch) * p.directions + k;
  float* states = p.states != nullptr ? p.states + bk * ((L + S - 1) / S) * N * C + channel : nullptr;
  const Dir dir(p, batch, k, channel);
  const Sources sources(dir, p.rank, L, lane);
  float A2[N], h[N];  // A2: the decay rates in base 2, one multiplication less per step
#pragma unroll
  for (int n = 0; n < N; ++n) A2[n] = dir.A[n] * kLog2e, h[n] = 0.f;

  // the next sub-chunk's loads, in flight while the current one is walked
  int offsets_next[S];
  T u_next[S];
  typename Sources::template Held<T> held_next;  // raw: converted once they are used, a sub-chunk later
  LaneStep walk(lane % S, S, k, p);
  auto fetch = [&](int t0) {
    const int mine = walk.offset();
    walk.advance();
#pragma unroll
    for (int i = 0; i < S; ++i) {  // no bounds checks: a step past the end reads pixel 0
      offsets_next[i] = __shfl_sync(kFullMask, mine, i);
      u_next[i] = load_global(x + offsets_next[i]);
    }
    sources.template fetch<T>(held_next, t0, L - t0 < S ? L - t0 : S);
  };
  // Branch-free over the sub-chunk, so the compiler can overlap the steps' softplus and decay chains. In the last,
  // partial sub-chunk, steps past the end (staged as zeros) leave h as it is and add nothing.
  auto walk_sub = [&](const int (&offsets)[S], const float (&u)[S], int steps, auto whole) {
    constexpr bool kWhole = decltype(whole)::value;
    float y[S];
#pragma unroll
    for (int i = 0; i < S; ++i) {
      const float* step = stage + i * Layout::kStride;
      const float dt = fast_softplus(dir.raw_delta(step));
      y[i] = dir.D * u[i];
#pragma unroll
      for (int n = 0; n < N; ++n) {
        const float next = fmaf(fast_exp2(dt * A2[n]), h[n], dt * step[R + n] * u[i]);
        h[n] = kWhole || i < steps ? next : h[n];
        y[i] = fmaf(step[R + N + n], h[n], y[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < S; ++i) {  // a spare lane adds 0 to the last channel, which exists
      if (kWhole) {
        add_to(out + offsets[i], valid ? y[i] : 0.f);
      } else {
        add_if(out + offsets[i], y[i], valid && i < steps);
      }
    }
  };
  fetch(0);
  for (int t0 = 0; t0 < L; t0 += S) {
    int offsets[S];
    float u[S];
#pragma unroll
    for (int i = 0; i < S; ++i) offsets[i] = offsets_next[i], u[i] = to_float(u_next[i]);
    __syncwarp();  // every lane is done with the previous sub-chunk's stage
    sources.template put<T>(stage, held_next);
    __syncwarp();
    if (t0 + S < L) fetch(t0 + S);
    if (states != nullptr && valid) {  // the state before step t0, for the backward
#pragma unroll
      for (int n = 0; n < N; ++n) states[(static_cast<int64_t>(t0 / S) * N + n) * C] = h[n];
    }
    if (t0 + S <= L) {
      walk_sub(offsets, u, S, std::true_type{});
    } else {
      walk_sub(offsets, u, L - t0, std::false_type{});
    }
  }
}

// Up to rank 32 the backward is held to 128 registers (4 blocks, 16 warps an SM; spills of 24-128 bytes): on
// nvidia-h200 that beats 12 warps without spills where the grid would not fit in one wave otherwise (VMamba-B
// stage 0: 9.1 -> 5.8 ms). Ranks 48 and 64 would spill 200-300 bytes: they keep their registers.
template <typename T, int N, int R>
__global__ void __launch_bounds__(kSS2DMaxSegmentsBwd * 32, R <= 32 ? 4 : 1) ss2d_bwd_kernel(const SS2DParams p) {
  using Layout = SS2DLayout<R, N>;
  constexpr int S = kSS2DSubSteps;
  static_assert(2 * N * S <= 16, "the dB, dC sums give each of 16 lane pairs one (row, step)");
  const Lane t = locate_lane(p);
  float* const maps = dynamic_shared_memory();         // [segment][P | Qh | Qg][n][lane]
  float* const sums = maps + 3 * N * p.segments * 32;  // [dA (N) | dD][lane]
  float* const stage = sums + (N + 1) * 32 + t.seg * (Layout::kStage + Layout::kVals);
  float* const vals = stage + Layout::kStage;  // [dB (N) | dC (N)][step][lane] rows of 33
  zero_floats(stage, Layout::kStage, t.lane);
  const int C = p.channels, L = p.length, K = p.directions, rank = p.rank;
  const int64_t image = static_cast<int64_t>(t.batch) * L * C + t.channel;
  const T* x = static_cast<const T*>(p.x) + image;
  const float* dy = p.dy + image;
  T* dx = static_cast<T*>(p.dx) + image;
  float* dx_acc = p.dx_acc != nullptr ? p.dx_acc + image : nullptr;
  float* scratch = p.scratch +
                   ((static_cast<int64_t>(t.batch) * p.tiles + t.tile) * p.segments + t.seg) * p.subs * 2 * N * 32 +
                   t.lane;
  // a spare lane reads dy as 0: its gradients, and its share of the cross-lane sums, are then 0
  const float dy_scale = t.valid ? 1.f : 0.f;
  for (int k = 0; k < K; ++k) {
    const Direction<T, N, R> dir(p, t.batch, k, t.channel);
    const int64_t part_row = static_cast<int64_t>(t.batch) * K + k;
    float* ddelta = p.ddelta + (static_cast<int64_t>(k) * p.batch + t.batch) * L * C + t.channel;
    // 1. forward over the segment: its state map (P, Qh), its adjoint map's constant (Qg), sub-chunk starts
    float P[N], Qh[N], Qg[N];
#pragma unroll
    for (int n = 0; n < N; ++n) P[n] = 1.f, Qh[n] = 0.f, Qg[n] = 0.f;
    for (int t0 = t.l_begin; t0 < t.l_end; t0 += S) {
      const int steps = t.l_end - t0 < S ? t.l_end - t0 : S;
      float* saved = scratch + ((t0 - t.l_begin) / S) * 2 * N * 32;
#pragma unroll
      for (int n = 0; n < N; ++n) saved[n * 32] = Qh[n], saved[(N + n) * 32] = P[n];
      float u[S], g_in[S];
      PixelWalk walk = walk_from(t0, k, p);
#pragma unroll
      for (int i = 0; i < S; ++i) {  // the sub-chunk's loads first, all in flight together
        if (i < steps) {
          const int offset = walk.offset;
          u[i] = to_float(x[offset]);
          g_in[i] = dy[offset] * dy_scale;
        }
        walk.advance();
      }
      __syncwarp();
      StepSources<T, N, R, S>(dir, rank, L, t.lane).stage_steps(stage, t0, steps);
      __syncwarp();
#pragma unroll
      for (int i = 0; i < S; ++i) {
        if (i < steps) {
          const float* step = stage + i * Layout::kStride;
          const float dt = fast_softplus(dir.raw_delta(step));
#pragma unroll
          for (int n = 0; n < N; ++n) {
            const float a = fast_exp(dt * dir.A[n]);
            Qh[n] = fmaf(a, Qh[n], dt * step[R + n] * u[i]);
            P[n] *= a;
            Qg[n] = fmaf(P[n], step[R + N + n] * g_in[i], Qg[n]);
          }
        }
      }
    }
#pragma unroll
    for (int n = 0; n < N; ++n) {
      maps[((t.seg * 3) * N + n) * 32 + t.lane] = P[n];
      maps[((t.seg * 3 + 1) * N + n) * 32 + t.lane] = Qh[n];
      maps[((t.seg * 3 + 2) * N + n) * 32 + t.lane] = Qg[n];
    }
    __syncthreads();
    // 2. the state entering this segment and the adjoint carry entering it from the end
    float h_in[N], carry[N];
#pragma unroll
    for (int n = 0; n < N; ++n) h_in[n] = 0.f, carry[n] = 0.f;
    for (int s = 0; s < t.seg; ++s) {
#pragma unroll
      for (int n = 0; n < N; ++n) {
        h_in[n] = fmaf(maps[((s * 3) * N + n) * 32 + t.lane], h_in[n], maps[((s * 3 + 1) * N + n) * 32 + t.lane]);
      }
    }
    for (int s = p.segments - 1; s > t.seg; --s) {
#pragma unroll
      for (int n = 0; n < N; ++n) {
        carry[n] = fmaf(maps[((s * 3) * N + n) * 32 + t.lane], carry[n], maps[((s * 3 + 2) * N + n) * 32 + t.lane]);
      }
    }
    // 3. sub-chunks from the last to the first
    float dA[N], dD = 0.f;
#pragma unroll
    for (int n = 0; n < N; ++n) dA[n] = 0.f;
    const int n_sub = (t.l_end - t.l_begin + S - 1) / S;
    for (int sub = n_sub - 1; sub >= 0; --sub) {
      const int t0 = t.l_begin + sub * S;
      const int steps = t.l_end - t0 < S ? t.l_end - t0 : S;
      const float* saved = scratch + sub * 2 * N * 32;
      float h0[N], h[N];
#pragma unroll
      for (int n = 0; n < N; ++n) h0[n] = h[n] = fmaf(saved[(N + n) * 32], h_in[n], saved[n * 32]);
      int offsets[S];
      float u[S], g_in[S], merged[S], dt[S], slope[S], hs[S][N];  // the decays are recomputed
      PixelWalk walk = walk_from(t0, k, p);
#pragma unroll
      for (int i = 0; i < S; ++i) {  // the sub-chunk's loads first, all in flight together
        offsets[i] = walk.offset;
        if (i < steps) {
          u[i] = to_float(x[offsets[i]]);
          g_in[i] = dy[offsets[i]] * dy_scale;
          merged[i] = k > 0 ? dx_acc[offsets[i]] : 0.f;  // du of the directions before this one
        }
        walk.advance();
      }
      __syncwarp();  // every lane is done with the previous sub-chunk's stage and sums
      StepSources<T, N, R, S>(dir, rank, L, t.lane).stage_steps(stage, t0, steps);
      __syncwarp();
#pragma unroll
      for (int i = 0; i < S; ++i) {
        if (i < steps) {
          const float* step = stage + i * Layout::kStride;
          dt[i] = fast_softplus(dir.raw_delta(step), slope[i]);
#pragma unroll
          for (int n = 0; n < N; ++n) {
            h[n] = fmaf(fast_exp(dt[i] * dir.A[n]), h[n], dt[i] * step[R + n] * u[i]);
            hs[i][n] = h[n];
          }
        }
      }
#pragma unroll
      for (int i = S - 1; i >= 0; --i) {
        if (i >= steps) continue;
        const float* step = stage + i * Layout::kStride;
        float gB = 0.f, ddt = 0.f;
#pragma unroll
        for (int n = 0; n < N; ++n) {
          const float Bv = step[R + n], a = fast_exp(dt[i] * dir.A[n]);
          const float g = fmaf(step[R + N + n], g_in[i], carry[n]);
          const float decayed = a * (i > 0 ? hs[i - 1][n] : h0[n]);  // a_t h_{t-1}
          dA[n] = fmaf(g * dt[i], decayed, dA[n]);
          ddt = fmaf(g, fmaf(dir.A[n], decayed, Bv * u[i]), ddt);
          gB = fmaf(g, Bv, gB);
          carry[n] = a * g;
          vals[(n * S + i) * 33 + t.lane] = g * dt[i] * u[i];            // dB
          vals[((N + n) * S + i) * 33 + t.lane] = g_in[i] * hs[i][n];  // dC
        }
        dD = fmaf(g_in[i], u[i], dD);
        if (t.valid) {
          ddelta[static_cast<int64_t>(t0 + i) * C] = ddt * slope[i];  // through the softplus
          // du merged over the directions in float32, stored once in x's dtype
          const float total = merged[i] + fmaf(dt[i], gB, dir.D * g_in[i]);
          if (k == K - 1) {
            dx[offsets[i]] = from_float<T>(total);
          } else {
            dx_acc[offsets[i]] = total;
          }
        }
      }
      __syncwarp();
      // dB, dC: sums over the tile's 32 channels; lanes j and j + 16 add up half the channels of one
      // (row, step) each, j = row * S + step
      {
        const int j = t.lane & 15, half = t.lane >> 4;
        float sum = 0.f;
        if (j < 2 * N * S) {
#pragma unroll
          for (int c = 0; c < 16; ++c) sum += vals[j * 33 + half * 16 + c];
        }
        sum += __shfl_down_sync(0xffffffffu, sum, 16);
        const int row = j / S, i = j % S;
        if (half == 0 && j < 2 * N * S && i < steps) {
          float* out = row < N ? p.dB_part : p.dC_part;
          out[((part_row * p.tiles + t.tile) * N + row % N) * L + t0 + i] = sum;
        }
      }
    }
    // per-channel gradients of this direction: summed over the segments in order, written by segment 0
    for (int s = 0; s < p.segments; ++s) {
      if (t.seg == s) {
        float* row = sums + t.lane;
#pragma unroll
        for (int n = 0; n < N; ++n) row[n * 32] = (s == 0 ? 0.f : row[n * 32]) + dA[n];
        row[N * 32] = (s == 0 ? 0.f : row[N * 32]) + dD;
      }
      __syncthreads();
    }
    if (t.seg == 0 && t.valid) {
      const int64_t kd = static_cast<int64_t>(t.batch) * K * C + k * C + t.channel;
      const float* row = sums + t.lane;
#pragma unroll
      for (int n = 0; n < N; ++n) p.dA_part[kd * N + n] = row[n * 32];
      p.dD_part[kd] = row[N * 32];
    }
    __syncthreads();  // `sums`, `maps` and dx_acc are reused by the next direction
  }
}

template <typename T, int S, int N, int kHeld>
struct BwdLoads {  // one sub-chunk's global loads: the saved start state, x and dy at its pixels, dts/B/C to stage
  int offsets[S];
  T u[S], held[kHeld];  // raw: converting them at once would wait for the loads
  float g_in[S], h0[N];
};

// Backward from the forward's saved states (the state before every kSS2DSubSteps-th step): one warp per
// (channel tile, batch, direction) visits its sub-chunks from the last to the first, re-walks each forward from
// its saved start into registers and runs the adjoint back over it. No forward re-walk of the whole sequence and
// no segments to join (the adjoint enters the last step as 0): about half the work of ss2d_bwd_kernel. The
// direction's du goes to its own plane (the host sums the K planes in a fixed order), the raw delta's gradient
// in x's dtype (tensor-core products on the host for half inputs).
// Each warp issues the loads of the sub-chunk before the current one while it walks the current one (more
// registers, 12 warps an SM instead of 16: nvidia-h200, VMamba-T stage 1 1.43 -> 1.16 ms, benchmarks/
// ss2d_cuda_variants_h200_2026-12-03.txt). As in the forward by direction, the step offsets come from LaneStep
// (moving back), and whole sub-chunks of whole tiles run a build without the bounds checks and store predicates.
template <typename T, int N, int R>
__global__ void __launch_bounds__(32, R <= 32 ? 12 : 1) ss2d_bwd_states_kernel(const SS2DParams p) {
  using Layout = SS2DLayout<R, N>;
  constexpr int S = kSS2DSubSteps;
  static_assert(2 * N * S <= 16, "the dB, dC sums give each of 16 lane pairs one (row, step)");
  const int lane = threadIdx.x & 31, tile = blockIdx.x, batch = blockIdx.y, k = blockIdx.z;
  const int C = p.channels, L = p.length, K = p.directions;
  const bool valid = tile * 32 + lane < C;
  const bool whole_tile = (tile + 1) * 32 <= C;  // the same for the warp's lanes
  const int channel = valid ? tile * 32 + lane : C - 1;  // spare lanes compute on a copy, never write
  float* const stage = dynamic_shared_memory();
  float* const vals = stage + Layout::kStage;  // [dB (N) | dC (N)][step][lane] rows of 33
  zero_floats(stage, Layout::kStage, lane);
  const int64_t image = static_cast<int64_t>(batch) * L * C + channel;
  const T* x = static_cast<const T*>(p.x) + image;
  const float* dy = p.dy + image;
  const int64_t bk = static_cast<int64_t>(batch) * K + k;
  const int64_t plane = (static_cast<int64_t>(k) * p.batch + batch) * L * C + channel;
  T* du = static_cast<T*>(p.du_dirs) + plane;
  T* ddelta = static_cast<T*>(p.ddelta_dirs) + plane;
  opaque(x), opaque(dy), opaque(du), opaque(ddelta);  // addresses by one multiply-add each (see the forward)
  const int n_sub = (L + S - 1) / S;
  const float* states = p.states + bk * n_sub * N * C + channel;
  const float dy_scale = valid ? 1.f : 0.f;  // a spare lane's share of the cross-lane sums is 0
  const Direction<T, N, R> dir(p, batch, k, channel);
  const StepSources<T, N, R, S> sources(dir, p.rank, L, lane);
  float A2[N], carry[N], dA[N], dD = 0.f;
#pragma unroll
  for (int n = 0; n < N; ++n) A2[n] = dir.A[n] * kLog2e, carry[n] = 0.f, dA[n] = 0.f;
  using Loads = BwdLoads<T, S, N, Layout::kHeld>;
  LaneStep walk((n_sub - 1) * S + lane % S, S, k, p);
  auto fetch = [&](Loads& ld, int sub) {
    const int t0 = sub * S;
#pragma unroll
    for (int n = 0; n < N; ++n) ld.h0[n] = states[(static_cast<int64_t>(sub) * N + n) * C];
    const int mine = walk.offset();
    walk.retreat();
#pragma unroll
    for (int i = 0; i < S; ++i) {  // no bounds checks: a step past the end reads pixel 0 (its values are unused)
      ld.offsets[i] = __shfl_sync(kFullMask, mine, i);
      ld.u[i] = load_global(x + ld.offsets[i]);
      ld.g_in[i] = load_global(dy + ld.offsets[i]);
    }
    sources.template fetch<T>(ld.held, t0, L - t0 < S ? L - t0 : S);
  };
  // One sub-chunk. Branch-free over its steps, so the compiler can overlap the steps' chains. Steps past the end
  // exist only in the last sub-chunk, visited first: staged as zeros with u = dy = 0, they leave h as it is and,
  // with the adjoint entering as 0, add exact zeros to every sum. kFast: a whole sub-chunk of a whole tile.
  auto walk_sub = [&](const Loads& cur, int t0, int steps, auto fast) {
    constexpr bool kFast = decltype(fast)::value;
    const int(&offsets)[S] = cur.offsets;
    const float(&h0)[N] = cur.h0;
    float u[S], g_in[S];
#pragma unroll
    for (int i = 0; i < S; ++i) {
      u[i] = kFast || i < steps ? to_float(cur.u[i]) : 0.f;
      g_in[i] = kFast ? cur.g_in[i] : i < steps ? cur.g_in[i] * dy_scale : 0.f;
    }
    float h[N];
#pragma unroll
    for (int n = 0; n < N; ++n) h[n] = h0[n];
    float dt[S], slope[S], a[S][N], hs[S][N];  // a: the decays, computed once for both walks
#pragma unroll
    for (int i = 0; i < S; ++i) {
      const float* step = stage + i * Layout::kStride;
      dt[i] = fast_softplus(dir.raw_delta(step), slope[i]);
#pragma unroll
      for (int n = 0; n < N; ++n) {
        a[i][n] = fast_exp2(dt[i] * A2[n]);
        const float next = fmaf(a[i][n], h[n], dt[i] * step[R + n] * u[i]);
        h[n] = kFast || i < steps ? next : h[n];
        hs[i][n] = h[n];
      }
    }
    T* const ddelta_sub = ddelta + static_cast<int64_t>(t0) * C;
#pragma unroll
    for (int i = S - 1; i >= 0; --i) {
      const float* step = stage + i * Layout::kStride;
      float gB = 0.f, ddt = 0.f;
#pragma unroll
      for (int n = 0; n < N; ++n) {
        const float Bv = step[R + n];
        const float g = fmaf(step[R + N + n], g_in[i], carry[n]);
        const float decayed = a[i][n] * (i > 0 ? hs[i - 1][n] : h0[n]);  // a_t h_{t-1}
        dA[n] = fmaf(g * dt[i], decayed, dA[n]);
        ddt = fmaf(g, fmaf(dir.A[n], decayed, Bv * u[i]), ddt);
        gB = fmaf(g, Bv, gB);
        carry[n] = a[i][n] * g;
        vals[(n * S + i) * 33 + lane] = g * dt[i] * u[i];            // dB
        vals[((N + n) * S + i) * 33 + lane] = g_in[i] * hs[i][n];  // dC
      }
      dD = fmaf(g_in[i], u[i], dD);
      if (kFast || (valid && i < steps)) {
        store_global(ddelta_sub + i * C, from_float<T>(ddt * slope[i]));  // through the softplus
        store_global(du + offsets[i], from_float<T>(fmaf(dt[i], gB, dir.D * g_in[i])));
      }
    }
    __syncwarp();
    {  // dB, dC: sums over the tile's 32 channels (as ss2d_bwd_kernel)
      const int j = lane & 15, half = lane >> 4;
      float sum = 0.f;
      if (j < 2 * N * S) {
#pragma unroll
        for (int c = 0; c < 16; ++c) sum += vals[j * 33 + half * 16 + c];
      }
      sum += __shfl_down_sync(0xffffffffu, sum, 16);
      const int row = j / S, i = j % S;
      if (half == 0 && j < 2 * N * S && i < steps) {
        float* out = row < N ? p.dB_part : p.dC_part;
        out[((bk * p.tiles + tile) * N + row % N) * L + t0 + i] = sum;
      }
    }
  };
  Loads next;
  fetch(next, n_sub - 1);
  for (int sub = n_sub - 1; sub >= 0; --sub) {
    const int t0 = sub * S;
    const int steps = L - t0 < S ? L - t0 : S;
    const Loads cur = next;
    __syncwarp();  // every lane is done with the previous sub-chunk's stage and sums
    sources.template put<T>(stage, cur.held);
    __syncwarp();
    if (sub > 0) fetch(next, sub - 1);
    if (whole_tile && steps == S) {
      walk_sub(cur, t0, S, std::true_type{});
    } else {
      walk_sub(cur, t0, steps, std::false_type{});
    }
  }
  if (valid) {
    const int64_t kd = bk * C + channel;
#pragma unroll
    for (int n = 0; n < N; ++n) p.dA_part[kd * N + n] = dA[n];
    p.dD_part[kd] = dD;
  }
}

// Calls launch.template run<T, R>() with the input type of `kind` and the rank bucket of p.rank: the one list of
// kernel builds, shared by the launchers (ss2d.cu) and the tests' CPU emulation.
template <typename T, typename Launch>
cudaError_t dispatch_ss2d_rank(int rank, const Launch& launch) {
  switch (ss2d_rank_bucket(rank)) {
    case 8:
      return launch.template run<T, 8>();
    case 16:
      return launch.template run<T, 16>();
    case 24:
      return launch.template run<T, 24>();
    case 32:
      return launch.template run<T, 32>();
    case 48:
      return launch.template run<T, 48>();
    default:
      return launch.template run<T, 64>();
  }
}

template <typename Launch>
cudaError_t dispatch_ss2d(const SS2DParams& p, ScalarKind kind, const Launch& launch) {
  if (p.d_state != 1 || p.rank < 1 || p.rank > kSS2DMaxRank) return cudaErrorInvalidValue;
  switch (kind) {
    case ScalarKind::kFloat:
      return dispatch_ss2d_rank<float>(p.rank, launch);
    case ScalarKind::kHalf:
      return dispatch_ss2d_rank<c10::Half>(p.rank, launch);
    case ScalarKind::kBFloat16:
      return dispatch_ss2d_rank<c10::BFloat16>(p.rank, launch);
  }
  return cudaErrorInvalidValue;
}

}  // namespace
}  // namespace vmamba_zoo_cuda
