// Device helpers shared by the forward and backward kernels: typed loads/stores of a lane's kItems
// positions, warp scans over affine maps h -> a*h + b, a deterministic warp sum, softplus.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include "selective_scan.h"

namespace vmamba_zoo_cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// The block's dynamic shared memory (its size is set at launch). A function rather than an
// `extern __shared__` at each use, so that the CPU emulation of the kernels used by the tests
// (tests/cuda_emulation) can supply its own.
#ifndef VMAMBA_ZOO_CUDA_EMULATION
__device__ __forceinline__ float* dynamic_shared_memory() {
  extern __shared__ float shared_floats[];
  return shared_floats;
}
#endif

template <typename T>
__device__ __forceinline__ float to_float(T value) {
  return static_cast<float>(value);
}

template <typename T>
__device__ __forceinline__ T from_float(float value) {
  return static_cast<T>(value);  // c10::Half / c10::BFloat16 round to nearest even
}

// A lane's kItems values of a row as loaded, not yet converted. Held while other work runs, the load's
// latency hides behind that work; converting at once would make the lane wait for the load there.
template <typename T>
struct RawItems {
  T v[kItems];
};

// Whether every lane's span of every row lies wholly inside the row or wholly past its end, 16-byte aligned:
// a length that is a multiple of kItems and rows that start aligned (tensors of row-major [..., length]; a null
// pointer, an absent z, passes). Then fetch_items / store_items<true> need no per-lane test of the span's end or
// alignment.
template <typename... Ptrs>
__device__ __forceinline__ bool whole_aligned_spans(int length, Ptrs... rows) {
  return length % kItems == 0 && ((reinterpret_cast<uintptr_t>(rows) | ... | uintptr_t{0}) & 15) == 0;
}

// Load positions [pos0, pos0 + kItems) of a row of `length` elements, 0 past the end (nothing is read
// there, so a span wholly past the end costs no memory traffic). One or two 16-byte loads when the lane's
// span is whole and aligned (rows of any length may start anywhere, so this is checked per lane), else
// element by element.
// kWholeSpans (whole_aligned_spans holds): only the vector loads, under one predicate. The generic form's two
// paths meet in a register copy of the loaded values, which waits for the load there: a fetch meant to run a
// chunk ahead stalled on the spot (Nsight, H100: long-scoreboard waits were 68% of the forward's stall cycles).
template <bool kWholeSpans = false, typename T>
__device__ __forceinline__ RawItems<T> fetch_items(const T* row, int pos0, int length) {
  constexpr int kBytes = kItems * static_cast<int>(sizeof(T));
  static_assert(kBytes % 16 == 0, "a lane's span must be whole 16-byte vectors");
  constexpr int kVectors = kBytes / 16;
  const T* src = row + pos0;
  RawItems<T> items;
  if (kWholeSpans || (pos0 + kItems <= length && (reinterpret_cast<uintptr_t>(src) & 15) == 0)) {
    uint4 raw[kVectors];
#pragma unroll
    for (int v = 0; v < kVectors; ++v) raw[v] = uint4{};  // zero bits: 0 in every input type (whole spans' end)
    if (!kWholeSpans || pos0 < length) {
#pragma unroll
      for (int v = 0; v < kVectors; ++v) raw[v] = __ldg(reinterpret_cast<const uint4*>(src) + v);
    }
    memcpy(items.v, raw, kBytes);
  } else {
#pragma unroll
    for (int i = 0; i < kItems; ++i) items.v[i] = pos0 + i < length ? src[i] : from_float<T>(0.f);
  }
  return items;
}

template <typename T>
__device__ __forceinline__ void to_floats(const RawItems<T>& items, float (&out)[kItems]) {
#pragma unroll
  for (int i = 0; i < kItems; ++i) out[i] = to_float(items.v[i]);
}

