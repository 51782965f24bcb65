// Host side of the fused SS2D CUDA scan: input checks, allocation, the fixed-order sums of the backward's
// partial results; registered next to the selective scan as
//   torch.ops.vmamba_zoo_cuda.ss2d_fwd / ss2d_bwd
// and called by the Python backend (vmamba_zoo/ops/cuda_backend.py) from behind the package's custom ops
// torch.ops.vmamba_zoo.ss2d_scan_fwd / _bwd. Shapes: ss2d.h.
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "host_common.h"
#include "ss2d.h"
#include "ss2d_host.h"

namespace vmamba_zoo_cuda {
namespace {

using at::Tensor;

constexpr const char* kWhat = "vmamba_zoo CUDA SS2D scan";

void check_shape(const Tensor& t, const char* name, std::vector<int64_t> expected) {
  vmamba_zoo_cuda::check_shape(t, kWhat, name, std::move(expected));
}

struct Inputs {
  Tensor x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds;
  ScalarKind kind;
};

// The work split's tuning knobs (benchmarks/ss2d_cuda_tune.py sweeps them): VMAMBA_ZOO_SS2D_{FWD,BWD}_WARPS, the
// warps to aim for over the grid, and VMAMBA_ZOO_SS2D_{FWD,BWD}_SEGMENTS, the most warps per block.
int env_int(const char* name, int fallback, int most) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  const int value = std::atoi(text);
  TORCH_CHECK(value >= 1 && value <= most, kWhat, ": ", name, " must be an integer in [1, ", most, "], got '", text,
              "'");
  return value;
}

void split_work(SS2DParams& p, bool backward) {
  const int most = backward ? kSS2DMaxSegmentsBwd : kSS2DMaxSegments;
  ss2d_split(p, env_int(backward ? "VMAMBA_ZOO_SS2D_BWD_SEGMENTS" : "VMAMBA_ZOO_SS2D_FWD_SEGMENTS", most, most),
             env_int(backward ? "VMAMBA_ZOO_SS2D_BWD_WARPS" : "VMAMBA_ZOO_SS2D_FWD_WARPS", kSS2DTargetWarps, 1 << 20));
}

// Checks the inputs, fills in `p` and returns them contiguous (they outlive the launch).
Inputs prepare(SS2DParams& p, bool backward, const Tensor& x, const Tensor& dts, const Tensor& dt_weight,
               const Tensor& dt_bias, const Tensor& A, const Tensor& Bs, const Tensor& Cs, const Tensor& Ds,
               int64_t directions) {
  TORCH_CHECK(x.dim() == 4, kWhat, ": x must be a channels-last image (batch, H, W, D), got shape ",
              shape_string(x.sizes()));
  check_device(x, kWhat, "x", x);
  const ScalarKind kind = scalar_kind(x, kWhat, "x");
  TORCH_CHECK(directions == 1 || directions == 2 || directions == 4, kWhat,
              ": scan_directions must be 1, 2 or 4, got ", directions);
  const int64_t batch = x.size(0), height = x.size(1), width = x.size(2), channels = x.size(3);
  const int64_t length = height * width;
  TORCH_CHECK(dts.dim() == 4 && dts.size(0) == batch && dts.size(1) == directions && dts.size(3) == length, kWhat,
              ": dts must be (batch, K, R, L) = (", batch, ", ", directions, ", R, ", length, "), got ",
              shape_string(dts.sizes()));
  const int64_t rank = dts.size(2);
  TORCH_CHECK(rank >= 1 && rank <= kSS2DMaxRank, kWhat, ": dt_rank must be in [1, ", kSS2DMaxRank, "], got ", rank);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == directions * channels, kWhat, ": A must be (K*D, d_state) = (",
              directions * channels, ", N), got ", shape_string(A.sizes()));
  const int64_t d_state = A.size(1);
  TORCH_CHECK(d_state == 1, kWhat, ": the kernels are built for d_state 1 (VMamba v2), got ", d_state,
              " (other sizes run on the triton backend)");
  check_shape(dt_weight, "dt_weight", {directions, channels, rank});
  check_shape(dt_bias, "dt_bias", {directions * channels});
  check_shape(Ds, "Ds", {directions * channels});
  check_shape(Bs, "Bs", {batch, directions, d_state, length});
  check_shape(Cs, "Cs", {batch, directions, d_state, length});
  const std::pair<const Tensor*, const char*> activations[] = {{&dts, "dts"}, {&Bs, "Bs"}, {&Cs, "Cs"}};
  for (const auto& [t, name] : activations) {
    check_device(*t, kWhat, name, x);
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), kWhat, ": ", name, " must have x's dtype ", x.scalar_type(),
                ", got ", t->scalar_type());
  }
  const std::pair<const Tensor*, const char*> parameters[] = {
      {&dt_weight, "dt_weight"}, {&dt_bias, "dt_bias"}, {&A, "A"}, {&Ds, "Ds"}};
  for (const auto& [t, name] : parameters) {
    check_device(*t, kWhat, name, x);
    TORCH_CHECK(t->scalar_type() == at::kFloat, kWhat, ": ", name, " must be float32, got ", t->scalar_type());
  }
  TORCH_CHECK(length * channels < (int64_t{1} << 31) && rank * length < (int64_t{1} << 31), kWhat,
              ": H*W*D and dt_rank*H*W must be below 2^31");
  TORCH_CHECK(batch <= 65535, kWhat, ": batch must be at most 65535 (grid y), got ", batch);

  p.batch = static_cast<int>(batch);
  p.height = static_cast<int>(height);
  p.width = static_cast<int>(width);
  p.length = static_cast<int>(length);
  p.channels = static_cast<int>(channels);
  p.directions = static_cast<int>(directions);
  p.rank = static_cast<int>(rank);
  p.d_state = static_cast<int>(d_state);
  p.tiles = static_cast<int>((channels + 31) / 32);
  split_work(p, backward);
  Inputs in{x.contiguous(),  dts.contiguous(), dt_weight.contiguous(), dt_bias.contiguous(), A.contiguous(),
            Bs.contiguous(), Cs.contiguous(),  Ds.contiguous(),        kind};
  p.x = in.x.data_ptr();
  p.dts = in.dts.data_ptr();
  p.dt_weight = in.dt_weight.data_ptr<float>();
  p.dt_bias = in.dt_bias.data_ptr<float>();
  p.A = in.A.data_ptr<float>();
  p.B = in.Bs.data_ptr();
  p.C = in.Cs.data_ptr();
  p.D = in.Ds.data_ptr<float>();
  return in;
}

