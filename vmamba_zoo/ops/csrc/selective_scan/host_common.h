// Host-side helpers shared by the extension's ops (selective_scan.cpp, ss2d.cpp): the device guard and
// stream, the dtype switch, launch-error messages. The tests' CPU build (VMAMBA_ZOO_CUDA_EMULATION, see
// tests/cuda_emulation) runs the same host code on CPU tensors.
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>
#ifndef VMAMBA_ZOO_CUDA_EMULATION
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
// (not ATen/cuda/CUDAContext.h: it pulls in cuBLAS/cuSPARSE headers, which a minimal toolkit may lack)
#endif

#include "selective_scan.h"

namespace vmamba_zoo_cuda {

#ifndef VMAMBA_ZOO_CUDA_EMULATION
constexpr bool kOnCuda = true;
// runs the kernels on `t`'s device, on its current stream
struct OnDeviceOf {
  explicit OnDeviceOf(const at::Tensor& t) : guard(t.device()) {}
  c10::cuda::OptionalCUDAGuard guard;
};
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
// SMs of the current device (the guard's), for kernel choices that depend on how many warps fill the GPU
inline int multiprocessor_count() {
  int count = 0;
  const cudaError_t status = cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, c10::cuda::current_device());
  TORCH_CHECK(status == cudaSuccess, "vmamba_zoo CUDA: cannot read the GPU's SM count: ", cudaGetErrorString(status));
  return count;
}
#else
constexpr bool kOnCuda = false;
struct OnDeviceOf {
  explicit OnDeviceOf(const at::Tensor&) {}
};
inline cudaStream_t current_stream() { return nullptr; }
inline int multiprocessor_count() { return 2; }  // small, so the tests' shapes reach both sides of such choices
#endif

// `what` names the op in messages ("vmamba_zoo CUDA selective scan"), `name` the tensor or argument
inline ScalarKind scalar_kind_of(at::ScalarType dtype, const char* what, const char* name) {
  switch (dtype) {
    case at::kFloat:
      return ScalarKind::kFloat;
    case at::kHalf:
      return ScalarKind::kHalf;
    case at::kBFloat16:
      return ScalarKind::kBFloat16;
    default:
      break;
  }
  TORCH_CHECK(false, what, ": ", name, " must be float32, float16 or bfloat16, got ", dtype);
  return ScalarKind::kFloat;  // not reached
}

inline ScalarKind scalar_kind(const at::Tensor& t, const char* what, const char* name) {
  return scalar_kind_of(t.scalar_type(), what, name);
}

inline void check_device(const at::Tensor& t, const char* what, const char* name, const at::Tensor& first) {
  TORCH_CHECK(t.is_cuda() == kOnCuda, what, ": ", name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK(t.device() == first.device(), what, ": ", name, " is on ", t.device(), " but the first input is on ",
              first.device());
}

// "[2, 4, 600]". Sizes go into error messages through this, not as at::IntArrayRef: on the device machine (torch 2.11,
// H100, 2026-12-07) every failed shape check that streamed an IntArrayRef into TORCH_CHECK's message segfaulted the
// process instead of raising (benchmarks/gpu_error_probe.py), while checks with scalar messages raised.
inline std::string shape_string(at::IntArrayRef sizes) {
  std::string text = "[";
  for (size_t i = 0; i < sizes.size(); ++i) text += (i ? ", " : "") + std::to_string(sizes[i]);
  return text + "]";
}

// t must have the shape `expected` (held by value: no view into a caller's temporary)
inline void check_shape(const at::Tensor& t, const char* what, const char* name, std::vector<int64_t> expected) {
  const std::string got = shape_string(t.sizes()), want = shape_string(expected);
  TORCH_CHECK(got == want, what, ": ", name, " must have shape ", want, ", got ", got);
}

inline void check_launch(cudaError_t status, const char* what, const char* kernel) {
  TORCH_CHECK(status == cudaSuccess, what, ": launching the ", kernel, " kernel failed: ", cudaGetErrorString(status),
              status == cudaErrorNoKernelImageForDevice || status == cudaErrorInvalidDeviceFunction
                  ? " (the extension was not built for this GPU's architecture: set TORCH_CUDA_ARCH_LIST and rebuild)"
                  : "");
}

}  // namespace vmamba_zoo_cuda