// bf16 is the upper half of a float: each packed pair of the load converts in place, its first item by a shift and
// its second by a mask. c10's conversion unpacked each item first, and the sm_90 bf16 builds spilled where the fp16
// ones did not (one-lane forward: 104-120 bytes of stack, 4 reloads a span). Packed: no stack, and on an nvidia-h100
// that kernel went from 0.654 to 0.599 ms at VMamba's vanilla stage 0, batch 32 (session 29, scan_lanes_ab.sh)
__device__ __forceinline__ void to_floats(const RawItems<c10::BFloat16>& items, float (&out)[kItems]) {
  static_assert(sizeof(c10::BFloat16) == 2 && kItems % 2 == 0, "items come in 32-bit pairs");
#pragma unroll
  for (int i = 0; i < kItems; i += 2) {
    uint32_t pair;
    memcpy(&pair, &items.v[i], sizeof(pair));
    const uint32_t first = pair << 16, second = pair & 0xffff0000u;  // little-endian: item i is the low half
    memcpy(&out[i], &first, sizeof(float));
    memcpy(&out[i + 1], &second, sizeof(float));
  }
}

// Write positions [pos0, pos0 + kItems) of a row, skipping those past the end (kWholeSpans: as fetch_items).
template <bool kWholeSpans = false, typename T>
__device__ __forceinline__ void store_items(T* row, int pos0, int length, const float (&in)[kItems]) {
  constexpr int kBytes = kItems * static_cast<int>(sizeof(T));
  constexpr int kVectors = kBytes / 16;
  T* dst = row + pos0;
  if (kWholeSpans ? pos0 < length : pos0 + kItems <= length && (reinterpret_cast<uintptr_t>(dst) & 15) == 0) {
    T values[kItems];
#pragma unroll
    for (int i = 0; i < kItems; ++i) values[i] = from_float<T>(in[i]);
    uint4 raw[kVectors];
    memcpy(raw, values, kBytes);
#pragma unroll
    for (int v = 0; v < kVectors; ++v) reinterpret_cast<uint4*>(dst)[v] = raw[v];
  } else if (!kWholeSpans) {
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      if (pos0 + i < length) dst[i] = from_float<T>(in[i]);
    }
  }
}

