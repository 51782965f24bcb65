// Runs the selective-scan CUDA kernels on the CPU (see cuda_runtime.h here). Provides
//  - the launchers selective_scan.cpp calls (launch_selective_scan_fwd/bwd, selective_scan_kernels_available; the
//    lanes kernels' launchers come with their headers),
//    for the emulation build of the whole extension (torch.ops.vmamba_zoo_cuda_emulated, CPU tensors);
//  - a plain C interface over the same launchers (emu_*), loaded with ctypes by the kernel tests.
// The grid's blocks run one after another, the threads of a block all at once.
#include <thread>
#include <vector>

#include "cuda_runtime.h"  // the emulation, not the toolkit's header
#include "selective_scan.h"

namespace vmamba_zoo_cuda {
namespace {

template <typename Kernel, typename Params>
void run_blocks(Kernel kernel, const Params& p, unsigned grid_x, unsigned grid_y, unsigned threads,
                size_t shared_floats, unsigned grid_z = 1) {
  for (unsigned bz = 0; bz < grid_z; ++bz) {
  for (unsigned by = 0; by < grid_y; ++by) {
    for (unsigned bx = 0; bx < grid_x; ++bx) {
      emulation::Block block(static_cast<int>(threads), shared_floats);
      std::vector<std::thread> workers;
      workers.reserve(threads);
      for (unsigned t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
          threadIdx = dim3{t, 0, 0};
          blockIdx = dim3{bx, by, bz};
          blockDim = dim3{threads, 1, 1};
          emulation::current_block = &block;
          kernel(p);
        });
      }
      for (auto& worker : workers) worker.join();
    }
  }
  }
}

}  // namespace

// as selective_scan_fwd_lanes_kernel.cuh's CUDA launch: one-warp blocks, grid (groups * slices, batch); before the
// kernel headers, whose lanes launcher calls it
template <typename Kernel>
cudaError_t launch_one_warp_blocks(Kernel kernel, const SelectiveScanParams& p, int shared_floats, cudaStream_t) {
  run_blocks(kernel, p, static_cast<unsigned>(p.groups * p.blocks_per_group), static_cast<unsigned>(p.batch), 32,
             static_cast<size_t>(shared_floats));
  return cudaSuccess;
}

}  // namespace vmamba_zoo_cuda

#include "selective_scan_bwd_kernel.cuh"
#include "selective_scan_fwd_kernel.cuh"
#include "selective_scan_fwd_lanes_kernel.cuh"
#include "layer_norm_kernel.cuh"
#include "ss2d_kernel.cuh"

namespace vmamba_zoo_cuda {
namespace {

template <typename Kernel>
void run_grid(Kernel kernel, const SelectiveScanParams& p, size_t shared_floats) {
  run_blocks(kernel, p, static_cast<unsigned>(p.groups * p.blocks_per_group), static_cast<unsigned>(p.batch),
             static_cast<unsigned>(p.warps_per_block) * 32, shared_floats);
}

// the fused SS2D kernels: grid (tiles, batch), one warp per segment (as ss2d.cu)
struct SS2DRunner {
  const SS2DParams& p;
  bool backward;
  bool from_states = false;

  template <typename T, int R>
  cudaError_t run() const {
    const unsigned threads = static_cast<unsigned>(p.segments) * 32;
    if (from_states) {  // grid (tiles, batch, K), one warp a block (as ss2d.cu)
      run_blocks(ss2d_bwd_states_kernel<T, 1, R>, p, p.tiles, p.batch, 32, ss2d_bwd_states_floats<R, 1>(),
                 p.directions);
    } else if (!backward && p.by_direction) {
      run_blocks(ss2d_fwd_directions_kernel<T, 1, R>, p, p.tiles, p.batch, 32, SS2DLayout<R, 1>::kStage,
                 p.directions);
    } else if (backward) {
      run_blocks(ss2d_bwd_kernel<T, 1, R>, p, p.tiles, p.batch, threads, SS2DLayout<R, 1>::bwd_floats(p.segments));
    } else {
      run_blocks(ss2d_fwd_kernel<T, 1, R>, p, p.tiles, p.batch, threads,
                 SS2DFwdLayout<R, 1>::fwd_floats(p.segments));
    }
    return cudaSuccess;
  }
};

}  // namespace

// as selective_scan_fwd.cu / selective_scan_bwd.cu: d_state 1 runs the kernels' single-state builds
cudaError_t launch_selective_scan_fwd(const SelectiveScanParams& p, ScalarKind input_kind, bool fp32_out,
                                      cudaStream_t) {
  return launch_by_dtype(input_kind, fp32_out, [&](auto in, auto out) {
    using I = typename decltype(in)::type;
    using O = typename decltype(out)::type;
    if (fwd_single_state(p)) run_grid(selective_scan_fwd_kernel<I, O, true>, p, 0);  // no shared memory
    else run_grid(selective_scan_fwd_kernel<I, O>, p, fwd_smem_floats(p));
    return cudaSuccess;
  });
}

cudaError_t launch_selective_scan_bwd(const SelectiveScanParams& p, ScalarKind input_kind, bool fp32_dout,
                                      cudaStream_t) {
  const size_t shared = bwd_smem_floats(p);
  return launch_by_dtype(input_kind, fp32_dout, [&](auto in, auto dout) {
    using I = typename decltype(in)::type;
    using O = typename decltype(dout)::type;
    if (bwd_single_state(p)) run_grid(selective_scan_bwd_kernel<I, O, true>, p, shared);
    else run_grid(selective_scan_bwd_kernel<I, O>, p, shared);
    return cudaSuccess;
  });
}

cudaError_t launch_ss2d_fwd(const SS2DParams& p, ScalarKind kind, cudaStream_t) {
  return dispatch_ss2d(p, kind, SS2DRunner{p, false});
}

cudaError_t launch_ss2d_bwd(const SS2DParams& p, ScalarKind kind, cudaStream_t) {
  return dispatch_ss2d(p, kind, SS2DRunner{p, true});
}

cudaError_t launch_ss2d_bwd_states(const SS2DParams& p, ScalarKind kind, cudaStream_t) {
  return dispatch_ss2d(p, kind, SS2DRunner{p, true, true});
}

// as layer_norm.cu: one warp a row, kLayerNormWarps rows a block
struct LayerNormRunner {
  const LayerNormParams& p;
  template <typename In, typename Out>
  cudaError_t run() const {
    const unsigned blocks = static_cast<unsigned>((p.rows + kLayerNormWarps - 1) / kLayerNormWarps);
    run_blocks(layer_norm_fwd_kernel<In, Out>, p, blocks, 1, kLayerNormWarps * 32, 0);
    return cudaSuccess;
  }
};

cudaError_t launch_layer_norm_fwd(const LayerNormParams& p, ScalarKind input_kind, ScalarKind output_kind,
                                  cudaStream_t) {
  return dispatch_layer_norm(input_kind, output_kind, LayerNormRunner{p});
}

bool selective_scan_kernels_available() { return true; }

}  // namespace vmamba_zoo_cuda

