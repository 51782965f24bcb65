"""Selective-scan kernels against the memory floor, and model throughput per scan backend, on one GPU
(session 1; tools/benchmark.py is the current benchmark).

PYTHONPATH=. python benchmarks/scan_kernels.py   (prints tables; commit the output with device + date)
"""
import timm
import torch

import vmamba_zoo  # noqa: F401
from vmamba_zoo.analysis.benchmark import (SCAN_STAGE0_T, SCAN_STAGE0_VANILLA, copy_bandwidth, cuda_time,
                                           scan_speed_inputs)
from vmamba_zoo.analysis.throughput import measure_throughput
from vmamba_zoo.ops import available_backends, selective_scan


def scan_case(batch, groups, group_size, d_state, length, act_dtype=torch.float16):
    return scan_speed_inputs(batch, groups, group_size, d_state, length, act_dtype)


def bench_scan(copy_gbs):
    cases = {"VMamba-T stage0": SCAN_STAGE0_T, "VMamba-T stage2": (128, 4, 384, 1, 196),
             "VMamba-S stage0": (128, 4, 192, 1, 3136), "vanilla-T stage0 (N=16)": SCAN_STAGE0_VANILLA}
    print(f"\nselective scan, fp16 activations, fp32 output; copy bandwidth {copy_gbs:.0f} GB/s")
    print(f"{'case':<26}{'backend':<11}{'fwd ms':>9}{'fwd GB/s':>10}{'% copy':>8}{'bwd ms':>9}{'bwd GB/s':>10}{'% copy':>8}")
    for name, shape in cases.items():
        u, delta, A, B, C, D, bias = scan_case(*shape)
        elems = u.numel()
        # floor: fwd reads u, delta (2 B each) + B, C; writes y (4 B). bwd reads dout (4), u, delta; writes du, ddelta.
        bc_bytes = 2 * B.numel() * B.element_size()
        fwd_bytes = elems * (2 + 2 + 4) + bc_bytes
        bwd_bytes = elems * (4 + 2 + 2 + 2 + 2) + 2 * bc_bytes
        for backend in available_backends("selective_scan_fwd"):
            def fwd():
                return selective_scan(u, delta, A, B, C, D, None, bias, True, True, backend)
            y = fwd()
            g = torch.randn_like(y)

            def bwd():
                torch.autograd.grad(y, (u, delta, A, B, C, D, bias), g, retain_graph=True)
            try:
                tf, tb = cuda_time(fwd), cuda_time(bwd)
            except torch.OutOfMemoryError:
                print(f"{name:<26}{backend:<11}  out of memory")
                continue
            gf, gb = fwd_bytes / tf / 1e9, bwd_bytes / tb / 1e9
            print(f"{name:<26}{backend:<11}{tf * 1e3:>9.2f}{gf:>10.0f}{100 * gf / copy_gbs:>7.0f}%"
                  f"{tb * 1e3:>9.2f}{gb:>10.0f}{100 * gb / copy_gbs:>7.0f}%")
            del y
            torch.cuda.empty_cache()


def bench_models(batch=128):
    import warnings
    warnings.simplefilter("ignore", RuntimeWarning)  # "backend 'triton' has no cross_scan": expected here
    print(f"\nmodels: batch {batch}, 224x224, fp16 autocast (train = fwd + bwd + SGD step)")
    print(f"{'model':<34}{'infer img/s':>12}{'train img/s':>12}{'train GiB':>10}")
    # scan_backend picks the SS2D op's backend: "triton" = the fused kernel; "reference" = the composition
    # of cross-scan, selective scan (itself on its best backend, Triton) and cross-merge, i.e. unfused
    labels = {"triton": "fused", "reference": "unfused"}
    runs = [(name, dict(scan_backend=b)) for name in ("vmamba_tiny", "vmamba_small", "vmamba_base")
            for b in available_backends("ss2d_scan_fwd")]
    runs += [(name, {}) for name in ("swin_tiny_patch4_window7_224", "convnext_tiny", "swin_small_patch4_window7_224",
                                     "swin_base_patch4_window7_224")]
    for name, kwargs in runs:
        label = name + (f" [{labels.get(kwargs['scan_backend'], kwargs['scan_backend'])}]" if kwargs else "")
        infer = measure_throughput(timm.create_model(name, **kwargs), batch, 224, "fp16", "cuda", False, 3, 10)
        train = measure_throughput(timm.create_model(name, **kwargs), batch, 224, "fp16", "cuda", True, 3, 10)
        print(f"{label:<34}{infer['img_per_s']:>12.0f}{train['img_per_s']:>12.0f}"
              f"{train['peak_memory'] / 2 ** 30:>10.1f}")
        torch.cuda.empty_cache()


def tune(copy_gbs):
    """Sweep the Triton tile (rows = BLOCK_D*N, BLOCK_L, num_warps) on two scan shapes."""
    from vmamba_zoo.ops.kernels import triton_selective_scan as kern
    default = dict(kern.TILE)
    cases = {"T stage0 N=1": SCAN_STAGE0_T, "vanilla stage0 N=16": SCAN_STAGE0_VANILLA}
    print(f"\ntile sweep (fwd / bwd ms), copy bandwidth {copy_gbs:.0f} GB/s")
    for rows in (16, 32, 64, 128):
        for block_l in (32, 64, 128, 256):
            for warps in (2, 4, 8):
                kern.TILE.update(rows=rows, block_l=block_l, num_warps=warps, num_warps_large_state=warps)
                line = []
                for name, shape in cases.items():
                    u, delta, A, B, C, D, bias = scan_case(*shape)
                    y = selective_scan(u, delta, A, B, C, D, None, bias, True, True, "triton")
                    g = torch.randn_like(y)
                    tf = cuda_time(lambda: selective_scan(u, delta, A, B, C, D, None, bias, True, True, "triton"), 5, 2)
                    tb = cuda_time(lambda: torch.autograd.grad(y, (u, delta, A, B, C, D, bias), g, retain_graph=True), 5, 2)
                    line.append(f"{name}: {tf * 1e3:6.2f} / {tb * 1e3:6.2f}")
                print(f"rows {rows:>3} block_l {block_l:>3} warps {warps}  " + "   ".join(line), flush=True)
    kern.TILE.update(default)


if __name__ == "__main__":
    import sys
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    bandwidth = copy_bandwidth()
    if "--tune" in sys.argv:
        tune(bandwidth)
    else:
        bench_scan(bandwidth)
        bench_models()
