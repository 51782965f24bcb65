// The eager path of the SS2D scan from the pixel-order projection (vmamba_zoo.ops.ss2d.ss2d_scan_projected) as
// one C++ autograd node, registered as torch.ops.vmamba_zoo_cuda.ss2d_projected:
//   forward:  gather each direction's projection into its scan order (one index_select by `rows`), split it into
//             dts | Bs | Cs, A = -exp(A_logs), the fused scan (ss2d_fwd);
//   backward: the fused backward (ss2d_bwd), the projection's gradient put back in pixel order (`inverse`),
//             dA_logs = dA * A.
// The same kernels in the same order as the Python autograd.Function it replaces in plain eager mode (bit for bit
// equal), without the Python between them: an eager training step's host time, not its GPU time, bounds it on
// fast GPUs. Compilers and tracers keep seeing the package's custom ops instead.
#include <vector>

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "ss2d_host.h"

namespace vmamba_zoo_cuda {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// x (batch, L, D) tokens of rows `width` wide; proj (batch, L, K*(R+2N)) pixel order; dt_weight (K, D, R),
// dt_bias (K, D), A_logs (K*D, N), Ds (K*D) float32; rows / inverse: the gather and its inverse permutation
class SS2DProjected : public torch::autograd::Function<SS2DProjected> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& proj, const Tensor& dt_weight,
                        const Tensor& dt_bias, const Tensor& A_logs, const Tensor& Ds, const Tensor& rows,
                        const Tensor& inverse, int64_t directions, int64_t width, bool save_states) {
    const int64_t batch = x.size(0), length = x.size(1), channels = x.size(2);
    const int64_t per_direction = proj.size(2) / directions, rank = dt_weight.size(2), d_state = A_logs.size(1);
    TORCH_CHECK(width > 0 && length % width == 0 && per_direction == rank + 2 * d_state,
                "vmamba_zoo ss2d_projected: inconsistent sizes");
    // (batch, K, R+2N, L): direction k's projection in its scan order
    const Tensor scan_order = proj.reshape({batch, length * directions, per_direction})
                                  .index_select(1, rows)
                                  .view({batch, directions, length, per_direction})
                                  .transpose(2, 3);
    const Tensor dts = scan_order.narrow(2, 0, rank).contiguous();
    const Tensor Bs = scan_order.narrow(2, rank, d_state).contiguous();
    const Tensor Cs = scan_order.narrow(2, rank + d_state, d_state).contiguous();
    const Tensor bias = dt_bias.reshape({-1});
    const Tensor A = at::neg(at::exp(A_logs));
    const Tensor image = x.view({batch, length / width, width, channels});
    auto [out, states] = ss2d_fwd(image, dts, dt_weight, bias, A, Bs, Cs, Ds, directions, save_states);
    ctx->save_for_backward({x, dts, dt_weight, bias, A, Bs, Cs, Ds, states, inverse});
    ctx->saved_data["directions"] = directions;
    ctx->saved_data["width"] = width;
    ctx->saved_data["proj_sizes"] = proj.sizes().vec();
    ctx->saved_data["bias_sizes"] = dt_bias.sizes().vec();
    return out.view(x.sizes());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // the kernels' gradients are not themselves differentiable: say so rather than return ones without a graph
    TORCH_CHECK(!at::GradMode::is_enabled(), "vmamba_zoo ss2d_projected: double backward (create_graph=True) through "
                "the SS2D scan is not supported");
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &dts = saved[1], &dt_weight = saved[2], &bias = saved[3], &A = saved[4];
    const Tensor &Bs = saved[5], &Cs = saved[6], &Ds = saved[7], &states = saved[8], &inverse = saved[9];
    const int64_t directions = ctx->saved_data["directions"].toInt(), width = ctx->saved_data["width"].toInt();
    const int64_t batch = x.size(0), length = x.size(1), channels = x.size(2);
    const Tensor image = x.view({batch, length / width, width, channels});
    const Tensor dy = grads[0].to(at::kFloat).contiguous().view(image.sizes());
    auto [dx, ddts, ddt_weight, dbias, dA, dBs, dCs, dDs] =
        ss2d_bwd(dy, image, dts, dt_weight, bias, A, Bs, Cs, Ds, states, directions);
    const Tensor dproj = at::cat({ddts, dBs, dCs}, 2)
                             .transpose(2, 3)
                             .reshape({batch, directions * length, -1})
                             .index_select(1, inverse)
                             .view(ctx->saved_data["proj_sizes"].toIntVector());
    return {dx.reshape(x.sizes()), dproj, ddt_weight, dbias.view(ctx->saved_data["bias_sizes"].toIntVector()),
            dA.mul_(A),            dDs,   Tensor(),   Tensor(),
            Tensor(),              Tensor(), Tensor()};  // d(-exp(a))/da = -exp(a) = A
  }
};

Tensor ss2d_projected(const Tensor& x, const Tensor& proj, const Tensor& dt_weight, const Tensor& dt_bias,
                      const Tensor& A_logs, const Tensor& Ds, const Tensor& rows, const Tensor& inverse,
                      int64_t directions, int64_t width, bool save_states) {
  return SS2DProjected::apply(x, proj, dt_weight, dt_bias, A_logs, Ds, rows, inverse, directions, width, save_states);
}

}  // namespace
}  // namespace vmamba_zoo_cuda

#ifndef VMAMBA_ZOO_CUDA_EMULATION
#define VMAMBA_ZOO_EAGER_NAMESPACE vmamba_zoo_cuda
#else
#define VMAMBA_ZOO_EAGER_NAMESPACE vmamba_zoo_cuda_emulated
#endif

TORCH_LIBRARY_FRAGMENT(VMAMBA_ZOO_EAGER_NAMESPACE, m) {
  m.def(
      "ss2d_projected(Tensor x, Tensor proj, Tensor dt_weight, Tensor dt_bias, Tensor A_logs, Tensor Ds, "
      "Tensor rows, Tensor inverse, int directions, int width, bool save_states) -> Tensor");
}

// CompositeImplicitAutograd: the node is made here, above every backend (the CUDA or the tests' CPU kernels)
TORCH_LIBRARY_IMPL(VMAMBA_ZOO_EAGER_NAMESPACE, CompositeImplicitAutograd, m) {
  m.impl("ss2d_projected", &vmamba_zoo_cuda::ss2d_projected);
}