namespace {

using vmamba_zoo_cuda::SelectiveScanParams;

void fill_sizes(SelectiveScanParams& p, int max_warps, int batch, int channels, int length, int d_state, int groups,
                int softplus) {
  p.batch = batch;
  p.channels = channels;
  p.length = length;
  p.d_state = d_state;
  p.groups = groups;
  p.group_size = channels / groups;
  p.warps_per_block = vmamba_zoo_cuda::warps_per_block_for(p.group_size, max_warps);
  p.blocks_per_group = vmamba_zoo_cuda::blocks_per_group_for(p.group_size, p.warps_per_block);
  p.n_chunks = vmamba_zoo_cuda::chunks_for(length);
  p.delta_softplus = softplus != 0;
}

void fill_inputs(SelectiveScanParams& p, const void* u, const void* delta, const float* A, const void* B,
                 const void* C, const float* D, const void* z, const float* delta_bias) {
  p.u = u;
  p.delta = delta;
  p.A = A;
  p.B = B;
  p.C = C;
  p.D = D;
  p.z = z;
  p.delta_bias = delta_bias;
}

}  // namespace

extern "C" {

// sizes the host code picks (without VMAMBA_ZOO_CUDA_BWD_WARPS): the backward's blocks per group, chunks
int emu_bwd_blocks_per_group(int group_size, int d_state) {
  const int warps = vmamba_zoo_cuda::warps_per_block_for(group_size, vmamba_zoo_cuda::default_bwd_max_warps(d_state));
  return vmamba_zoo_cuda::blocks_per_group_for(group_size, warps);
}

int emu_chunks(int length) { return vmamba_zoo_cuda::chunks_for(length); }

// kind: 0 float32, 1 float16, 2 bfloat16 (u, delta, B, C, z, out when !fp32_out)
int emu_selective_scan_fwd(int kind, int fp32_out, int batch, int channels, int length, int d_state, int groups,
                           int softplus, const void* u, const void* delta, const float* A, const void* B,
                           const void* C, const float* D, const void* z, const float* delta_bias, void* out) {
  SelectiveScanParams p;
  fill_sizes(p, vmamba_zoo_cuda::kMaxWarpsFwd, batch, channels, length, d_state, groups, softplus);
  fill_inputs(p, u, delta, A, B, C, D, z, delta_bias);
  p.out = out;
  return vmamba_zoo_cuda::launch_selective_scan_fwd(p, static_cast<vmamba_zoo_cuda::ScalarKind>(kind), fp32_out != 0,
                                                    nullptr);
}

int emu_selective_scan_bwd(int kind, int fp32_dout, int batch, int channels, int length, int d_state, int groups,
                           int softplus, const void* dout, const void* u, const void* delta, const float* A,
                           const void* B, const void* C, const float* D, const void* z, const float* delta_bias,
                           void* du, void* ddelta, void* dz, float* dA_part, float* dB_part, float* dC_part,
                           float* dD_part, float* dbias_part, float* chunk_states) {
  SelectiveScanParams p;
  fill_sizes(p, vmamba_zoo_cuda::default_bwd_max_warps(d_state), batch, channels, length, d_state, groups, softplus);
  fill_inputs(p, u, delta, A, B, C, D, z, delta_bias);
  p.dout = dout;
  p.du = du;
  p.ddelta = ddelta;
  p.dz = dz;
  p.dA_part = dA_part;
  p.dB_part = dB_part;
  p.dC_part = dC_part;
  p.dD_part = dD_part;
  p.dbias_part = dbias_part;
  p.chunk_states = p.n_chunks > 1 ? chunk_states : nullptr;
  return vmamba_zoo_cuda::launch_selective_scan_bwd(p, static_cast<vmamba_zoo_cuda::ScalarKind>(kind), fp32_dout != 0,
                                                    nullptr);
}

}  // extern "C"
