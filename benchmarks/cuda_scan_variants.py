"""Build variants of the CUDA selective-scan kernels (their tuning macros, via VMAMBA_ZOO_CUDA_NVCC_FLAGS) and
compare them in one run: forward and gradient errors against the float64 oracle (cuda_scan_check.check_case),
and the forward and backward ops timed at the VMamba-T stage-0 shape (d_state 1) and the vanilla-T one
(d_state 16), as % of a measured copy, with the chunked kernels (VMAMBA_ZOO_CUDA_FWD_KERNEL=chunks where a build knows
it); for builds with selective_scan_fwd_states, also the training pair (forward keeping its chunk states, backward
reading them), and for builds with the lanes forwards (d_state 16: one channel a lane, "lanes", or a pair of lanes,
"lane_pairs") each of them, forced, and its errors checked the same way.

    PYTHONPATH=. python benchmarks/cuda_scan_variants.py                 # all variants (builds in parallel)
    PYTHONPATH=. python benchmarks/cuda_scan_variants.py --only shipped  # one

Each variant is built and measured in its own process (one extension per process), TORCH_CUDA_ARCH_LIST=9.0.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from _variant_builds import build_all, build_env, child_result, parent_args

# The shipped kernel (single-state build for d_state 1, dt*u and D*u once per chunk) at several register caps:
# VMAMBA_ZOO_CUDA_FWD_MIN_BLOCKS blocks of 4 warps per SM (1: no cap, ~118 registers -> 4 blocks).
# The first run (cuda_fwd_variants_h200_2026-12-03.txt) compared the code changes themselves, built from macros
# the kernel had then (that file lists them).
# The backward's d_state-1 build likewise (VMAMBA_ZOO_CUDA_BWD_SINGLE_MIN_BLOCKS blocks of 8 warps).
# name: (extra nvcc flags, source root holding the vmamba_zoo package; None: this checkout). "base": an earlier
# commit's sources, e.g. git archive bc3a281 vmamba_zoo | tar -x -C build/scan_base; "prev" likewise, build/scan_prev
VARIANTS = {"shipped": ("", None), "base": ("", "build/scan_base"), "prev": ("", "build/scan_prev"),
            **{f"fwd min blocks {b}": (f"-DVMAMBA_ZOO_CUDA_FWD_MIN_BLOCKS={b}", None) for b in (1, 8)},
            "bwd single mb3": ("-DVMAMBA_ZOO_CUDA_BWD_SINGLE_MIN_BLOCKS=3", None)}
SPEED_CASES = {"T stage0 N=1 b128": (128, 4, 96, 1, 3136), "vanilla stage0 N=16 b32": (32, 4, 192, 16, 3136)}
CHECK_CASES = [((2, 4, 8, 1, 1000), "float32", True), ((2, 4, 96, 1, 3136), "float32", False),
               ((1, 4, 6, 16, 130), "float32", True), ((2, 2, 3, 4, 4097), "float32", True),
               ((2, 4, 8, 1, 1000), "float16", True), ((1, 4, 6, 16, 130), "bfloat16", False)]


def _choose_kernels(kind: str) -> None:
    """The extension reads this at every call: 'lanes' or 'chunks' for the forward."""
    os.environ["VMAMBA_ZOO_CUDA_FWD_KERNEL"] = kind


def _lanes_kernels(torch) -> list[str]:
    """The lanes forwards this build knows by VMAMBA_ZOO_CUDA_FWD_KERNEL: its error for an unknown value lists them
    ('lanes' since session 23, 'lane_pairs' since 25); older builds ignore the variable."""
    u = torch.zeros(1, 1, 8, device="cuda")
    A, B = -torch.ones(1, 1, device="cuda"), torch.zeros(1, 1, 1, 8, device="cuda")
    os.environ["VMAMBA_ZOO_CUDA_FWD_KERNEL"] = "probe"
    try:
        torch.ops.vmamba_zoo_cuda.selective_scan_fwd(u, u, A, B, B, None, None, None, True, True)
        return []
    except RuntimeError as exc:
        message = str(exc)
        known = "VMAMBA_ZOO_CUDA_FWD_KERNEL" in message
        return [k for k in ("lanes", "lane_pairs") if known and f"'{k}'" in message]
    finally:
        _choose_kernels("chunks")


def measure(build_only: bool) -> dict:
    """In the child: load (build) the extension, then check and time the forward op."""
    import torch
    from vmamba_zoo.ops import cuda_backend
    if not cuda_backend.load_extension():
        return {"error": cuda_backend.extension_status()}
    if build_only:
        return {}
    from vmamba_zoo.analysis.benchmark import copy_bandwidth, cuda_time, scan_speed_inputs
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cuda_scan_check import check_case  # forward and every gradient against the float64 oracle
    out = {"errors": {}, "lanes_errors": {}, "ms": {}, "lanes_ms": {}}
    lanes_kernels = _lanes_kernels(torch)
    # the checks with the chunked forward, then the d_state-16 ones with each lanes forward forced (it runs only
    # there: elsewhere it would repeat the chunked kernel's checks, and mix their errors into the lanes rows)
    for kernel in ("chunks", *lanes_kernels):
        _choose_kernels(kernel)
        errors = out["errors"] if kernel == "chunks" else out["lanes_errors"].setdefault(kernel, {})
        for shape, dtype_name, with_z in CHECK_CASES:
            if kernel != "chunks" and shape[3] != 16:
                continue
            fwd, grad, _, deterministic = check_case(shape, getattr(torch, dtype_name), with_z)
            errors[f"{'x'.join(map(str, shape))} {dtype_name}"] = (fwd, grad if deterministic else float("nan"))
    _choose_kernels("chunks")
    copy = copy_bandwidth()
    out["copy_gbs"] = copy
    fwd_op, bwd_op = torch.ops.vmamba_zoo_cuda.selective_scan_fwd, torch.ops.vmamba_zoo_cuda.selective_scan_bwd
    states_op = getattr(torch.ops.vmamba_zoo_cuda, "selective_scan_fwd_states", None)  # builds since session 21
    for name, shape in SPEED_CASES.items():
        u, delta, A, B, C, D, bias = [t.detach() for t in scan_speed_inputs(*shape)]
        bc = 2 * B.numel() * B.element_size()
        fwd_bytes = u.numel() * (2 + 2 + 4) + bc  # reads u, delta; writes fp32 y
        bwd_bytes = u.numel() * (4 + 2 + 2 + 2 + 2) + 2 * bc  # reads fp32 dout, u, delta; writes du, ddelta
        dout = torch.randn(u.shape, device="cuda")
        with torch.no_grad():
            tf = cuda_time(lambda: fwd_op(u, delta, A, B, C, D, None, bias, True, True), repeats=20)
            tb = cuda_time(lambda: bwd_op(dout, u, delta, A, B, C, D, None, bias, True), repeats=20)
            cells = [tf * 1e3, 100 * fwd_bytes / tf / 1e9 / copy, tb * 1e3, 100 * bwd_bytes / tb / 1e9 / copy]
            if states_op is not None:  # the training pair: forward keeping its chunk states, backward reading them
                _, states = states_op(u, delta, A, B, C, D, None, bias, True, True)
                tfs = cuda_time(lambda: states_op(u, delta, A, B, C, D, None, bias, True, True), repeats=20)
                tbs = cuda_time(lambda: bwd_op(dout, u, delta, A, B, C, D, None, bias, True, states), repeats=20)
                cells += [tfs * 1e3, 100 * fwd_bytes / tfs / 1e9 / copy, tbs * 1e3, 100 * bwd_bytes / tbs / 1e9 / copy]
                for kernel in lanes_kernels if shape[3] == 16 else ():  # the lanes forwards, each forced
                    _choose_kernels(kernel)
                    tfl = cuda_time(lambda: fwd_op(u, delta, A, B, C, D, None, bias, True, True), repeats=20)
                    _choose_kernels("chunks")
                    out["lanes_ms"].setdefault(kernel, {})[name] = (tfl * 1e3, 100 * fwd_bytes / tfl / 1e9 / copy)
        out["ms"][name] = cells
        del u, delta, A, B, C, D, bias, dout
        torch.cuda.empty_cache()
    return out


def main() -> int:
    args = parent_args(__doc__, "build/fwd_variants", measure)
    if args is None:
        return 0
    names = args.only or list(VARIANTS)
    root = Path(args.cache)

    def run(name: str, child: str) -> dict:
        flags, source = VARIANTS[name]
        return child_result(__file__, child, build_env(flags, root / name, source or "."))

    built = build_all(names, run)
    import torch
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  CUDA {torch.version.cuda}")
    print("kernels alone (ops, no autograd), fp16 u/delta/B/C, fp32 A/D/bias, y and dout, softplus; ms (% of copy)")
    header = (f"{'variant':<20}" + "".join(f"{c + ' fwd':>30}{'bwd':>18}" for c in SPEED_CASES)
              + "   worst error fwd/grad (fp32 | 16-bit)")
    print(header)
    for name in names:
        if "error" in built[name]:
            print(f"{name:<20} BUILD FAILED: {built[name]['error']}")
            continue
        res = run(name, "measure")
        if "error" in res:
            print(f"{name:<20} FAILED: {res['error']}")
            continue
        cells = "".join(f"{f'{t[0]:.3f} ({t[1]:.0f}%)':>30}{f'{t[2]:.3f} ({t[3]:.0f}%)':>18}"
                        for t in res["ms"].values())
        worst = {kind: [max(v[i] for k, v in res["errors"].items() if k.endswith("float32") == (kind == 32))
                        for i in (0, 1)] for kind in (32, 16)}  # nan grad error: a backward not deterministic
        errors = " | ".join(f"{f:.1e}/{g:.1e}" for f, g in worst.values())
        print(f"{name:<20}{cells}   {errors}   (copy {res['copy_gbs']:.0f} GB/s)", flush=True)
        saved = "".join(f"{f'{t[4]:.3f} ({t[5]:.0f}%)':>30}{f'{t[6]:.3f} ({t[7]:.0f}%)':>18}"
                        for t in res["ms"].values() if len(t) > 4)
        if saved:  # the same ops as a training step runs them: forward with states, backward from them
            print(f"{'  + saved states':<20}{saved}", flush=True)
        # the lanes forwards where they apply (d_state 16), else n/a, with the checks' worst errors under each
        for kernel, times in res["lanes_ms"].items():
            cells = "".join(f"{f'{times[c][0]:.3f} ({times[c][1]:.0f}%)' if c in times else 'n/a':>30}{'n/a':>18}"
                            for c in SPEED_CASES)
            checked = res["lanes_errors"].get(kernel, {})
            errors = ""
            if checked:
                worst = [max(v[i] for k, v in checked.items() if k.endswith(kind)) for kind in ("float32", "16")
                         for i in (0, 1)]
                errors = f"   {worst[0]:.1e}/{worst[1]:.1e} | {worst[2]:.1e}/{worst[3]:.1e}"
            print(f"{'  + ' + kernel + ' fwd':<20}{cells}{errors}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