int64_t state_count(int64_t length) { return (length + kSS2DSubSteps - 1) / kSS2DSubSteps; }

// The forward by direction (atomic adds, order varies between runs) unless torch asks for deterministic
// algorithms; VMAMBA_ZOO_SS2D_FWD_KERNEL=segments|directions picks one (benchmarks/ss2d_cuda_variants.py).
bool forward_by_direction() {
  const char* text = std::getenv("VMAMBA_ZOO_SS2D_FWD_KERNEL");
  const std::string choice = text != nullptr ? text : "";
  TORCH_CHECK(choice.empty() || choice == "segments" || choice == "directions", kWhat,
              ": VMAMBA_ZOO_SS2D_FWD_KERNEL must be 'segments' or 'directions', got '", choice, "'");
  if (choice == "segments") return false;
  if (choice == "directions") return true;
  return !at::globalContext().deterministicAlgorithms();
}

}  // namespace

// the merged scan output, float32 (batch, H, W, D), and, when save_states, the state before every
// kSS2DSubSteps-th step for the backward, float32 (batch, K, ceil(L / kSS2DSubSteps), N, D) (else empty)
std::tuple<Tensor, Tensor> ss2d_fwd(const Tensor& x, const Tensor& dts, const Tensor& dt_weight, const Tensor& dt_bias,
                                    const Tensor& A, const Tensor& Bs, const Tensor& Cs, const Tensor& Ds,
                                    int64_t directions, bool save_states) {
  const OnDeviceOf device_guard(x);
  SS2DParams p;
  const Inputs in = prepare(p, false, x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions);
  p.by_direction = forward_by_direction();
  Tensor out = p.by_direction ? at::zeros(x.sizes(), x.options().dtype(at::kFloat))
                              : at::empty(x.sizes(), x.options().dtype(at::kFloat));
  Tensor states = save_states ? at::empty({p.batch, p.directions, state_count(p.length), p.d_state, p.channels},
                                          x.options().dtype(at::kFloat))
                              : at::empty({0}, x.options().dtype(at::kFloat));
  if (out.numel() == 0) return {out, states};
  p.out = out.data_ptr<float>();
  p.states = save_states ? states.data_ptr<float>() : nullptr;
  check_launch(launch_ss2d_fwd(p, in.kind, current_stream()), kWhat, "forward");
  return {out, states};
}

