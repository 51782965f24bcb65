"""Build variants of the CUDA selective-scan forward kernel (its tuning macro, via VMAMBA_ZOO_CUDA_NVCC_FLAGS)
and compare them in one run: forward error against the float64 reference, and the kernel alone timed at the
VMamba-T stage-0 shape (d_state 1) and the vanilla-T one (d_state 16), as % of a measured copy.

    PYTHONPATH=. python benchmarks/cuda_fwd_variants.py             # all variants (builds in parallel)

Each variant is built and measured in its own process (one extension per process), TORCH_CUDA_ARCH_LIST=9.0.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# The shipped kernel (single-state build for d_state 1, dt*u and D*u once per chunk) at several register caps:
# VMAMBA_ZOO_CUDA_FWD_MIN_BLOCKS blocks of 4 warps per SM (1: no cap, ~118 registers -> 4 blocks).
# The first run (cuda_fwd_variants_h200_2026-12-03.txt) compared the code changes themselves, built from macros
# the kernel had then (that file lists them).
VARIANTS = {f"min blocks {b}": f"-DVMAMBA_ZOO_CUDA_FWD_MIN_BLOCKS={b}" for b in (1, 5, 6, 8)}
SPEED_CASES = {"T stage0 N=1 b128": (128, 4, 96, 1, 3136), "vanilla stage0 N=16 b32": (32, 4, 192, 16, 3136)}
CHECK_CASES = [((2, 4, 8, 1, 1000), "float32", True), ((2, 4, 96, 1, 3136), "float32", False),
               ((1, 4, 6, 16, 130), "float32", True), ((2, 2, 3, 4, 4097), "float32", True),
               ((2, 4, 8, 1, 1000), "float16", True), ((1, 4, 6, 16, 130), "bfloat16", False)]


def env_for(flags: str, cache: Path) -> dict:
    env = dict(os.environ, VMAMBA_ZOO_CUDA_NVCC_FLAGS=flags, TORCH_CUDA_ARCH_LIST="9.0",
               VMAMBA_ZOO_CUDA_CACHE=str(cache))
    env["PYTHONPATH"] = "." + os.pathsep + env.get("PYTHONPATH", "")
    return env


def measure(build_only: bool) -> dict:
    """In the child: load (build) the extension, then check and time the forward op."""
    import torch
    from vmamba_zoo.ops import cuda_backend
    if not cuda_backend.load_extension():
        return {"error": cuda_backend.extension_status()}
    if build_only:
        return {}
    from vmamba_zoo.analysis.benchmark import copy_bandwidth, cuda_time, scan_inputs, scan_speed_inputs
    from vmamba_zoo.ops.reference import selective_scan_naive
    op = torch.ops.vmamba_zoo_cuda.selective_scan_fwd
    out = {"errors": {}, "ms": {}}
    for shape, dtype_name, with_z in CHECK_CASES:
        dtype = getattr(torch, dtype_name)
        data = scan_inputs(*shape, seed=shape[-1])
        args = [data[k] for k in ("u", "delta", "A", "B", "C", "D")] + [data["z"] if with_z else None,
                                                                        data["delta_bias"]]
        ref = selective_scan_naive(*args, delta_softplus=True)
        cast = [None if t is None else t.to("cuda", torch.float32 if i in (2, 5, 7) else dtype)
                for i, t in enumerate(args)]
        got = op(*cast, True, True).double().cpu()
        out["errors"][f"{'x'.join(map(str, shape))} {dtype_name}"] = \
            ((got - ref).abs().max() / ref.abs().max()).item()
    copy = copy_bandwidth()
    out["copy_gbs"] = copy
    for name, shape in SPEED_CASES.items():
        u, delta, A, B, C, D, bias = [t.detach() for t in scan_speed_inputs(*shape)]
        nbytes = u.numel() * (2 + 2 + 4) + 2 * B.numel() * B.element_size()
        with torch.no_grad():
            t = cuda_time(lambda: op(u, delta, A, B, C, D, None, bias, True, True), repeats=20)
        out["ms"][name] = (t * 1e3, 100 * nbytes / t / 1e9 / copy)
        del u, delta, A, B, C, D, bias
        torch.cuda.empty_cache()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=("build", "measure"))
    parser.add_argument("--cache", default="build/fwd_variants")
    parser.add_argument("--only", nargs="*", help="variant names (default: all)")
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.child == "build")))
        return 0
    names = args.only or list(VARIANTS)
    root = Path(args.cache)

    def run(name: str, child: str) -> dict:
        proc = subprocess.run([sys.executable, __file__, "--child", child], env=env_for(VARIANTS[name], root / name),
                              capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        return {"error": (proc.stdout + proc.stderr)[-2000:]}

    with ThreadPoolExecutor(max_workers=4) as pool:  # nvcc uses 4 threads per file: 16 cores
        built = dict(zip(names, pool.map(lambda n: run(n, "build"), names)))
    import torch
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  CUDA {torch.version.cuda}")
    print("forward kernel alone, fp16 u/delta/B/C, fp32 A/D/bias and output, softplus; ms (% of copy)")
    header = f"{'variant':<20}" + "".join(f"{c:>26}" for c in SPEED_CASES) + "   worst fwd error (fp32 | 16-bit)"
    print(header)
    for name in names:
        if "error" in built[name]:
            print(f"{name:<20} BUILD FAILED: {built[name]['error']}")
            continue
        res = run(name, "measure")
        if "error" in res:
            print(f"{name:<20} FAILED: {res['error']}")
            continue
        cells = "".join(f"{f'{ms:.3f} ({pct:.0f}%)':>26}" for ms, pct in res["ms"].values())
        e32 = max(v for k, v in res["errors"].items() if k.endswith("float32"))
        e16 = max(v for k, v in res["errors"].items() if not k.endswith("float32"))
        print(f"{name:<20}{cells}   {e32:.1e} | {e16:.1e}   (copy {res['copy_gbs']:.0f} GB/s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
