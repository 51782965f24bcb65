// Fused SS2D scan: launchers of the kernels in ss2d_kernel.cuh, one per (dtype, rank bucket); d_state 1.
#include "ss2d_kernel.cuh"

namespace vmamba_zoo_cuda {
namespace {

template <typename Kernel>
cudaError_t launch_kernel(Kernel kernel, const SS2DParams& p, int smem_floats, cudaStream_t stream,
                          bool one_warp_per_direction = false) {
  const size_t smem = sizeof(float) * smem_floats;
  if (smem > 48 * 1024) {  // above the default limit a kernel must opt in
    const cudaError_t status =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (status != cudaSuccess) return status;
  }
  if (one_warp_per_direction) {  // one warp per (tile, batch, direction)
    kernel<<<dim3(p.tiles, p.batch, p.directions), dim3(32), smem, stream>>>(p);
  } else {
    kernel<<<dim3(p.tiles, p.batch), dim3(p.segments * 32), smem, stream>>>(p);
  }
  return cudaGetLastError();
}

struct Launcher {
  const SS2DParams& p;
  bool backward;
  cudaStream_t stream;
  bool from_states = false;

  template <typename T, int R>
  cudaError_t run() const {
    if (from_states) {
      return launch_kernel(ss2d_bwd_states_kernel<T, 1, R>, p, ss2d_bwd_states_floats<R, 1>(), stream, true);
    }
    if (backward) return launch_kernel(ss2d_bwd_kernel<T, 1, R>, p, SS2DLayout<R, 1>::bwd_floats(p.segments), stream);
    if (p.by_direction) {
      return launch_kernel(ss2d_fwd_directions_kernel<T, 1, R>, p, SS2DLayout<R, 1>::kStage, stream, true);
    }
    return launch_kernel(ss2d_fwd_kernel<T, 1, R>, p, SS2DFwdLayout<R, 1>::fwd_floats(p.segments), stream);
  }
};

}  // namespace

cudaError_t launch_ss2d_fwd(const SS2DParams& params, ScalarKind input_kind, cudaStream_t stream) {
  return dispatch_ss2d(params, input_kind, Launcher{params, false, stream});
}

cudaError_t launch_ss2d_bwd(const SS2DParams& params, ScalarKind input_kind, cudaStream_t stream) {
  return dispatch_ss2d(params, input_kind, Launcher{params, true, stream});
}

cudaError_t launch_ss2d_bwd_states(const SS2DParams& params, ScalarKind input_kind, cudaStream_t stream) {
  return dispatch_ss2d(params, input_kind, Launcher{params, true, stream, true});
}

}  // namespace vmamba_zoo_cuda
