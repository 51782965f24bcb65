// Selective scan forward: launchers of the kernels in selective_scan_fwd_kernel.cuh (chunked) and
// selective_scan_fwd_lanes_kernel.cuh (one channel a lane, d_state 16), one per dtype pair.
#include "selective_scan_fwd_kernel.cuh"
#include "selective_scan_fwd_lanes_kernel.cuh"

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
  return launch_by_dtype(input_kind, fp32_out, [&](auto in, auto out) {
    return launch<typename decltype(in)::type, typename decltype(out)::type>(params, stream);
  });
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
