"""The CUDA selective-scan backward's two kernels side by side at VMamba-T's stage-0 shape (d_state 1, batch 128,
fp16 activations, fp32 dout, softplus), both from the training forward's saved states: VMAMBA_ZOO_CUDA_BWD_KERNEL
chunks vs lanes, ms and % of a measured copy, and how far apart their gradients are. One process, one build.

    PYTHONPATH=. python benchmarks/scan_bwd_kernels.py [batch]
"""
import os
import sys

import torch

from vmamba_zoo.analysis.benchmark import copy_bandwidth, cuda_time, scan_speed_inputs
from vmamba_zoo.ops import cuda_backend


def main() -> int:
    assert cuda_backend.load_extension(), cuda_backend.extension_status()
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    ops = torch.ops.vmamba_zoo_cuda
    u, delta, A, B, C, D, bias = [t.detach() for t in scan_speed_inputs(batch, 4, 96, 1, 3136)]
    dout = torch.randn(u.shape, device="cuda")
    copy = copy_bandwidth()
    bwd_bytes = u.numel() * (4 + 2 + 2 + 2 + 2) + 4 * B.numel() * B.element_size()  # as cuda_scan_variants.py
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  batch {batch}  copy {copy:.0f} GB/s")
    with torch.no_grad():
        _, states = ops.selective_scan_fwd_states(u, delta, A, B, C, D, None, bias, True, True)
        grads = {}
        for kernel in ("chunks", "lanes"):
            os.environ["VMAMBA_ZOO_CUDA_BWD_KERNEL"] = kernel
            grads[kernel] = ops.selective_scan_bwd(dout, u, delta, A, B, C, D, None, bias, True, states)
            t = cuda_time(lambda: ops.selective_scan_bwd(dout, u, delta, A, B, C, D, None, bias, True, states),
                          repeats=20)
            print(f"{kernel:<8}{t * 1e3:8.3f} ms  {100 * bwd_bytes / t / 1e9 / copy:5.1f}% of copy", flush=True)
    names = ("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias")
    for name, a, b in zip(names, grads["lanes"], grads["chunks"]):
        if b.numel():
            rel = ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()
            print(f"  lanes vs chunks {name}: {rel:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
