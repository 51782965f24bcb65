// Selective scan backward: launchers of the kernel in selective_scan_bwd_kernel.cuh, one per dtype pair.
#include "selective_scan_bwd_kernel.cuh"

namespace vmamba_zoo_cuda {
namespace {

template <typename input_t, typename dout_t>
cudaError_t launch(const SelectiveScanParams& p, cudaStream_t stream) {
  const dim3 grid(p.groups * p.blocks_per_group, p.batch);
  const dim3 block(p.warps_per_block * 32);
  const size_t smem = sizeof(float) * bwd_smem_floats(p);
  auto kernel = bwd_single_state(p) ? selective_scan_bwd_kernel<input_t, dout_t, true>
                                    : selective_scan_bwd_kernel<input_t, dout_t>;
  if (smem > 48 * 1024) {  // above the default limit a kernel must opt in
    const cudaError_t status =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (status != cudaSuccess) return status;
  }
  kernel<<<grid, block, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_selective_scan_bwd(const SelectiveScanParams& params, ScalarKind input_kind, bool fp32_dout,
                                      cudaStream_t stream) {
  return launch_by_dtype(input_kind, fp32_dout, [&](auto in, auto dout) {
    return launch<typename decltype(in)::type, typename decltype(dout)::type>(params, stream);
  });
}

}  // namespace vmamba_zoo_cuda