// as torch.nn.functional.softplus (beta 1, threshold 20)
__device__ __forceinline__ float softplus(float x) { return x <= 20.f ? log1pf(expf(x)) : x; }

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// exp(x) and 1/x from the special-function unit (about 2 ulp; denormal results flush to 0): two and one
// instructions where expf / __expf / IEEE division take 5 to 20, on the fused SS2D kernels' per-step path
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float fast_exp2(float x) {
#ifdef VMAMBA_ZOO_CUDA_EMULATION
  return std::exp2(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

__device__ __forceinline__ float fast_exp(float x) { return fast_exp2(x * kLog2e); }

__device__ __forceinline__ float fast_reciprocal(float x) {
#ifdef VMAMBA_ZOO_CUDA_EMULATION
  return 1.f / x;
#else
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

// *address += value, atomically, without a predicate (nvcc turns add_if's predicate into a branch per add)
__device__ __forceinline__ void add_to(float* address, float value) {
#ifdef VMAMBA_ZOO_CUDA_EMULATION
  atomicAdd(address, value);
#else
  asm volatile("red.global.add.f32 [%0], %1;" : : "l"(address), "f"(value));
#endif
}

// atomicAdd(address, value) when `add`, its result unused, as one predicated reduction: the compiler wraps a
// conditional atomicAdd in a branch of its own (9 instructions a step in the fused SS2D forward)
__device__ __forceinline__ void add_if(float* address, float value, bool add) {
#ifdef VMAMBA_ZOO_CUDA_EMULATION
  if (add) atomicAdd(address, value);
#else
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.u32 p, %2, 0;\n @p red.global.add.f32 [%0], %1;\n}"
      :
      : "l"(address), "f"(value), "r"(static_cast<unsigned>(add)));
#endif
}

// softplus(x) = max(x, 0) + log1p(e), e = exp(-|x|) in (0, 1], and its slope sigmoid(x), in ~20 instructions
// (log1pf(expf(x)) takes ~40) to float32 accuracy: log1p(e) = 2 atanh(s), s = e / (2 + e) <= 1/3, whose odd
// series is cut after s^13 (next term < 2e-8 relative). Large x needs no threshold: e underflows to 0.
__device__ __forceinline__ float fast_softplus(float x, float& slope) {
  const float e = fast_exp(-fabsf(x));
  const float s = e * fast_reciprocal(2.f + e), s2 = s * s;
  float series = 1.f / 13.f;
  series = fmaf(series, s2, 1.f / 11.f);
  series = fmaf(series, s2, 1.f / 9.f);
  series = fmaf(series, s2, 1.f / 7.f);
  series = fmaf(series, s2, 1.f / 5.f);
  series = fmaf(series, s2, 1.f / 3.f);
  series = fmaf(series, s2, 1.f);
  const float r = fast_reciprocal(1.f + e);
  slope = x >= 0.f ? r : e * r;
  return fmaxf(x, 0.f) + 2.f * s * series;
}

__device__ __forceinline__ float fast_softplus(float x) {
  float slope;  // unused: the compiler drops its computation
  return fast_softplus(x, slope);
}

// dt = 0 past the sequence's end (see delta_to_dt)
__device__ __forceinline__ void zero_past_end(float (&dt)[kItems], int pos0, int length) {
  if (pos0 + kItems > length) {  // only a sequence's last chunk, or a spare warp's
#pragma unroll
    for (int i = 0; i < kItems; ++i) dt[i] = pos0 + i < length ? dt[i] : 0.f;
  }
}

// A lane's dt from its raw delta items: softplus(delta + bias) (or delta + bias), with its slope d dt / d delta, and
// dt = 0 past the sequence's end (a step that changes nothing: a = 1, b = 0). An unused slope costs nothing (the
// compiler drops it). The softplus is taken of every item and the end masked after it: choosing per item whether to
// take it made nvcc branch around each softplus and spill (sm_90 SASS of the forward's d_state-1 loop: 501
// instructions a chunk before, 379 after this, A*log2(e) taken once per row and one branch for the z gate).
// The mask is defensive: the zero-filled loads past the end already keep those steps out of every result, unless a
// decay exp(dt A) overflows (A > 0 without softplus) and its inf meets a 0 in the backward's reverse warp scan (NaN);
// it costs a few selects in the last chunk only.
__device__ __forceinline__ void delta_to_dt(float (&dt)[kItems], float (&slope)[kItems], float bias, bool softplus,
                                            int pos0, int length) {
  if (softplus) {
#pragma unroll
    for (int i = 0; i < kItems; ++i) dt[i] = fast_softplus(dt[i] + bias, slope[i]);
  } else {
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      dt[i] += bias;
      slope[i] = 1.f;
    }
  }
  zero_past_end(dt, pos0, length);
}

// Inclusive scan over the warp's lanes of affine maps f_l(h) = a*h + b, lane 0 applied first:
// afterwards lane l holds f_l o ... o f_0.
__device__ __forceinline__ void warp_scan_forward(float& a, float& b, int lane) {
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const float a_before = __shfl_up_sync(kFullMask, a, offset);
    const float b_before = __shfl_up_sync(kFullMask, b, offset);
    if (lane >= offset) {  // self o before: a*(a_before*h + b_before) + b
      b = fmaf(a, b_before, b);
      a *= a_before;
    }
  }
}

// The mirror image, lane 31 applied first: afterwards lane l holds f_l o ... o f_31. Used by the
// backward's adjoint recurrence, which runs from the end of the sequence to its start.
__device__ __forceinline__ void warp_scan_backward(float& a, float& b, int lane) {
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const float a_after = __shfl_down_sync(kFullMask, a, offset);
    const float b_after = __shfl_down_sync(kFullMask, b, offset);
    if (lane + offset < 32) {  // self o after
      b = fmaf(a, b_after, b);
      a *= a_after;
    }
  }
}

