// Selective scan forward at d_state 16 (the Mamba mixer's): one channel a lane.
//
// The chunked forward (selective_scan_fwd_kernel.cuh) lays a warp along positions, so every state row costs a warp
// scan of affine maps and a re-walk: about 175 warp instructions per state row and chunk, 11.5 an element at
// d_state 16, where a step itself is five (benchmarks/scan_issue_floors.md). Here a warp holds 32 channels of one
// group, a lane each, with the channel's 16 states in registers, and walks the sequence kItems positions (a span) at
// a time:
//   - every state of every channel is its own recurrence, h_n = exp(dt A_n) h_n + dt u B_n, so the steps are
//     independent across states and need no scan;
//   - B and C, the same for the whole warp, come in once a span: each lane loads and converts one (B or C, state)
//     row of the span into shared memory, and every lane reads them back as float4 broadcasts;
//   - a training forward stores the 16 states at every chunk start (kChunk positions), as the chunked kernel does.
// The special-function unit sets its floor: one exp2 per state and element.
// kLanesPerChannel 2 ("lane_pairs", auto's pick from 2 to 12 of its warps an SM): a pair of lanes holds a channel,
// 8 states each, and adds its two halves of y with one shuffle an element; the pair splits the softplus of dt. Each
// lane's walk has half the steps' work at twice the warps: the one-lane kernel's time stays near 0.45 ms from 0.7 to
// 2.9 warps an SM (a lane's walk is the latency; Nsight on nvidia-h200 at batch 32: 1.5 active warps a scheduler,
// issuing every 2 cycles), where the pairs took 0.27-0.38 ms, and 0.56 against 0.68 at 5.8
// (benchmarks/cuda_scan_h200_2026-12-07_session27.txt). Past one wave of the pairs' warps the one-lane kernel wins
// again (fewer instructions a channel).
#pragma once

#include "selective_scan_common.cuh"

