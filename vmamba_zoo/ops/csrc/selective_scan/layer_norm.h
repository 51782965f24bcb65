// LayerNorm forward over the last dimension of channel-last maps (rows of 48 to a few thousand columns): what the
// host code (layer_norm.cpp) and the launcher (layer_norm.cu) share. Kept free of ATen so the .cu compiles fast.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "selective_scan.h"  // ScalarKind

namespace vmamba_zoo_cuda {

constexpr int kLayerNormWarps = 8;  // rows per block: one warp a row

// x (rows, columns) in the input dtype, y in the output dtype, weight / bias float32 or null, mean / rstd float32
struct LayerNormParams {
  const void* x = nullptr;
  void* y = nullptr;
  const float* weight = nullptr;
  const float* bias = nullptr;
  float* mean = nullptr;
  float* rstd = nullptr;
  int64_t rows = 0;
  int columns = 0;
  float eps = 1e-5f;
};

cudaError_t launch_layer_norm_fwd(const LayerNormParams& params, ScalarKind input_kind, ScalarKind output_kind,
                                  cudaStream_t stream);

}  // namespace vmamba_zoo_cuda
