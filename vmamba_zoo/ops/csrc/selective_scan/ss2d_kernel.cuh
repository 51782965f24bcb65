// Fused SS2D scan kernels, forward and backward (layout and work split: ss2d.h).
//
// Forward, per direction: (1) each warp walks its segment from a zero state, leaving the segment's map
// h_end = P h_begin + Q per channel in shared memory; (2) each warp composes the maps of the segments
// before its own into its true start state and walks again, adding y_t = <C_t, h_t> + D u_t onto the
// merged output at the step's pixel (stored for the first direction, read-added for the others).
//
// Backward, per direction: (1) the forward walk also composes the adjoint's map over the segment (the carry
// a_t g_t handed to the previous segment is P * carry_in + sum_t (a_s0 ... a_t) C_t dy_t, computable going
// forward) and saves every sub-chunk's start; (2) the start states and incoming adjoint carries are composed
// across segments; (3) the sub-chunks are visited from the last to the first: kSS2DSubSteps steps re-walked
// forward into registers, then the adjoint g_t = a_{t+1} g_{t+1} + C_t dy_t run back over them. Gradients
// summed over channels (dts, B, C) are warp sums written once per tile; per-channel ones (dA, D, bias,
// dt_weight) are summed over the segments in shared memory in a fixed order.
#pragma once

#include <climits>

#include "selective_scan_common.cuh"
#include "ss2d.h"

namespace vmamba_zoo_cuda {
namespace {

// The row-major pixel of step l of direction k, advanced one step at a time: rows move by +-1, columns by
// +-W and jump to the next column after H steps (no division per step).
struct PixelWalk {
  int pixel, left, step, wrap, line;
  __device__ __forceinline__ void advance() {
    if (left == 0) {
      pixel += wrap;
      left = line - 1;
    } else {
      pixel += step;
      --left;
    }
  }
};

__device__ __forceinline__ PixelWalk walk_from(int l, int k, const SS2DParams& p) {
  const int K = p.directions, H = p.height, W = p.width;
  const bool reversed = (K == 4 && k >= 2) || (K == 2 && k == 1);
  const bool columns = K == 4 && (k & 1) != 0;
  const int m = reversed ? p.length - 1 - l : l;  // index in row-major (column-major) order
  PixelWalk w;
  if (columns) {
    const int c = m / H, r = m - c * H;
    w.pixel = r * W + c;
    w.line = H;
    w.step = reversed ? -W : W;
    w.left = reversed ? r : H - 1 - r;  // steps before the walk leaves this column
    w.wrap = reversed ? (H - 1) * W - 1 : 1 - (H - 1) * W;
  } else {
    w.pixel = m;
    w.line = INT_MAX;
    w.left = INT_MAX;  // a row-major walk never wraps (L < 2^31)
    w.step = reversed ? -1 : 1;
    w.wrap = 0;
  }
  return w;
}

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

