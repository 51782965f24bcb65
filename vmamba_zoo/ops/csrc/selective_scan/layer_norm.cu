// Launcher of the LayerNorm forward kernel (layer_norm_kernel.cuh).
#include "layer_norm_kernel.cuh"

namespace vmamba_zoo_cuda {
namespace {

struct LayerNormLauncher {
  const LayerNormParams& p;
  cudaStream_t stream;

  template <typename In, typename Out>
  cudaError_t run() const {
    const unsigned blocks = static_cast<unsigned>((p.rows + kLayerNormWarps - 1) / kLayerNormWarps);
    layer_norm_fwd_kernel<In, Out><<<blocks, kLayerNormWarps * 32, 0, stream>>>(p);
    return cudaGetLastError();
  }
};

}  // namespace

cudaError_t launch_layer_norm_fwd(const LayerNormParams& p, ScalarKind input_kind, ScalarKind output_kind,
                                  cudaStream_t stream) {
  return dispatch_layer_norm(input_kind, output_kind, LayerNormLauncher{p, stream});
}

}  // namespace vmamba_zoo_cuda