namespace {

// The raw delta's gradient through the projection delta_raw[b, k, d, l] = sum_r W[k, d, r] dts[b, k, r, l] +
// bias[k, d], as matrix products over the (batch, step) rows, in ddelta's dtype (tensor cores for half):
//   ddts[k]            = W[k]^T (R x D) @ ddelta[k]^T (D x batch*L)
//   [dW[k] | dbias[k]] = sum over row blocks of ddelta[k]^T (D x rows) @ [dts[k]^T | 1 | 0] (rows x R+1, padded);
//                        blocks of a few thousand rows give the product enough output tiles to fill the GPU
// Returns (ddts in dts's dtype, dW float32, dbias float32).
std::tuple<Tensor, Tensor, Tensor> projection_grads(const Tensor& ddelta, const Inputs& in, const SS2DParams& p) {
  const int64_t batch = p.batch, K = p.directions, C = p.channels, L = p.length, R = p.rank;
  const auto act = ddelta.scalar_type();
  const Tensor ddts = at::bmm(in.dt_weight.to(act).transpose(1, 2), ddelta.view({K, batch * L, C}).transpose(1, 2))
                          .view({K, R, batch, L}).permute({2, 0, 1, 3}).to(in.dts.scalar_type()).contiguous();
  int64_t group = 1;  // batch images per row block
  while (batch % (2 * group) == 0 && 2 * group * L <= 4096) group *= 2;
  const int64_t blocks = K * batch / group, rows = group * L;
  // zero columns pad R+1 to a multiple of 8: 16-byte aligned half rows get cuBLAS's fast kernels (R+1 = 7, 13,
  // 25, 49 in VMamba fell to a cutlass align1 kernel, 1.6 ms a VMamba-T step)
  const int64_t cols = (R + 1 + 7) / 8 * 8;
  std::vector<Tensor> parts = {in.dts.to(act).permute({1, 0, 3, 2}).reshape({blocks, rows, R}),
                               at::ones({blocks, rows, 1}, ddelta.options())};
  if (cols > R + 1) parts.push_back(at::zeros({blocks, rows, cols - R - 1}, ddelta.options()));
  const Tensor dw_bias = at::bmm(ddelta.view({blocks, rows, C}).transpose(1, 2), at::cat(parts, 2))
                             .view({K, batch / group, C, cols}).sum(1, false, at::kFloat);  // (K, D, cols)
  return {ddts, dw_bias.narrow(2, 0, R).contiguous(), dw_bias.select(2, R).reshape({K * C})};
}

}  // namespace

