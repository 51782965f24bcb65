// Selective scan forward: launchers of the kernel in selective_scan_fwd_kernel.cuh, one per dtype pair.
#include "selective_scan_fwd_kernel.cuh"

namespace vmamba_zoo_cuda {
namespace {

template <typename input_t, typename output_t>
cudaError_t launch(const SelectiveScanParams& p, cudaStream_t stream) {
  const dim3 grid(p.groups * p.blocks_per_group, p.batch);
  const dim3 block(p.warps_per_block * 32);
  auto kernel = fwd_single_state(p) ? selective_scan_fwd_kernel<input_t, output_t, true>
                                    : selective_scan_fwd_kernel<input_t, output_t>;
  kernel<<<grid, block, sizeof(float) * fwd_smem_floats(p), stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_selective_scan_fwd(const SelectiveScanParams& params, ScalarKind input_kind, bool fp32_out,
                                      cudaStream_t stream) {
  switch (input_kind) {
    case ScalarKind::kFloat:
      return launch<float, float>(params, stream);
    case ScalarKind::kHalf:
      return fp32_out ? launch<c10::Half, float>(params, stream) : launch<c10::Half, c10::Half>(params, stream);
    case ScalarKind::kBFloat16:
      return fp32_out ? launch<c10::BFloat16, float>(params, stream)
                      : launch<c10::BFloat16, c10::BFloat16>(params, stream);
  }
  return cudaErrorInvalidValue;
}

bool selective_scan_kernels_available() {
  // fails with cudaErrorInvalidDeviceFunction / NoKernelImageForDevice when the build holds no code
  // for this device's architecture
  cudaFuncAttributes attributes;
  const cudaError_t status = cudaFuncGetAttributes(&attributes, selective_scan_fwd_kernel<float, float>);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // clear it so it does not surface in an unrelated later check
    return false;
  }
  return true;
}

}  // namespace vmamba_zoo_cuda
