// Host side of the CUDA selective scan: input checks, output / scratch allocation, the fixed-order sums
// of the kernels' partial results, and registration as torch ops:
//   torch.ops.vmamba_zoo_cuda.selective_scan_fwd / selective_scan_fwd_states / selective_scan_bwd /
//   kernels_available
// The Python backend (vmamba_zoo/ops/cuda_backend.py) calls these from behind the package's own
// custom ops (torch.ops.vmamba_zoo.selective_scan_*), which stay the public interface.
#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "host_common.h"
#include "selective_scan.h"

// VMAMBA_ZOO_CUDA_EMULATION: the tests' CPU build (tests/cuda_emulation), with the kernels run by an
// emulator on CPU tensors and the ops under another namespace, so this host code is tested without a GPU.
namespace vmamba_zoo_cuda {
namespace {

using at::Tensor;

constexpr const char* kWhat = "vmamba_zoo CUDA selective scan";

ScalarKind scalar_kind(const Tensor& t) { return vmamba_zoo_cuda::scalar_kind(t, kWhat, "u"); }

void check_cuda(const Tensor& t, const char* name, const Tensor& u) { check_device(t, kWhat, name, u); }

void check_shape(const Tensor& t, const char* name, std::vector<int64_t> expected) {
  vmamba_zoo_cuda::check_shape(t, kWhat, name, std::move(expected));
}

// Checks every input, makes it contiguous and fills in the sizes of `params`; returns the contiguous
// tensors (u, delta, A, B, C, D, z, delta_bias) so they outlive the launch.
struct Inputs {
  Tensor u, delta, A, B, C;
  std::optional<Tensor> D, z, delta_bias;
};

Inputs prepare(SelectiveScanParams& params, int max_warps, const Tensor& u, const Tensor& delta, const Tensor& A,
               const Tensor& B, const Tensor& C, const std::optional<Tensor>& D, const std::optional<Tensor>& z,
               const std::optional<Tensor>& delta_bias, bool delta_softplus) {
  TORCH_CHECK(u.dim() == 3, "vmamba_zoo CUDA selective scan: u must be (batch, K*D, L), got shape ",
              shape_string(u.sizes()));
  const auto input_type = u.scalar_type();
  scalar_kind(u);  // checks the dtype
  const int64_t batch = u.size(0), channels = u.size(1), length = u.size(2);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == channels,
              "vmamba_zoo CUDA selective scan: A must be (K*D, d_state) = (", channels, ", N), got ",
              shape_string(A.sizes()));
  const int64_t d_state = A.size(1);
  TORCH_CHECK(d_state >= 1 && d_state <= kMaxDState, "vmamba_zoo CUDA selective scan: d_state must be in [1, ",
              kMaxDState, "], got ", d_state);
  TORCH_CHECK(B.dim() == 4, "vmamba_zoo CUDA selective scan: B must be (batch, K, d_state, L), got ",
              shape_string(B.sizes()));
  const int64_t groups = B.size(1);
  TORCH_CHECK(groups >= 1 && channels % groups == 0, "vmamba_zoo CUDA selective scan: ", channels,
              " channels do not split into ", groups, " groups of B/C");
  check_shape(delta, "delta", u.sizes().vec());
  check_shape(B, "B", {batch, groups, d_state, length});
  check_shape(C, "C", {batch, groups, d_state, length});
  const std::pair<const Tensor*, const char*> activations[] = {{&delta, "delta"}, {&B, "B"}, {&C, "C"}};
  for (const auto& [t, name] : activations) {
    check_cuda(*t, name, u);
    TORCH_CHECK(t->scalar_type() == input_type, "vmamba_zoo CUDA selective scan: ", name, " must have u's dtype ",
                input_type, ", got ", t->scalar_type());
  }
  check_cuda(A, "A", u);
  TORCH_CHECK(A.scalar_type() == at::kFloat, "vmamba_zoo CUDA selective scan: A must be float32, got ",
              A.scalar_type());
  const std::pair<const std::optional<Tensor>*, const char*> parameters[] = {{&D, "D"},
                                                                             {&delta_bias, "delta_bias"}};
  for (const auto& [t, name] : parameters) {
    if (!t->has_value()) continue;
    check_cuda(**t, name, u);
    check_shape(**t, name, {channels});
    TORCH_CHECK((*t)->scalar_type() == at::kFloat, "vmamba_zoo CUDA selective scan: ", name,
                " must be float32, got ", (*t)->scalar_type());
  }
  if (z.has_value()) {
    check_cuda(*z, "z", u);
    check_shape(*z, "z", u.sizes().vec());
    TORCH_CHECK(z->scalar_type() == input_type, "vmamba_zoo CUDA selective scan: z must have u's dtype ",
                input_type, ", got ", z->scalar_type());
  }
  TORCH_CHECK(length < (int64_t{1} << 31) - kChunk && channels < (int64_t{1} << 31),
              "vmamba_zoo CUDA selective scan: length and channels must be below 2^31");
  TORCH_CHECK(batch <= 65535, "vmamba_zoo CUDA selective scan: batch must be at most 65535 (grid y), got ", batch);