// gradients of (x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds), each in its input's dtype; from the forward's saved
// states when `states` is not empty (ss2d_bwd_states_kernel), else re-walking the forward (ss2d_bwd_kernel)
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> ss2d_bwd(
    const Tensor& dy, const Tensor& x, const Tensor& dts, const Tensor& dt_weight, const Tensor& dt_bias,
    const Tensor& A, const Tensor& Bs, const Tensor& Cs, const Tensor& Ds, const Tensor& states,
    int64_t directions) {
  const OnDeviceOf device_guard(x);
  SS2DParams p;
  const Inputs in = prepare(p, true, x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions);
  check_device(dy, kWhat, "dy", x);
  check_shape(dy, "dy", x.sizes().vec());
  TORCH_CHECK(dy.scalar_type() == at::kFloat, kWhat, ": dy must be float32 (the output's dtype), got ",
              dy.scalar_type());
  const bool from_states = states.numel() > 0;
  if (from_states) {
    check_device(states, kWhat, "states", x);
    check_shape(states, "states", {p.batch, p.directions, state_count(p.length), p.d_state, p.channels});
    TORCH_CHECK(states.scalar_type() == at::kFloat, kWhat, ": states must be float32, got ", states.scalar_type());
  }
  const Tensor dy_c = dy.contiguous();
  const Tensor states_c = states.contiguous();
  const auto f32 = x.options().dtype(at::kFloat);
  const int64_t batch = p.batch, K = p.directions, C = p.channels, L = p.length, N = p.d_state;
  Tensor dB_part = at::empty({batch, K, p.tiles, N, L}, f32);
  Tensor dC_part = at::empty_like(dB_part);
  Tensor dD_part = at::empty({batch, K * C}, f32);
  Tensor dA_part = at::empty({batch, K * C, N}, f32);
  p.dy = dy_c.data_ptr<float>();  // the outputs both kernels write
  p.dB_part = dB_part.data_ptr<float>();
  p.dC_part = dC_part.data_ptr<float>();
  p.dD_part = dD_part.data_ptr<float>();
  p.dA_part = dA_part.data_ptr<float>();
  Tensor dx, ddelta;
  if (from_states) {
    Tensor du_dirs = at::empty({K, batch, L, C}, in.x.options());
    ddelta = at::empty({K, batch, L, C}, in.x.options());
    if (x.numel() > 0) {
      p.states = states_c.data_ptr<float>();
      p.du_dirs = du_dirs.data_ptr();
      p.ddelta_dirs = ddelta.data_ptr();
      check_launch(launch_ss2d_bwd_states(p, in.kind, current_stream()), kWhat, "backward");
    } else {
      for (Tensor* t : {&du_dirs, &ddelta, &dB_part, &dC_part, &dD_part, &dA_part}) t->zero_();
    }
    // the directions' du added up in a fixed order (torch's sum accumulates half inputs in float32)
    dx = (K == 1 ? du_dirs.select(0, 0) : du_dirs.sum(0)).view(in.x.sizes()).contiguous();
  } else {
    dx = at::empty_like(in.x);
    Tensor dx_acc = K > 1 ? at::empty(x.sizes(), f32) : at::empty({0}, f32);
    ddelta = at::empty({K, batch, L, C}, f32);
    Tensor scratch = at::empty({batch, p.tiles, p.segments, p.subs, 2 * N, 32}, f32);
    if (x.numel() > 0) {
      p.dx = dx.data_ptr();
      p.dx_acc = K > 1 ? dx_acc.data_ptr<float>() : nullptr;
      p.ddelta = ddelta.data_ptr<float>();
      p.scratch = scratch.data_ptr<float>();
      check_launch(launch_ss2d_bwd(p, in.kind, current_stream()), kWhat, "backward");
    } else {  // an empty image: every gradient is zero
      for (Tensor* t : {&dx, &ddelta, &dB_part, &dC_part, &dD_part, &dA_part}) t->zero_();
    }
  }
  auto [ddts, dw, dbias] = projection_grads(ddelta, in, p);
  // fixed-order sums (torch's reductions and matrix products use no atomics: deterministic)
  auto over_tiles = [&](const Tensor& part, const Tensor& like) {
    return (p.tiles == 1 ? part.select(2, 0) : part.sum(2)).to(like.scalar_type()).contiguous();
  };
  return {dx, ddts, dw, dbias, dA_part.sum(0), over_tiles(dB_part, in.Bs), over_tiles(dC_part, in.Cs),
          dD_part.sum(0)};
}

}  // namespace vmamba_zoo_cuda

#ifndef VMAMBA_ZOO_CUDA_EMULATION
#define VMAMBA_ZOO_SS2D_NAMESPACE vmamba_zoo_cuda
#define VMAMBA_ZOO_SS2D_KEY CUDA
#else
#define VMAMBA_ZOO_SS2D_NAMESPACE vmamba_zoo_cuda_emulated
#define VMAMBA_ZOO_SS2D_KEY CPU
#endif

TORCH_LIBRARY_FRAGMENT(VMAMBA_ZOO_SS2D_NAMESPACE, m) {
  m.def(
      "ss2d_fwd(Tensor x, Tensor dts, Tensor dt_weight, Tensor dt_bias, Tensor A, Tensor Bs, Tensor Cs, Tensor Ds, "
      "int directions, bool save_states=False) -> (Tensor, Tensor)");
  m.def(
      "ss2d_bwd(Tensor dy, Tensor x, Tensor dts, Tensor dt_weight, Tensor dt_bias, Tensor A, Tensor Bs, Tensor Cs, "
      "Tensor Ds, Tensor states, int directions) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(VMAMBA_ZOO_SS2D_NAMESPACE, VMAMBA_ZOO_SS2D_KEY, m) {
  m.impl("ss2d_fwd", &vmamba_zoo_cuda::ss2d_fwd);
  m.impl("ss2d_bwd", &vmamba_zoo_cuda::ss2d_bwd);
}
