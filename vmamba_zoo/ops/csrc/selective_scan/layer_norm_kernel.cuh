// LayerNorm forward kernel (layer_norm.h): one warp a row, statistics in float32 in two passes over the row (the mean,
// then the mean squared deviation: no cancellation when the mean is large against the spread), the result rounded
// once to the output dtype. The second and third reads of a row come from L1 / L2.
#pragma once

#include "layer_norm.h"
#include "selective_scan_common.cuh"

namespace vmamba_zoo_cuda {

template <typename In, typename Out>
__global__ void __launch_bounds__(kLayerNormWarps * 32) layer_norm_fwd_kernel(LayerNormParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kLayerNormWarps + threadIdx.x / 32;
  if (row >= p.rows) return;  // the whole warp: no lane is left out of the shuffles below
  const int columns = p.columns;
  const In* x = static_cast<const In*>(p.x) + row * columns;
  float sum = 0.f;
  for (int c = lane; c < columns; c += 32) sum += to_float(x[c]);
  const float mean = warp_sum(sum) / static_cast<float>(columns);
  float squares = 0.f;
  for (int c = lane; c < columns; c += 32) {
    const float d = to_float(x[c]) - mean;
    squares = fmaf(d, d, squares);
  }
  const float rstd = rsqrtf(warp_sum(squares) / static_cast<float>(columns) + p.eps);
  Out* y = static_cast<Out*>(p.y) + row * columns;
  for (int c = lane; c < columns; c += 32) {
    float value = (to_float(x[c]) - mean) * rstd;
    if (p.weight != nullptr) value *= p.weight[c];
    if (p.bias != nullptr) value += p.bias[c];
    y[c] = from_float<Out>(value);
  }
  if (lane == 0) {
    p.mean[row] = mean;
    p.rstd[row] = rstd;
  }
}

// Calls launch.template run<In, Out>() for the (input, output) dtype pair.
template <typename In, typename Launch>
cudaError_t dispatch_layer_norm_output(ScalarKind output_kind, const Launch& launch) {
  switch (output_kind) {
    case ScalarKind::kFloat:
      return launch.template run<In, float>();
    case ScalarKind::kHalf:
      return launch.template run<In, c10::Half>();
    case ScalarKind::kBFloat16:
      return launch.template run<In, c10::BFloat16>();
  }
  return cudaErrorInvalidValue;
}

template <typename Launch>
cudaError_t dispatch_layer_norm(ScalarKind input_kind, ScalarKind output_kind, const Launch& launch) {
  switch (input_kind) {
    case ScalarKind::kFloat:
      return dispatch_layer_norm_output<float>(output_kind, launch);
    case ScalarKind::kHalf:
      return dispatch_layer_norm_output<c10::Half>(output_kind, launch);
    case ScalarKind::kBFloat16:
      return dispatch_layer_norm_output<c10::BFloat16>(output_kind, launch);
  }
  return cudaErrorInvalidValue;
}

}  // namespace vmamba_zoo_cuda
