// The fused SS2D scan's host functions (ss2d.cpp), for the other host code that calls them directly: the eager
// path's autograd node (ss2d_eager.cpp).
#pragma once

#include <tuple>

#include <ATen/ATen.h>

namespace vmamba_zoo_cuda {

// the merged scan output, float32 (batch, H, W, D), and the saved states (empty unless save_states)
std::tuple<at::Tensor, at::Tensor> ss2d_fwd(const at::Tensor& x, const at::Tensor& dts, const at::Tensor& dt_weight,
                                            const at::Tensor& dt_bias, const at::Tensor& A, const at::Tensor& Bs,
                                            const at::Tensor& Cs, const at::Tensor& Ds, int64_t directions,
                                            bool save_states);

// gradients of (x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds), each in its input's dtype
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> ss2d_bwd(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& dts, const at::Tensor& dt_weight,
    const at::Tensor& dt_bias, const at::Tensor& A, const at::Tensor& Bs, const at::Tensor& Cs, const at::Tensor& Ds,
    const at::Tensor& states, int64_t directions);

}  // namespace vmamba_zoo_cuda