namespace vmamba_zoo_cuda {
namespace {

// Where a lane's channel sits in the kernels with kLanesPerChannel lanes a channel (1 or 2): blocks of one warp laid
// out group by group (blockIdx.x = group * blocks_per_group + slice of 32 / kLanesPerChannel channels), blockIdx.y =
// batch; `part` is the lane's place among its channel's lanes. A spare lane (past its group's end) is not `valid`: its
// channel is clamped so parameter reads stay in bounds, and its row_length is 0, so fetches from its rows read nothing.
struct LaneChannel {
  int lane, part, batch, group, slice, channel, row_length;
  bool valid;
  int64_t channel_index, row;  // batch * channels + channel, and the first element of its (batch, K*D, L) rows
};

template <int kLanesPerChannel = 1>
__device__ __forceinline__ LaneChannel locate_lane_channel(const SelectiveScanParams& p) {
  LaneChannel c;
  c.lane = threadIdx.x & 31;
  c.part = c.lane % kLanesPerChannel;
  c.batch = blockIdx.y;
  c.group = blockIdx.x / p.blocks_per_group;
  c.slice = blockIdx.x % p.blocks_per_group;
  const int d = c.slice * (32 / kLanesPerChannel) + c.lane / kLanesPerChannel;
  c.valid = d < p.group_size;
  c.channel = c.group * p.group_size + (c.valid ? d : p.group_size - 1);
  c.row_length = c.valid ? p.length : 0;
  c.channel_index = static_cast<int64_t>(c.batch) * p.channels + c.channel;
  c.row = c.channel_index * p.length;
  return c;
}

// row(std::bool_constant<kHasZ>{}, std::bool_constant<kWholeSpans>{}) for the launch: whether it has a z gate, and
// whether whole_aligned_spans holds for the given rows; the same branch in every block (it reads only the launch's
// pointers).
template <typename Row, typename... Ptrs>
__device__ __forceinline__ void by_gate_and_spans(const SelectiveScanParams& p, Row row, Ptrs... rows) {
  const bool whole = whole_aligned_spans(p.length, p.z, rows...);
  if (p.z != nullptr) {
    if (whole) row(std::true_type{}, std::true_type{});
    else row(std::true_type{}, std::false_type{});
  } else {
    if (whole) row(std::false_type{}, std::true_type{});
    else row(std::false_type{}, std::false_type{});
  }
}

// B and C of one span in shared memory: [B or C][state][kItems] floats, 4 floats of padding after every 8 rows. A
// pair's two lanes read states n and n + 8 at once; unpadded those sit 256 bytes apart, in the same banks, and every
// read took two wavefronts (Nsight, nvidia-h200, lane_pairs at the vanilla stage-0 shape, batch 32: L1 at 97% of
// its peak, short-scoreboard waits the first stall). 16 bytes more put them in other banks.
constexpr int kBcRowsPerPad = 8, kBcPad = 4;
__host__ __device__ constexpr int bc_row_offset(int row) { return row * kItems + (row / kBcRowsPerPad) * kBcPad; }
constexpr int kLanesFwdSmemFloats = bc_row_offset(2 * kLanesFwdStates);
// ... and rows 4-7 of every 8 hold their second half of the span first. A 16-byte store goes out 8 lanes (8 rows, 32
// bytes apart) at a time; in row order each store's 8 halves hit 4 bank slots twice (Nsight, nvidia-h200, lane_pairs
// at batch 32: 8.4 wavefronts a store where 4 would do). Swapped, each store fills 8 distinct slots, and the readers,
// whose states are known at compile time, swap back for free. (nvidia-h100, session 28: lane_pairs 0.539 ms against
// 0.540 unswapped, the one-lane kernel 0.631 against 0.644; benchmarks/cuda_scan_h100_2026-12-07_session28.txt)
__host__ __device__ constexpr int bc_halves_swapped(int row) { return (row / 4) % 2; }
static_assert(kItems == 8, "a row is two float4 halves");

// A pair's dt = softplus(delta + bias) over the span: each lane of the pair takes half the items and the two swap
// them, 4 shuffles a lane where the other half's softplus would take about 70 instructions (8 of them on the
// special-function unit, which the recurrence's exp2 keeps busy)
__device__ __forceinline__ void softplus_by_halves(float (&dt)[kItems], float bias, int part) {
  constexpr int kHalf = kItems / 2;
#pragma unroll
  for (int i = 0; i < kHalf; ++i) {
    const float mine = fast_softplus((part == 0 ? dt[i] : dt[kHalf + i]) + bias);
    const float theirs = __shfl_xor_sync(kFullMask, mine, 1);
    dt[i] = part == 0 ? mine : theirs;
    dt[kHalf + i] = part == 0 ? theirs : mine;
  }
}

template <typename input_t, typename output_t, bool kHasZ, bool kWholeSpans, int kLanesPerChannel>
__device__ __forceinline__ void selective_scan_fwd_lanes_row(const SelectiveScanParams& p, float* bc) {
  constexpr int N = kLanesFwdStates;
  constexpr int kOwnStates = N / kLanesPerChannel;  // states [part * kOwnStates, (part + 1) * kOwnStates) of the row
  static_assert(2 * N == 32, "each lane fills one (B or C, state) row of a span");
  static_assert(kLanesPerChannel == 1 || kLanesPerChannel == 2, "a channel's lanes are a lane or a pair");
  // a spare lane reads no row of its own, writes nothing, fills B/C
  const LaneChannel c = locate_lane_channel<kLanesPerChannel>(p);
  const int lane = c.lane, channel = c.channel, length = p.length, row_length = c.row_length;
  const int first_state = c.part * kOwnStates;
  const bool valid = c.valid;
  const int64_t channel_index = c.channel_index, row = c.row;
  const input_t* u_row = static_cast<const input_t*>(p.u) + row;
  const input_t* delta_row = static_cast<const input_t*>(p.delta) + row;
  const input_t* z_row = kHasZ ? static_cast<const input_t*>(p.z) + row : nullptr;
  output_t* out_row = static_cast<output_t*>(p.out) + row;
  // the (B or C, state) row this lane brings into shared memory: lanes 0-15 B's states, 16-31 C's
  const int64_t bc_row = ((static_cast<int64_t>(c.batch) * p.groups + c.group) * N + (lane % N)) * length;
  const input_t* fill_row = static_cast<const input_t*>(lane < N ? p.B : p.C) + bc_row;
  // row lane ([lane / N][lane % N]), its halves where bc_halves_swapped puts them
  float4* const fill_halves = reinterpret_cast<float4*>(bc + bc_row_offset(lane));
  float4* const fill_first_half = fill_halves + bc_halves_swapped(lane);
  float4* const fill_second_half = fill_halves + (1 - bc_halves_swapped(lane));
  // this lane's states' B and C rows of the span; first_state is a multiple of kBcRowsPerPad, so state first_state + n
  // sits bc_row_offset(n) past the first
  static_assert(kOwnStates % kBcRowsPerPad == 0, "a lane's states start a padded group of rows");
  const float* B_span = bc + bc_row_offset(first_state);
  const float* C_span = bc + bc_row_offset(N + first_state);

  float A_log2e[kOwnStates], h[kOwnStates];
#pragma unroll
  for (int n = 0; n < kOwnStates; ++n) {
    A_log2e[n] = p.A[static_cast<int64_t>(channel) * N + first_state + n] * kLog2e;
    h[n] = 0.f;
  }
  // D u once a channel: in the first lane's half of y
  const float D_value = p.D != nullptr && c.part == 0 ? p.D[channel] : 0.f;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[channel] : 0.f;
  float* const states = p.chunk_states != nullptr && valid ? p.chunk_states + channel_index * p.n_chunks * N : nullptr;

  const int n_spans = (length + kItems - 1) / kItems;
  RawItems<input_t> u_next = fetch_items<kWholeSpans>(u_row, 0, row_length);
  RawItems<input_t> delta_next = fetch_items<kWholeSpans>(delta_row, 0, row_length);
  RawItems<input_t> z_next;
  const int z_length = c.part == 0 ? row_length : 0;  // the gate is applied by the lane that stores y
  if (kHasZ) z_next = fetch_items<kWholeSpans>(z_row, 0, z_length);
  RawItems<input_t> fill_next = fetch_items<kWholeSpans>(fill_row, 0, length);
  for (int span = 0; span < n_spans; ++span) {
    const int pos0 = span * kItems;
    float u[kItems], dt[kItems], y[kItems], fill[kItems];
    to_floats(u_next, u);
    to_floats(delta_next, dt);
    to_floats(fill_next, fill);
    RawItems<input_t> z_raw;
    if (kHasZ) z_raw = z_next;
    u_next = fetch_items<kWholeSpans>(u_row, pos0 + kItems, row_length);
    delta_next = fetch_items<kWholeSpans>(delta_row, pos0 + kItems, row_length);
    if (kHasZ) z_next = fetch_items<kWholeSpans>(z_row, pos0 + kItems, z_length);
    fill_next = fetch_items<kWholeSpans>(fill_row, pos0 + kItems, length);

    __syncwarp();  // every lane has read the previous span's B/C
    fill_first_half[0] = make_float4(fill[0], fill[1], fill[2], fill[3]);
    fill_second_half[0] = make_float4(fill[4], fill[5], fill[6], fill[7]);
    __syncwarp();

    if (states != nullptr && pos0 % kChunk == 0) {  // the state at every chunk start (0 at the first)
      float4* dst = reinterpret_cast<float4*>(states + static_cast<int64_t>(pos0 / kChunk) * N + first_state);
#pragma unroll
      for (int n = 0; n < kOwnStates; n += 4) dst[n / 4] = make_float4(h[n], h[n + 1], h[n + 2], h[n + 3]);
    }
    if (kLanesPerChannel == 2 && p.delta_softplus) {
      softplus_by_halves(dt, bias, c.part);
      zero_past_end(dt, pos0, length);
    } else {
      float unused_slope[kItems];
      delta_to_dt(dt, unused_slope, bias, p.delta_softplus, pos0, length);
    }
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      y[i] = D_value * u[i];
      u[i] *= dt[i];  // from here on dt*u, the drive's common factor
    }
#pragma unroll
    for (int n = 0; n < kOwnStates; ++n) {
      // rows first_state + n and N + first_state + n: both swapped as n is (first_state is a multiple of 8)
      const int swapped = bc_halves_swapped(n);
      const float4* B_row = reinterpret_cast<const float4*>(B_span + bc_row_offset(n));
      const float4* C_row = reinterpret_cast<const float4*>(C_span + bc_row_offset(n));
      const float4 B_lo = B_row[swapped], B_hi = B_row[1 - swapped], C_lo = C_row[swapped], C_hi = C_row[1 - swapped];
      const float B_vals[kItems] = {B_lo.x, B_lo.y, B_lo.z, B_lo.w, B_hi.x, B_hi.y, B_hi.z, B_hi.w};
      const float C_vals[kItems] = {C_lo.x, C_lo.y, C_lo.z, C_lo.w, C_hi.x, C_hi.y, C_hi.z, C_hi.w};
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        h[n] = fmaf(fast_exp2(dt[i] * A_log2e[n]), h[n], u[i] * B_vals[i]);
        y[i] = fmaf(C_vals[i], h[n], y[i]);
      }
    }
    if (kLanesPerChannel == 2) {
#pragma unroll
      for (int i = 0; i < kItems; ++i) y[i] += __shfl_xor_sync(kFullMask, y[i], 1);  // the pair's two halves
    }
    if (kHasZ) {
      float z_vals[kItems];
      to_floats(z_raw, z_vals);
#pragma unroll
      for (int i = 0; i < kItems; ++i) y[i] *= z_vals[i] * sigmoid(z_vals[i]);
    }
    if (valid && c.part == 0) store_items<kWholeSpans>(out_row, pos0, length, y);
  }
}

