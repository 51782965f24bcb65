// Host side of the LayerNorm CUDA forward (layer_norm.cu), registered next to the scans as
//   torch.ops.vmamba_zoo_cuda.layer_norm_fwd    (x, weight?, bias?, eps, out_dtype) -> (y, mean, rstd)
//   torch.ops.vmamba_zoo_cuda.layer_norm_eager  the same forward and torch's LayerNorm backward as one C++ autograd
//                                               node: the eager path of vmamba_zoo.ops.layer_norm for this backend
// The package's "cuda" backend of layer_norm_fwd (vmamba_zoo/ops/cuda_backend.py); the backward stays the
// reference's (torch's native kernels on the float32 inputs), so both paths give the same gradients bit for bit.
#include <optional>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "host_common.h"
#include "layer_norm.h"

namespace vmamba_zoo_cuda {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr const char* kWhat = "vmamba_zoo CUDA LayerNorm";

void check_parameter(const std::optional<Tensor>& t, const char* name, const Tensor& x) {
  if (!t.has_value() || !t->defined()) return;
  check_device(*t, kWhat, name, x);
  TORCH_CHECK(t->scalar_type() == at::kFloat, kWhat, ": ", name, " must be float32, got ", t->scalar_type());
  TORCH_CHECK(t->dim() == 1 && t->size(0) == x.size(-1), kWhat, ": ", name, " must have shape (", x.size(-1),
              ",), got ", shape_string(t->sizes()));
}

const float* data_or_null(const Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// (y in out_dtype, mean, rstd: float32 of shape x.shape[:-1])
std::tuple<Tensor, Tensor, Tensor> layer_norm_fwd(const Tensor& x, const std::optional<Tensor>& weight,
                                                  const std::optional<Tensor>& bias, double eps,
                                                  at::ScalarType out_dtype) {
  TORCH_CHECK(x.dim() >= 1, kWhat, ": x must have at least one dimension");
  check_device(x, kWhat, "x", x);
  const ScalarKind input_kind = scalar_kind(x, kWhat, "x");
  const ScalarKind output_kind = scalar_kind_of(out_dtype, kWhat, "out_dtype");
  check_parameter(weight, "weight", x);
  check_parameter(bias, "bias", x);
  const int64_t columns = x.size(-1);
  TORCH_CHECK(columns >= 1 && columns < (int64_t{1} << 31), kWhat, ": the last dimension must be in [1, 2^31)");
  const OnDeviceOf device_guard(x);
  const Tensor x_c = x.contiguous();
  const Tensor weight_c = weight.has_value() && weight->defined() ? weight->contiguous() : Tensor();
  const Tensor bias_c = bias.has_value() && bias->defined() ? bias->contiguous() : Tensor();
  Tensor y = at::empty(x.sizes(), x.options().dtype(out_dtype));
  const std::vector<int64_t> stats_shape(x.sizes().begin(), x.sizes().end() - 1);
  Tensor mean = at::empty(stats_shape, x.options().dtype(at::kFloat));
  Tensor rstd = at::empty_like(mean);
  LayerNormParams p;
  p.rows = x.numel() / columns;
  p.columns = static_cast<int>(columns);
  p.eps = static_cast<float>(eps);
  if (p.rows == 0) return {y, mean, rstd};
  p.x = x_c.data_ptr();
  p.y = y.data_ptr();
  p.weight = data_or_null(weight_c);
  p.bias = data_or_null(bias_c);
  p.mean = mean.data_ptr<float>();
  p.rstd = rstd.data_ptr<float>();
  check_launch(launch_layer_norm_fwd(p, input_kind, output_kind, current_stream()), kWhat, "forward");
  return {y, mean, rstd};
}

class LayerNormEager : public torch::autograd::Function<LayerNormEager> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const std::optional<Tensor>& weight,
                        const std::optional<Tensor>& bias, double eps, at::ScalarType out_dtype) {
    auto [y, mean, rstd] = layer_norm_fwd(x, weight, bias, eps, out_dtype);
    ctx->save_for_backward({x, weight.value_or(Tensor()), bias.value_or(Tensor()), mean, rstd});
    return y;
  }

  // the reference backward (vmamba_zoo.ops.layer_norm.reference_layer_norm_bwd): torch's kernels in float32
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(), "vmamba_zoo layer_norm_eager: double backward (create_graph=True) is "
                "not supported");
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &weight = saved[1], &bias = saved[2], &mean = saved[3], &rstd = saved[4];
    std::vector<int64_t> stats_shape(x.sizes().begin(), x.sizes().end() - 1);
    stats_shape.push_back(1);
    auto [dx, dweight, dbias] = at::native_layer_norm_backward(
        grads[0].to(at::kFloat), x.to(at::kFloat), {x.size(-1)}, mean.reshape(stats_shape),
        rstd.reshape(stats_shape), weight, bias, {true, weight.defined(), bias.defined()});
    return {dx.to(x.scalar_type()), dweight, dbias, Tensor(), Tensor()};
  }
};

Tensor layer_norm_eager(const Tensor& x, const std::optional<Tensor>& weight, const std::optional<Tensor>& bias,
                        double eps, at::ScalarType out_dtype) {
  return LayerNormEager::apply(x, weight, bias, eps, out_dtype);
}

}  // namespace
}  // namespace vmamba_zoo_cuda

#ifndef VMAMBA_ZOO_CUDA_EMULATION
#define VMAMBA_ZOO_LN_NAMESPACE vmamba_zoo_cuda
#define VMAMBA_ZOO_LN_KEY CUDA
#else
#define VMAMBA_ZOO_LN_NAMESPACE vmamba_zoo_cuda_emulated
#define VMAMBA_ZOO_LN_KEY CPU
#endif

TORCH_LIBRARY_FRAGMENT(VMAMBA_ZOO_LN_NAMESPACE, m) {
  m.def("layer_norm_fwd(Tensor x, Tensor? weight, Tensor? bias, float eps, ScalarType out_dtype) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("layer_norm_eager(Tensor x, Tensor? weight, Tensor? bias, float eps, ScalarType out_dtype) -> Tensor");
}

TORCH_LIBRARY_IMPL(VMAMBA_ZOO_LN_NAMESPACE, VMAMBA_ZOO_LN_KEY, m) {
  m.impl("layer_norm_fwd", &vmamba_zoo_cuda::layer_norm_fwd);
}

// CompositeImplicitAutograd: the node is made here, above every backend (the CUDA or the tests' CPU kernels)
TORCH_LIBRARY_IMPL(VMAMBA_ZOO_LN_NAMESPACE, CompositeImplicitAutograd, m) {
  m.impl("layer_norm_eager", &vmamba_zoo_cuda::layer_norm_eager);
}