  Inputs in{u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(), std::nullopt,
            std::nullopt, std::nullopt};
  if (D.has_value()) in.D = D->contiguous();
  if (z.has_value()) in.z = z->contiguous();
  if (delta_bias.has_value()) in.delta_bias = delta_bias->contiguous();

  params.batch = static_cast<int>(batch);
  params.channels = static_cast<int>(channels);
  params.length = static_cast<int>(length);
  params.d_state = static_cast<int>(d_state);
  params.groups = static_cast<int>(groups);
  params.group_size = static_cast<int>(channels / groups);
  params.warps_per_block = warps_per_block_for(params.group_size, max_warps);
  params.blocks_per_group = blocks_per_group_for(params.group_size, params.warps_per_block);
  TORCH_CHECK(static_cast<int64_t>(params.groups) * params.blocks_per_group < (int64_t{1} << 31),
              "vmamba_zoo CUDA selective scan: too many channel blocks");
  params.n_chunks = chunks_for(length);
  params.delta_softplus = delta_softplus;
  params.u = in.u.data_ptr();
  params.delta = in.delta.data_ptr();
  params.A = in.A.data_ptr<float>();
  params.B = in.B.data_ptr();
  params.C = in.C.data_ptr();
  params.D = in.D.has_value() ? in.D->data_ptr<float>() : nullptr;
  params.z = in.z.has_value() ? in.z->data_ptr() : nullptr;
  params.delta_bias = in.delta_bias.has_value() ? in.delta_bias->data_ptr<float>() : nullptr;
  return in;
}

// VMAMBA_ZOO_CUDA_BWD_WARPS (1..16) overrides the backward's channels per block, for tuning
int bwd_max_warps(int64_t d_state) {
  if (const char* env = std::getenv("VMAMBA_ZOO_CUDA_BWD_WARPS")) {
    const int warps = std::atoi(env);
    if (warps >= 1 && warps <= kMaxWarpsBwd) return warps;
  }
  return default_bwd_max_warps(static_cast<int>(d_state));
}

// The forward at d_state kLanesFwdStates (16) has two kernels: "chunks" (selective_scan_fwd_kernel.cuh, a warp along
// positions) and the lanes kernel (selective_scan_fwd_lanes_kernel.cuh, one-warp blocks of kLanesChannels lanes, each
// channel's 16 states on one lane, "lanes", or on a pair of lanes, "lane_pairs"). A lane walks its whole row alone, so
// the lanes kernel needs enough warps to hide that latency. nvidia-h200, length 3136 (ms for chunks / lanes /
// lane_pairs; benchmarks/cuda_scan_h200_2026-12-07_session27.txt, B/C rows padded, stores not yet swizzled):
//   batch 4: 0.20 / 0.45 / 0.27 (lane_pairs: 1.5 warps an SM), 8: 0.37 / 0.45 / 0.27 (2.9), 16: 0.73 / 0.47 / 0.38,
//   32: 1.39 / 0.68 / 0.56 (11.6), 64: 2.65 / 0.99 / 1.06 (23.3), 128: 5.14 / 1.87 / 2.07.
// "auto" (or unset) therefore runs lane_pairs from kLanesMinWarpsPerSm of its warps an SM up to the
// kLanesFwdBlocksPerSm that fit an SM at once; beyond one such wave the one-lane kernel, whose channels take fewer
// instructions in all (a pair takes the recurrence's setup and D u twice); the chunked kernel below.
// VMAMBA_ZOO_CUDA_FWD_KERNEL=chunks|lanes|lane_pairs forces one (the lanes kernels still only at d_state 16).
constexpr int kLanesMinWarpsPerSm = 2;

// lanes a channel for the lanes forward (1 or 2), or 0 for the chunked one
int lanes_forward(const SelectiveScanParams& params) {
  const char* env = std::getenv("VMAMBA_ZOO_CUDA_FWD_KERNEL");
  const std::string choice = env != nullptr ? env : "";
  TORCH_CHECK(choice.empty() || choice == "auto" || choice == "chunks" || choice == "lanes" || choice == "lane_pairs",
              kWhat, ": VMAMBA_ZOO_CUDA_FWD_KERNEL must be 'auto', 'chunks', 'lanes' or 'lane_pairs', got '", choice,
              "'");
  if (params.d_state != kLanesFwdStates || choice == "chunks") return 0;
  if (choice == "lanes") return 1;
  if (choice == "lane_pairs") return 2;
  const int64_t pair_warps =  // one-warp blocks of kLanesChannels / 2 channels
      static_cast<int64_t>(params.batch) * params.groups * blocks_per_group_for(params.group_size, kLanesChannels / 2);
  const int64_t sms = multiprocessor_count();
  if (pair_warps < kLanesMinWarpsPerSm * sms) return 0;
  return pair_warps <= kLanesFwdBlocksPerSm * sms ? 2 : 1;
}

// the lanes forward's one-warp blocks of kLanesChannels / lanes_per_channel channels
void use_lanes_blocks(SelectiveScanParams& params, int lanes_per_channel) {
  params.lanes_per_channel = lanes_per_channel;
  params.warps_per_block = 1;
  params.blocks_per_group = blocks_per_group_for(params.group_size, kLanesChannels / lanes_per_channel);
}

void check_launch(cudaError_t status, const char* kernel) { vmamba_zoo_cuda::check_launch(status, kWhat, kernel); }

// The forward, and with save_states the state at every chunk start as well, (batch, K*D, n_chunks, N) fp32, for
// a backward that then skips its recomputation (an empty tensor without save_states)
std::tuple<Tensor, Tensor> forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                   const Tensor& C, const std::optional<Tensor>& D, const std::optional<Tensor>& z,
                                   const std::optional<Tensor>& delta_bias, bool delta_softplus, bool fp32_output,
                                   bool save_states) {
  check_cuda(u, "u", u);
  const OnDeviceOf device_guard(u);
  SelectiveScanParams params;
  const Inputs in = prepare(params, kMaxWarpsFwd, u, delta, A, B, C, D, z, delta_bias, delta_softplus);
  const int lanes_per_channel = lanes_forward(params);
  const bool lanes = lanes_per_channel > 0;
  if (lanes) use_lanes_blocks(params, lanes_per_channel);
  Tensor out = at::empty(u.sizes(), u.options().dtype(fp32_output ? at::kFloat : u.scalar_type()));
  const std::vector<int64_t> states_shape =
      save_states ? std::vector<int64_t>{params.batch, params.channels, params.n_chunks, params.d_state}
                  : std::vector<int64_t>{0};
  Tensor states = at::empty(states_shape, u.options().dtype(at::kFloat));
  if (out.numel() == 0) return {out, states.zero_()};
  params.out = out.data_ptr();
  params.chunk_states = save_states ? states.data_ptr<float>() : nullptr;
  check_launch(lanes ? launch_selective_scan_fwd_lanes(params, scalar_kind(u), fp32_output, current_stream())
                     : launch_selective_scan_fwd(params, scalar_kind(u), fp32_output, current_stream()),
               lanes ? "forward (one channel a lane)" : "forward");
  return {out, states};
}

