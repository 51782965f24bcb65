"""The CUDA selective scan's lanes kernels (one channel a lane) against the chunked ones, in one process and one
build: the backward at VMamba-T's stage-0 shape (d_state 1, batch 128) from the training forward's saved states, and
the forward at the vanilla stage-0 shape (d_state 16, batch 32); fp16 activations, fp32 dout and y, softplus.
Prints ms and % of a measured copy (bytes as benchmarks/cuda_scan_variants.py counts them), and how far apart the two
kernels' results are.

    PYTHONPATH=. python benchmarks/scan_lanes_kernels.py [batch scale, default 1]
"""
import os
import sys

import torch

from vmamba_zoo.analysis.benchmark import copy_bandwidth, cuda_time, scan_speed_inputs
from vmamba_zoo.ops import cuda_backend


def _rel(a, b) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


def _time(label, fn, nbytes, copy) -> dict:
    results = {}
    for kernel in ("chunks", "lanes"):
        os.environ["VMAMBA_ZOO_CUDA_FWD_KERNEL"] = os.environ["VMAMBA_ZOO_CUDA_BWD_KERNEL"] = kernel
        results[kernel] = fn()
        t = cuda_time(fn, repeats=20)
        print(f"{label:<34}{kernel:<8}{t * 1e3:8.3f} ms  {100 * nbytes / t / 1e9 / copy:5.1f}% of copy", flush=True)
    return results


def main() -> int:
    assert cuda_backend.load_extension(), cuda_backend.extension_status()
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    ops = torch.ops.vmamba_zoo_cuda
    copy = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  copy {copy:.0f} GB/s")
    with torch.no_grad():
        batch = max(1, round(128 * scale))
        u, delta, A, B, C, D, bias = [t.detach() for t in scan_speed_inputs(batch, 4, 96, 1, 3136)]
        dout = torch.randn(u.shape, device="cuda")
        _, states = ops.selective_scan_fwd_states(u, delta, A, B, C, D, None, bias, True, True)
        nbytes = u.numel() * (4 + 2 + 2 + 2 + 2) + 4 * B.numel() * B.element_size()
        grads = _time(f"backward, d_state 1, batch {batch}",
                      lambda: ops.selective_scan_bwd(dout, u, delta, A, B, C, D, None, bias, True, states),
                      nbytes, copy)
        for name, a, b in zip(("du", "ddelta", "dA", "dB", "dC", "dD"), grads["lanes"], grads["chunks"]):
            print(f"  lanes vs chunks {name}: {_rel(a, b):.1e}")
        del u, delta, A, B, C, D, bias, dout, states, grads
        batch = max(1, round(32 * scale))
        u, delta, A, B, C, D, bias = [t.detach() for t in scan_speed_inputs(batch, 4, 192, 16, 3136)]
        nbytes = u.numel() * (2 + 2 + 4) + 2 * B.numel() * B.element_size()
        ys = _time(f"forward, d_state 16, batch {batch}",
                   lambda: ops.selective_scan_fwd(u, delta, A, B, C, D, None, bias, True, True), nbytes, copy)
        print(f"  lanes vs chunks y: {_rel(ys['lanes'], ys['chunks']):.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