// x -> a*x + b. A zero x (the sequence's start, nothing after its end) gives b even when a is inf: with
// decays above 1 (dt*A > 0, e.g. negative dt without softplus) a product of many of them can overflow
// float32 although the states stay finite, and inf * 0 would poison everything with NaN.
__device__ __forceinline__ float apply_affine(float a, float b, float x) { return x != 0.f ? fmaf(a, x, b) : b; }

// The value entering this lane from its neighbour after a warp scan: kForward (after warp_scan_forward), the state
// at this lane's first item, the previous lane's inclusive map applied to the chunk's starting state `carry` (lane 0
// takes carry itself); else (after warp_scan_backward) the adjoint entering this lane's last item, the next lane's
// map applied to the adjoint carried in after the chunk (lane 31 takes carry itself).
template <bool kForward>
__device__ __forceinline__ float lane_entry(float a, float b, float carry, int lane) {
  float next_a = kForward ? __shfl_up_sync(kFullMask, a, 1) : __shfl_down_sync(kFullMask, a, 1);
  float next_b = kForward ? __shfl_up_sync(kFullMask, b, 1) : __shfl_down_sync(kFullMask, b, 1);
  if (lane == (kForward ? 0 : 31)) {
    next_a = 1.f;
    next_b = 0.f;
  }
  return apply_affine(next_a, next_b, carry);
}

// Sum over the warp by an xor butterfly: every lane ends with the same bits (partners add the same
// two numbers, a+b == b+a), and the order is fixed, so the result does not vary between runs.
__device__ __forceinline__ float warp_sum(float value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(kFullMask, value, offset);
  return value;
}

// A type as a value, for the dtype dispatch below: decltype(tag)::type
template <typename T>
struct TypeTag {
  using type = T;
};

// launch(TypeTag<input_t>{}, TypeTag<other_t>{}) for a launcher's dtype pair: the input kind, and float32 or the
// input's type for the other tensor (the forward's out, the backward's dout). Returns launch's result.
template <typename Launch>
cudaError_t launch_by_dtype(ScalarKind input_kind, bool fp32_other, Launch launch) {
  switch (input_kind) {
    case ScalarKind::kFloat:
      return launch(TypeTag<float>{}, TypeTag<float>{});
    case ScalarKind::kHalf:
      return fp32_other ? launch(TypeTag<c10::Half>{}, TypeTag<float>{})
                        : launch(TypeTag<c10::Half>{}, TypeTag<c10::Half>{});
    case ScalarKind::kBFloat16:
      return fp32_other ? launch(TypeTag<c10::BFloat16>{}, TypeTag<float>{})
                        : launch(TypeTag<c10::BFloat16>{}, TypeTag<c10::BFloat16>{});
  }
  return cudaErrorInvalidValue;
}

// Where a warp's channel sits. Blocks are laid out group by group (blockIdx.x = group * blocks_per_group
// + block in group), blockIdx.y = batch. A warp past the group's end (the last block of a group may
// have spare warps) is not `valid`; its channel index is clamped so parameter reads stay in bounds.
struct WarpChannel {
  int lane, warp, batch, group, block_in_group, channel;
  bool valid;
};

__device__ __forceinline__ WarpChannel locate_warp(const SelectiveScanParams& p) {
  WarpChannel w;
  w.lane = threadIdx.x & 31;
  w.warp = threadIdx.x >> 5;
  w.batch = blockIdx.y;
  w.group = blockIdx.x / p.blocks_per_group;
  w.block_in_group = blockIdx.x % p.blocks_per_group;
  const int d = w.block_in_group * p.warps_per_block + w.warp;
  w.valid = d < p.group_size;
  w.channel = w.group * p.group_size + (w.valid ? d : p.group_size - 1);
  return w;
}

}  // namespace vmamba_zoo_cuda