Tensor selective_scan_fwd(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                          const std::optional<Tensor>& D, const std::optional<Tensor>& z,
                          const std::optional<Tensor>& delta_bias, bool delta_softplus, bool fp32_output) {
  return std::get<0>(forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output, false));
}

std::tuple<Tensor, Tensor> selective_scan_fwd_states(const Tensor& u, const Tensor& delta, const Tensor& A,
                                                     const Tensor& B, const Tensor& C, const std::optional<Tensor>& D,
                                                     const std::optional<Tensor>& z,
                                                     const std::optional<Tensor>& delta_bias, bool delta_softplus,
                                                     bool fp32_output) {
  return forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output, true);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> selective_scan_bwd(
    const Tensor& dout, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
    const std::optional<Tensor>& D, const std::optional<Tensor>& z, const std::optional<Tensor>& delta_bias,
    bool delta_softplus, const std::optional<Tensor>& saved_states) {
  check_cuda(u, "u", u);
  const OnDeviceOf device_guard(u);
  SelectiveScanParams params;
  TORCH_CHECK(A.dim() == 2, "vmamba_zoo CUDA selective scan: A must be (K*D, d_state), got ", shape_string(A.sizes()));
  const Inputs in = prepare(params, bwd_max_warps(A.size(1)), u, delta, A, B, C, D, z, delta_bias, delta_softplus);
  check_cuda(dout, "dout", u);
  check_shape(dout, "dout", u.sizes().vec());
  TORCH_CHECK(dout.scalar_type() == at::kFloat || dout.scalar_type() == u.scalar_type(),
              "vmamba_zoo CUDA selective scan: dout must be float32 or u's dtype ", u.scalar_type(), ", got ",
              dout.scalar_type());
  const Tensor dout_c = dout.contiguous();

  const auto f32 = u.options().dtype(at::kFloat);
  const int64_t batch = params.batch, channels = params.channels, length = params.length;
  const int64_t d_state = params.d_state, groups = params.groups;
  if (saved_states.has_value()) {  // from selective_scan_fwd_states on these inputs
    check_cuda(*saved_states, "saved_states", u);
    check_shape(*saved_states, "saved_states", {batch, channels, int64_t{params.n_chunks}, d_state});
    TORCH_CHECK(saved_states->scalar_type() == at::kFloat,
                "vmamba_zoo CUDA selective scan: saved_states must be float32, got ", saved_states->scalar_type());
  }
  Tensor du = at::empty_like(in.u);
  Tensor ddelta = at::empty_like(in.delta);
  Tensor dz = in.z.has_value() ? at::empty_like(*in.z) : at::empty({0}, u.options());
  Tensor dA_part = at::empty({batch, channels, d_state}, f32);
  Tensor dB_part = at::empty({batch, groups, params.blocks_per_group, d_state, length}, f32);
  Tensor dC_part = at::empty_like(dB_part);
  Tensor dD_part = at::empty({in.D.has_value() ? batch : 0, channels}, f32);
  Tensor dbias_part = at::empty({in.delta_bias.has_value() ? batch : 0, channels}, f32);
  // the kernel needs no states for a single chunk
  const bool states_saved = saved_states.has_value() && params.n_chunks > 1;
  Tensor chunk_states = states_saved           ? saved_states->contiguous()
                        : params.n_chunks > 1 ? at::empty({batch, channels, params.n_chunks, d_state}, f32)
                                              : at::empty({0}, f32);

  if (u.numel() > 0) {
    params.dout = dout_c.data_ptr();
    params.du = du.data_ptr();
    params.ddelta = ddelta.data_ptr();
    params.dz = in.z.has_value() ? dz.data_ptr() : nullptr;
    params.dA_part = dA_part.data_ptr<float>();
    params.dB_part = dB_part.data_ptr<float>();
    params.dC_part = dC_part.data_ptr<float>();
    params.dD_part = D.has_value() ? dD_part.data_ptr<float>() : nullptr;
    params.dbias_part = delta_bias.has_value() ? dbias_part.data_ptr<float>() : nullptr;
    params.chunk_states = params.n_chunks > 1 ? chunk_states.data_ptr<float>() : nullptr;
    params.states_saved = states_saved;
    check_launch(launch_selective_scan_bwd(params, scalar_kind(u), dout.scalar_type() == at::kFloat,
                                           current_stream()),
                 "backward");
  } else {  // nothing to scan: every gradient is zero
    du.zero_();
    ddelta.zero_();
    dz.zero_();
    dA_part.zero_();
    dB_part.zero_();
    dC_part.zero_();
    dD_part.zero_();
    dbias_part.zero_();
  }

  // fixed-order sums of the partial results (torch's reductions do not use atomics: deterministic)
  auto sum_slices = [&](const Tensor& part, const Tensor& like) {
    Tensor full = params.blocks_per_group == 1 ? part.select(2, 0) : part.sum(2);
    return full.to(like.scalar_type()).contiguous();
  };
  Tensor dA = dA_part.sum(0);
  Tensor dB = sum_slices(dB_part, in.B);
  Tensor dC = sum_slices(dC_part, in.C);
  Tensor dD = D.has_value() ? dD_part.sum(0) : at::empty({0}, f32);
  Tensor ddelta_bias = delta_bias.has_value() ? dbias_part.sum(0) : at::empty({0}, f32);
  return {du, ddelta, dA, dB, dC, dD, dz, ddelta_bias};
}

