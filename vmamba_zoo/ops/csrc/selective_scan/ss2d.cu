// Fused SS2D scan: launchers of the kernels in ss2d_kernel.cuh, one per (dtype, rank bucket); d_state 1.
#include "ss2d_kernel.cuh"

namespace vmamba_zoo_cuda {
namespace {

template <typename Kernel>
cudaError_t launch_kernel(Kernel kernel, const SS2DParams& p, int smem_floats, cudaStream_t stream) {
  const size_t smem = sizeof(float) * smem_floats;
  if (smem > 48 * 1024) {  // above the default limit a kernel must opt in
    const cudaError_t status =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (status != cudaSuccess) return status;
  }
  kernel<<<dim3(p.tiles, p.batch), dim3(p.segments * 32), smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, int R>
cudaError_t launch_fwd(const SS2DParams& p, cudaStream_t stream) {
  return launch_kernel(ss2d_fwd_kernel<T, 1, R>, p, SS2DFwdLayout<R, 1>::fwd_floats(p.segments), stream);
}

template <typename T, int R>
cudaError_t launch_bwd(const SS2DParams& p, cudaStream_t stream) {
  return launch_kernel(ss2d_bwd_kernel<T, 1, R>, p, SS2DLayout<R, 1>::bwd_floats(p.segments), stream);
}

template <typename T>
cudaError_t launch_for_rank(const SS2DParams& p, bool backward, cudaStream_t stream) {
  switch (ss2d_rank_bucket(p.rank)) {
    case 8:
      return backward ? launch_bwd<T, 8>(p, stream) : launch_fwd<T, 8>(p, stream);
    case 16:
      return backward ? launch_bwd<T, 16>(p, stream) : launch_fwd<T, 16>(p, stream);
    case 24:
      return backward ? launch_bwd<T, 24>(p, stream) : launch_fwd<T, 24>(p, stream);
    case 32:
      return backward ? launch_bwd<T, 32>(p, stream) : launch_fwd<T, 32>(p, stream);
    case 48:
      return backward ? launch_bwd<T, 48>(p, stream) : launch_fwd<T, 48>(p, stream);
    default:
      return backward ? launch_bwd<T, 64>(p, stream) : launch_fwd<T, 64>(p, stream);
  }
}

cudaError_t launch(const SS2DParams& p, ScalarKind kind, bool backward, cudaStream_t stream) {
  if (p.d_state != 1 || p.rank < 1 || p.rank > kSS2DMaxRank) return cudaErrorInvalidValue;
  switch (kind) {
    case ScalarKind::kFloat:
      return launch_for_rank<float>(p, backward, stream);
    case ScalarKind::kHalf:
      return launch_for_rank<c10::Half>(p, backward, stream);
    case ScalarKind::kBFloat16:
      return launch_for_rank<c10::BFloat16>(p, backward, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_ss2d_fwd(const SS2DParams& params, ScalarKind input_kind, cudaStream_t stream) {
  return launch(params, input_kind, false, stream);
}

cudaError_t launch_ss2d_bwd(const SS2DParams& params, ScalarKind input_kind, cudaStream_t stream) {
  return launch(params, input_kind, true, stream);
}

}  // namespace vmamba_zoo_cuda
