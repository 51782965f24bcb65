// CPU stand-in for the parts of the CUDA runtime the selective-scan kernels use, so the tests can run the
// kernels' own code (vmamba_zoo/ops/csrc/selective_scan/*_kernel.cuh), and the host code around them
// (selective_scan.cpp built with -DVMAMBA_ZOO_CUDA_EMULATION), on a machine without a GPU.
//
// Every CUDA thread of a block is a std::thread; warp shuffles exchange values through a per-warp slot
// array between two warp barriers, __syncwarp is a warp barrier and __syncthreads a block barrier.
// This checks index arithmetic, warp-scan logic and barrier placement (a missing barrier shows up as
// a wrong result or a hang), not speed or the GPU's memory model. Found first on the include path of
// tests/cuda_emulation/emulate.cpp, in place of the toolkit's header.
#pragma once

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#define VMAMBA_ZOO_CUDA_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

using cudaError_t = int;
using cudaStream_t = void*;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
constexpr cudaError_t cudaErrorInvalidDeviceFunction = 98;
constexpr cudaError_t cudaErrorNoKernelImageForDevice = 209;
inline const char* cudaGetErrorString(cudaError_t) { return "emulated launch error"; }

struct uint4 {
  unsigned int x, y, z, w;
};

struct alignas(16) float4 {
  float x, y, z, w;
};

inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
};

namespace emulation {

struct Warp {
  std::barrier<> barrier{32};
  float slots[32] = {};
};

struct Block {
  Block(int threads, size_t shared_floats)
      : barrier(threads), warps(new Warp[(threads + 31) / 32]), shared(shared_floats, 0.f) {}
  std::barrier<> barrier;
  std::unique_ptr<Warp[]> warps;
  std::vector<float> shared;
};

inline thread_local Block* current_block = nullptr;

}  // namespace emulation

inline thread_local dim3 threadIdx, blockIdx, blockDim;

namespace emulation {

inline Warp& my_warp() { return current_block->warps[threadIdx.x / 32]; }

inline float exchange(float value, int source_lane) {
  Warp& warp = my_warp();
  warp.slots[threadIdx.x & 31] = value;
  warp.barrier.arrive_and_wait();
  const float result = warp.slots[source_lane];
  warp.barrier.arrive_and_wait();  // nobody overwrites a slot before every lane has read
  return result;
}

}  // namespace emulation

inline float __shfl_sync(unsigned, float value, int source_lane) {
  return emulation::exchange(value, source_lane & 31);
}

inline int __shfl_sync(unsigned mask, int value, int source_lane) {  // through the float slots, bit for bit
  float bits;
  std::memcpy(&bits, &value, sizeof bits);
  bits = __shfl_sync(mask, bits, source_lane);
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

inline float __shfl_up_sync(unsigned, float value, unsigned delta) {
  const int lane = threadIdx.x & 31;
  const int source = lane - static_cast<int>(delta);
  return emulation::exchange(value, source < 0 ? lane : source);  // lanes below delta keep their own
}

inline float __shfl_down_sync(unsigned, float value, unsigned delta) {
  const int lane = threadIdx.x & 31;
  const int source = lane + static_cast<int>(delta);
  return emulation::exchange(value, source > 31 ? lane : source);
}

inline float __shfl_xor_sync(unsigned, float value, int lane_mask) {
  return emulation::exchange(value, (static_cast<int>(threadIdx.x & 31) ^ lane_mask) & 31);
}

inline void __syncwarp(unsigned = 0xffffffffu) { emulation::my_warp().barrier.arrive_and_wait(); }

inline void __syncthreads() { emulation::current_block->barrier.arrive_and_wait(); }

inline uint4 __ldg(const uint4* address) { return *address; }

inline float atomicAdd(float* address, float value) { return std::atomic_ref<float>(*address).fetch_add(value); }

inline float __expf(float x) { return std::exp(x); }  // the GPU's is a fast approximation

inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }  // the GPU's is within 2 ulp

namespace vmamba_zoo_cuda {
inline float* dynamic_shared_memory() { return emulation::current_block->shared.data(); }
}  // namespace vmamba_zoo_cuda