// Whether the kernels can run on `device` (the build holds code for its architecture).
bool kernels_available(int64_t device) {
#ifndef VMAMBA_ZOO_CUDA_EMULATION
  const c10::cuda::CUDAGuard device_guard(static_cast<c10::DeviceIndex>(device));
#endif
  return selective_scan_kernels_available();
}

void define_ops(torch::Library& m) {
  m.def(
      "selective_scan_fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, bool delta_softplus, bool fp32_output) -> Tensor");
  // the forward and the states at its chunk starts, (batch, K*D, ceil(L / 256), N) float32, for the backward
  m.def(
      "selective_scan_fwd_states(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, bool delta_softplus, bool fp32_output) -> (Tensor, Tensor)");
  // gradients of (u, delta, A, B, C, D, z, delta_bias); absent optional inputs get an empty tensor.
  // saved_states: selective_scan_fwd_states's second output (else the backward recomputes those states)
  m.def(
      "selective_scan_bwd(Tensor dout, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, "
      "Tensor? z, Tensor? delta_bias, bool delta_softplus, Tensor? saved_states=None) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("kernels_available(int device) -> bool", &kernels_available);
}

void implement_ops(torch::Library& m) {
  m.impl("selective_scan_fwd", &selective_scan_fwd);
  m.impl("selective_scan_fwd_states", &selective_scan_fwd_states);
  m.impl("selective_scan_bwd", &selective_scan_bwd);
}

}  // namespace
}  // namespace vmamba_zoo_cuda

#ifndef VMAMBA_ZOO_CUDA_EMULATION
TORCH_LIBRARY(vmamba_zoo_cuda, m) { vmamba_zoo_cuda::define_ops(m); }
TORCH_LIBRARY_IMPL(vmamba_zoo_cuda, CUDA, m) { vmamba_zoo_cuda::implement_ops(m); }
#else
TORCH_LIBRARY(vmamba_zoo_cuda_emulated, m) { vmamba_zoo_cuda::define_ops(m); }
TORCH_LIBRARY_IMPL(vmamba_zoo_cuda_emulated, CPU, m) { vmamba_zoo_cuda::implement_ops(m); }
#endif
