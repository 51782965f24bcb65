"""The CUDA selective scan's forward at d_state 16: the lanes kernel (one channel a lane, and "lane_pairs": a pair of
lanes a channel, 8 states each) against the chunked one and against what "auto" picks (selective_scan.cpp,
lanes_forward: lane_pairs from 2 of its one-warp blocks an SM), in one process and one build, at the vanilla stage-0
shape (4 x 192 channels, length 3136) and batches 32 x each scale given; fp16 activations (bf16 with --bf16: until
session 29 its one-lane build kept about 100 bytes of stack where fp16's kept none), fp32 y, softplus. Prints
ms, % of a measured copy (bytes as benchmarks/cuda_scan_variants.py counts them), the one-lane kernel's warps an SM
(lane_pairs has twice as many), and how far the lanes kernels' outputs are from the chunked one's.

    PYTHONPATH=. python benchmarks/scan_lanes_kernels.py [--bf16] [batch scale ...]   (default 0.125 0.25 0.5 1 2 4)
"""
import argparse
import os
import sys

import torch

from vmamba_zoo.analysis.benchmark import SCAN_STAGE0_VANILLA, copy_bandwidth, cuda_time, scan_speed_inputs
from vmamba_zoo.ops import cuda_backend

BATCH, GROUPS, GROUP_SIZE, D_STATE, LENGTH = SCAN_STAGE0_VANILLA


def _rel(a, b) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scales", nargs="*", type=float, default=[0.125, 0.25, 0.5, 1.0, 2.0, 4.0],
                        help="batch = 32 x each scale")
    parser.add_argument("--bf16", action="store_true", help="bf16 activations instead of fp16")
    args = parser.parse_args()
    act_dtype, dtype_name = (torch.bfloat16, "bf16") if args.bf16 else (torch.float16, "fp16")
    scales = args.scales
    assert cuda_backend.load_extension(), cuda_backend.extension_status()
    fwd = torch.ops.vmamba_zoo_cuda.selective_scan_fwd
    copy = copy_bandwidth()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  copy {copy:.0f} GB/s  {sms} SMs")
    print(f"forward, d_state 16, {dtype_name} in, fp32 y: ms (% of copy)")
    kernels = ("chunks", "lanes", "lane_pairs", "auto")
    print(f"{'batch':>6}{'warps/SM':>10}" + "".join(f"{k:>18}" for k in kernels) + "   lanes, pairs vs chunks y")
    with torch.no_grad():
        for scale in scales:
            batch = max(1, round(BATCH * scale))
            u, delta, A, B, C, D, bias = [t.detach() for t in scan_speed_inputs(batch, GROUPS, GROUP_SIZE, D_STATE,
                                                                                 LENGTH, act_dtype)]
            nbytes = u.numel() * (2 + 2 + 4) + 2 * B.numel() * B.element_size()
            cells, ys = "", {}
            for kernel in kernels:
                os.environ["VMAMBA_ZOO_CUDA_FWD_KERNEL"] = kernel
                ys[kernel] = fwd(u, delta, A, B, C, D, None, bias, True, True)
                t = cuda_time(lambda: fwd(u, delta, A, B, C, D, None, bias, True, True), repeats=20)
                cells += f"{f'{t * 1e3:.3f} ({100 * nbytes / t / 1e9 / copy:.0f}%)':>18}"
            warps = batch * GROUPS * -(-GROUP_SIZE // 32)
            print(f"{batch:>6}{warps / sms:>10.1f}{cells}   {_rel(ys['lanes'], ys['chunks']):.1e}, "
                  f"{_rel(ys['lane_pairs'], ys['chunks']):.1e}", flush=True)
            del u, delta, A, B, C, D, bias, ys
    os.environ.pop("VMAMBA_ZOO_CUDA_FWD_KERNEL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