  // W_dt @ dts + bias at step l (before the softplus)
  __device__ __forceinline__ float raw_delta(int l, int rank, int length) const {
    float acc = bias;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r < rank) acc = fmaf(w[r], to_float(dts[static_cast<int64_t>(r) * length + l]), acc);
    }
    return acc;
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

template <typename T, int N, int R>
__global__ void __launch_bounds__(kSS2DMaxSegments * 32) ss2d_fwd_kernel(const SS2DParams p) {
  float* const maps = dynamic_shared_memory();  // [segment][P | Q][n][lane]
  const Lane t = locate_lane(p);
  const int C = p.channels, L = p.length;
  const int64_t image = static_cast<int64_t>(t.batch) * L * C + t.channel;
  const T* x = static_cast<const T*>(p.x) + image;
  float* out = p.out + image;
  for (int k = 0; k < p.directions; ++k) {
    const Direction<T, N, R> dir(p, t.batch, k, t.channel);
    // 1. the segment from a zero state: h_end = P h_begin + Q
    float P[N], Q[N];
#pragma unroll
    for (int n = 0; n < N; ++n) P[n] = 1.f, Q[n] = 0.f;
    PixelWalk walk = walk_from(t.l_begin, k, p);
    for (int l = t.l_begin; l < t.l_end; ++l) {
      const float u = to_float(x[static_cast<int64_t>(walk.pixel) * C]);
      const float dt = softplus(dir.raw_delta(l, p.rank, L));
#pragma unroll
      for (int n = 0; n < N; ++n) {
        const float a = expf(dt * dir.A[n]);
        Q[n] = fmaf(a, Q[n], dt * to_float(dir.B[n * L + l]) * u);
        P[n] *= a;
      }
      walk.advance();
    }
#pragma unroll
    for (int n = 0; n < N; ++n) {
      maps[((t.seg * 2) * N + n) * 32 + t.lane] = P[n];
      maps[((t.seg * 2 + 1) * N + n) * 32 + t.lane] = Q[n];
    }
    __syncthreads();
    // 2. the true start state (the segments before this one composed), then the walk that writes y
    float h[N];
#pragma unroll
    for (int n = 0; n < N; ++n) h[n] = 0.f;
    for (int s = 0; s < t.seg; ++s) {
#pragma unroll
      for (int n = 0; n < N; ++n) h[n] = fmaf(maps[((s * 2) * N + n) * 32 + t.lane], h[n], maps[((s * 2 + 1) * N + n) * 32 + t.lane]);
    }
    walk = walk_from(t.l_begin, k, p);
    for (int l = t.l_begin; l < t.l_end; ++l) {
      const int64_t offset = static_cast<int64_t>(walk.pixel) * C;
      const float u = to_float(x[offset]);
      const float dt = softplus(dir.raw_delta(l, p.rank, L));
      float y = dir.D * u;
#pragma unroll
      for (int n = 0; n < N; ++n) {
        h[n] = fmaf(expf(dt * dir.A[n]), h[n], dt * to_float(dir.B[n * L + l]) * u);
        y = fmaf(to_float(dir.C[n * L + l]), h[n], y);
      }
      if (t.valid) out[offset] = k == 0 ? y : out[offset] + y;  // the merge: this block owns these pixels
      walk.advance();
    }
    __syncthreads();  // the next direction adds onto what every warp wrote, and reuses `maps`
  }
}

template <int R>
constexpr int ss2d_bwd_threads() {
  return (R >= 32 ? 8 : kSS2DMaxSegments) * 32;
}

template <typename T, int N, int R>
__global__ void __launch_bounds__(ss2d_bwd_threads<R>()) ss2d_bwd_kernel(const SS2DParams p) {
  constexpr int S = kSS2DSubSteps;
  constexpr int kSums = (R + 2 * N + 31) / 32;  // cross-lane sums per step, 32 per lane slot
  float* const maps = dynamic_shared_memory();           // [segment][P | Qh | Qg][n][lane]
  float* const sums = maps + 3 * N * p.segments * 32;    // [dA (N) | dD | dbias | dw (R)][lane]
  const Lane t = locate_lane(p);
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
    const int64_t part_row = (static_cast<int64_t>(t.batch) * K + k) * p.tiles + t.tile;
    // 1. forward over the segment: its state map (P, Qh), its adjoint map's constant (Qg), sub-chunk starts
    float P[N], Qh[N], Qg[N];
#pragma unroll
    for (int n = 0; n < N; ++n) P[n] = 1.f, Qh[n] = 0.f, Qg[n] = 0.f;
    PixelWalk walk = walk_from(t.l_begin, k, p);
    for (int l = t.l_begin; l < t.l_end; ++l) {
      if (((l - t.l_begin) & (S - 1)) == 0) {
        float* saved = scratch + ((l - t.l_begin) / S) * 2 * N * 32;
#pragma unroll
        for (int n = 0; n < N; ++n) saved[n * 32] = Qh[n], saved[(N + n) * 32] = P[n];
      }
      const int64_t offset = static_cast<int64_t>(walk.pixel) * C;
      const float u = to_float(x[offset]);
      const float g_in = dy[offset] * dy_scale;
      const float dt = softplus(dir.raw_delta(l, rank, L));
#pragma unroll
      for (int n = 0; n < N; ++n) {
        const float a = expf(dt * dir.A[n]);
        Qh[n] = fmaf(a, Qh[n], dt * to_float(dir.B[n * L + l]) * u);
        P[n] *= a;
        Qg[n] = fmaf(P[n], to_float(dir.C[n * L + l]) * g_in, Qg[n]);
      }
      walk.advance();
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
      for (int n = 0; n < N; ++n) h_in[n] = fmaf(maps[((s * 3) * N + n) * 32 + t.lane], h_in[n], maps[((s * 3 + 1) * N + n) * 32 + t.lane]);
    }
    for (int s = p.segments - 1; s > t.seg; --s) {
#pragma unroll
      for (int n = 0; n < N; ++n) carry[n] = fmaf(maps[((s * 3) * N + n) * 32 + t.lane], carry[n], maps[((s * 3 + 2) * N + n) * 32 + t.lane]);
    }
    // 3. sub-chunks from the last to the first
    float dA[N], dw[R], dD = 0.f, dbias = 0.f;
#pragma unroll
    for (int n = 0; n < N; ++n) dA[n] = 0.f;
#pragma unroll
    for (int r = 0; r < R; ++r) dw[r] = 0.f;
    const int n_sub = (t.l_end - t.l_begin + S - 1) / S;
    for (int sub = n_sub - 1; sub >= 0; --sub) {
      const int t0 = t.l_begin + sub * S;
      const int steps = t.l_end - t0 < S ? t.l_end - t0 : S;
      const float* saved = scratch + sub * 2 * N * 32;
      float h0[N], h[N];
#pragma unroll
      for (int n = 0; n < N; ++n) h0[n] = h[n] = fmaf(saved[(N + n) * 32], h_in[n], saved[n * 32]);
      int64_t offsets[S];
      float u[S], dt[S], gate[S], a[S][N], hs[S][N];
      walk = walk_from(t0, k, p);
#pragma unroll
      for (int i = 0; i < S; ++i) {
        if (i < steps) {
          offsets[i] = static_cast<int64_t>(walk.pixel) * C;
          u[i] = to_float(x[offsets[i]]);
          const float raw = dir.raw_delta(t0 + i, rank, L);
          const float e = expf(raw);
          dt[i] = raw <= 20.f ? log1pf(e) : raw;  // softplus, and its derivative (the sigmoid) from one exp
          gate[i] = raw <= 20.f ? e / (1.f + e) : 1.f;
#pragma unroll
          for (int n = 0; n < N; ++n) {
            a[i][n] = expf(dt[i] * dir.A[n]);
            h[n] = fmaf(a[i][n], h[n], dt[i] * to_float(dir.B[n * L + t0 + i]) * u[i]);
            hs[i][n] = h[n];
          }
          walk.advance();
        }
      }
#pragma unroll
      for (int i = S - 1; i >= 0; --i) {
        if (i >= steps) continue;
        const int l = t0 + i;
        const float g_in = dy[offsets[i]] * dy_scale;
        float lane_sums[R + 2 * N];  // this lane's share of each cross-lane sum
        float gB = 0.f, ddt = 0.f;
#pragma unroll
        for (int n = 0; n < N; ++n) {
          const float Bv = to_float(dir.B[n * L + l]);
          const float g = fmaf(to_float(dir.C[n * L + l]), g_in, carry[n]);
          const float h_prev = i > 0 ? hs[i - 1][n] : h0[n];
          const float decayed = a[i][n] * h_prev;  // a_t h_{t-1}
          dA[n] = fmaf(g * dt[i], decayed, dA[n]);
          ddt = fmaf(g, fmaf(dir.A[n], decayed, Bv * u[i]), ddt);
          gB = fmaf(g, Bv, gB);
          carry[n] = a[i][n] * g;
          lane_sums[R + n] = g * dt[i] * u[i];    // dB
          lane_sums[R + N + n] = g_in * hs[i][n];  // dC
        }
        dD = fmaf(g_in, u[i], dD);
        const float draw = ddt * gate[i];  // through the softplus
        dbias += draw;
#pragma unroll
        for (int r = 0; r < R; ++r) {
          lane_sums[r] = 0.f;
          if (r < rank) {
            dw[r] = fmaf(draw, to_float(dir.dts[static_cast<int64_t>(r) * L + l]), dw[r]);
            lane_sums[r] = dir.w[r] * draw;  // ddts
          }
        }
        // warp sums: lane j keeps sum number 32 * q + j of slot q (rank of them for dts, then N for B, N for C)
        float kept[kSums];
#pragma unroll
        for (int q = 0; q < kSums; ++q) kept[q] = 0.f;
#pragma unroll
        for (int v = 0; v < R + 2 * N; ++v) {
          const bool used = v < R ? v < rank : true;
          if (used) {
            const float total = warp_sum(lane_sums[v]);
            const int slot = v < R ? v : rank + (v - R);  // sums packed: ranks, then B, then C
            if ((slot & 31) == t.lane) kept[slot / 32] = total;
          }
        }
#pragma unroll
        for (int q = 0; q < kSums; ++q) {
          const int slot = q * 32 + t.lane;
          if (slot < rank) {
            p.ddts_part[(part_row * rank + slot) * L + l] = kept[q];
          } else if (slot < rank + N) {
            p.dB_part[(part_row * N + slot - rank) * L + l] = kept[q];
          } else if (slot < rank + 2 * N) {
            p.dC_part[(part_row * N + slot - rank - N) * L + l] = kept[q];
          }
        }
        // du merged over the directions in float32, stored once in x's dtype
        if (t.valid) {
          const float du = fmaf(dt[i], gB, dir.D * g_in);
          const float total = k == 0 ? du : dx_acc[offsets[i]] + du;
          if (k == K - 1) {
            dx[offsets[i]] = from_float<T>(total);
          } else {
            dx_acc[offsets[i]] = total;
          }
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
        row[(N + 1) * 32] = (s == 0 ? 0.f : row[(N + 1) * 32]) + dbias;
#pragma unroll
        for (int r = 0; r < R; ++r) row[(N + 2 + r) * 32] = (s == 0 ? 0.f : row[(N + 2 + r) * 32]) + dw[r];
      }
      __syncthreads();
    }
    if (t.seg == 0 && t.valid) {
      const int64_t kd = static_cast<int64_t>(t.batch) * K * C + k * C + t.channel;
      const float* row = sums + t.lane;
#pragma unroll
      for (int n = 0; n < N; ++n) p.dA_part[kd * N + n] = row[n * 32];
      p.dD_part[kd] = row[N * 32];
      p.dbias_part[kd] = row[(N + 1) * 32];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r < rank) p.dw_part[kd * rank + r] = row[(N + 2 + r) * 32];
      }
    }
    __syncthreads();  // `sums`, `maps` and dx_acc are reused by the next direction
  }
}

}  // namespace
}  // namespace vmamba_zoo_cuda