template <typename input_t, typename output_t, int kLanesPerChannel>
__global__ void __launch_bounds__(32, kLanesFwdBlocksPerSm)
selective_scan_fwd_lanes_kernel(const SelectiveScanParams p) {
  float* bc = dynamic_shared_memory();
  by_gate_and_spans(
      p,
      [&](auto has_z, auto whole) {
        selective_scan_fwd_lanes_row<input_t, output_t, decltype(has_z)::value, decltype(whole)::value,
                                     kLanesPerChannel>(p, bc);
      },
      p.u, p.delta, p.out, p.B, p.C);
}

}  // namespace

#ifdef __CUDACC__
// A launch of the lanes kernel: blocks of one warp, grid (groups * slices, batch). The CPU emulation
// (tests/cuda_emulation/emulate.cpp) defines its own before including this header.
template <typename Kernel>
cudaError_t launch_one_warp_blocks(Kernel kernel, const SelectiveScanParams& p, int shared_floats,
                                   cudaStream_t stream) {
  kernel<<<dim3(p.groups * p.blocks_per_group, p.batch), 32, sizeof(float) * shared_floats, stream>>>(p);
  return cudaGetLastError();
}
#endif

// The launcher (selective_scan.h), here so the CPU emulation runs it too: one translation unit of each library
// includes this header (selective_scan_fwd.cu; tests/cuda_emulation/emulate.cpp)
cudaError_t launch_selective_scan_fwd_lanes(const SelectiveScanParams& params, ScalarKind input_kind, bool fp32_out,
                                            cudaStream_t stream) {
  const bool pairs = params.lanes_per_channel == 2;
  return launch_by_dtype(input_kind, fp32_out, [&](auto in, auto out) {
    using input_t = typename decltype(in)::type;
    using output_t = typename decltype(out)::type;
    return launch_one_warp_blocks(pairs ? selective_scan_fwd_lanes_kernel<input_t, output_t, 2>
                                        : selective_scan_fwd_lanes_kernel<input_t, output_t, 1>,
                                  params, kLanesFwdSmemFloats, stream);
  });
}

}  // namespace vmamba_zoo_cuda
