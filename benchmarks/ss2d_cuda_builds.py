"""Builds of the fused SS2D CUDA kernels side by side: tuning macros (via VMAMBA_ZOO_CUDA_NVCC_FLAGS) or an older
source tree, each checked against the float64 reference (forward, saved states and every gradient) and timed at
the VMamba-T/B stage shapes (batch 128, fp16 activations) in its own process.

    PYTHONPATH=. python benchmarks/ss2d_cuda_builds.py                       # every build below
    PYTHONPATH=. python benchmarks/ss2d_cuda_builds.py --only shipped base   # some
    # base: the sources of an earlier commit, e.g. git archive e68bce6 vmamba_zoo | tar -x -C build/ss2d_base

Forward: the op (zero-filled output + kernel), inference and a training forward that saves states, ms and % of
copy for the bytes it must move. Backward: autograd from saved states, wall ms (kernel + the host's products and
sums). TORCH_CUDA_ARCH_LIST=9.0.
"""
from __future__ import annotations

import sys
from pathlib import Path

from _variant_builds import build_all, build_env, child_result, parent_args

# name: (extra nvcc flags, source root holding the vmamba_zoo package; None: this checkout)
# "fwd mb B": the forward by direction capped for B one-warp blocks per SM (16: 128 registers, 12: 168, 8: 255).
# The prefetch-depth and plain-store builds of the 2026-12-04 record used macros of commit 08f4094, since removed.
BUILDS = {"shipped": ("", None), "base": ("", "build/ss2d_base"),
          **{f"fwd mb {b}": (f"-DVMAMBA_ZOO_SS2D_FWD_MIN_BLOCKS={b}", None) for b in (12, 8)}}
STAGES = {"T0 56x56": (128, 96, 56, 56), "T1 28x28": (128, 192, 28, 28), "T2 14x14": (128, 384, 14, 14),
          "T3 7x7": (128, 768, 7, 7), "B0 56x56": (128, 128, 56, 56), "B3 7x7": (128, 1024, 7, 7)}
# (batch, channels, H, W, directions): VMamba-T stage shapes, odd sizes, a spare-lane tile, 2 and 1 directions
CHECKS = [(2, 96, 56, 56, 4), (2, 384, 14, 14, 4), (2, 768, 7, 7, 4), (2, 40, 9, 7, 4), (1, 70, 5, 13, 2),
          (2, 33, 6, 11, 1)]


def measure(build_only: bool) -> dict:
    """In the child: load (build) the extension, then check and time."""
    import torch
    from vmamba_zoo.ops import cuda_backend
    if not cuda_backend.load_extension():
        return {"error": cuda_backend.extension_status()}
    if build_only:
        return {}
    from vmamba_zoo.analysis.benchmark import _nbytes, _ss2d_inputs, copy_bandwidth, cuda_time
    from vmamba_zoo.ops import ss2d_selective_scan
    fwd_op = torch.ops.vmamba_zoo.ss2d_scan_fwd
    rel = lambda a, b: ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()  # noqa: E731
    out = {"errors": {}, "fwd": {}, "bwd": {}}
    for batch, channels, h, w, k in CHECKS:
        for dtype in (torch.float32, torch.float16):
            args = _ss2d_inputs(batch, channels, h, w, directions=k, dtype=dtype)
            ref, ref_states = fwd_op(*[a.double() for a in args], k, True, "reference", True)
            got, states = fwd_op(*args, k, True, "cuda", True)
            worst = max(rel(got, ref), rel(states, ref_states))
            leaves = [a.detach().requires_grad_() for a in args]
            ref_leaves = [a.detach().double().requires_grad_() for a in args]
            dy = torch.randn(ref.shape, device="cuda", dtype=torch.float64)
            ref_grads = torch.autograd.grad(ss2d_selective_scan(*ref_leaves, k, True, "reference"), ref_leaves, dy)
            for save in (True, False):  # from the saved states, and re-walking the forward
                grads = torch.autograd.grad(ss2d_selective_scan(*leaves, k, True, "cuda", save_states=save),
                                            leaves, dy.float())
                worst = max(worst, *(rel(g, r) for g, r in zip(grads, ref_grads)))
            out["errors"][f"{batch}x{channels}x{h}x{w} K{k} {str(dtype)[6:]}"] = worst
    copy = copy_bandwidth()
    out["copy_gbs"] = copy
    for name, shape in STAGES.items():
        args = _ss2d_inputs(*shape)
        for save in (False, True):
            y, states = fwd_op(*args, 4, True, "cuda", save)
            nbytes = _nbytes(args[0], args[1], args[5], args[6], y) + (_nbytes(states) if save else 0)
            t = cuda_time(lambda: fwd_op(*args, 4, True, "cuda", save), 20, 5)
            out["fwd"][f"{name} {'train' if save else 'infer'}"] = (t * 1e3, 100 * nbytes / t / 1e9 / copy)
            del y, states
        leaves = [a.requires_grad_() for a in args]
        y = ss2d_selective_scan(*leaves, 4, True, "cuda", save_states=True)
        dy = torch.randn_like(y)
        t = cuda_time(lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True), 10, 3)
        out["bwd"][name] = t * 1e3
        del y, dy, leaves, args
        torch.cuda.empty_cache()
    return out


def main() -> int:
    args = parent_args(__doc__, "build/ss2d_builds", measure)
    if args is None:
        return 0
    names = [n for n in (args.only or list(BUILDS)) if BUILDS[n][1] is None or Path(BUILDS[n][1]).is_dir()]

    def run(name: str, child: str) -> dict:
        flags, root = BUILDS[name]
        root = str(Path(root or ".").resolve())
        return child_result(__file__, child, build_env(flags, Path(args.cache) / name, root), cwd=root)

    built = build_all(names, run)
    import torch
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  CUDA {torch.version.cuda}", flush=True)
    for name in names:
        res = built[name] if "error" in built[name] else run(name, "measure")
        if "error" in res:
            print(f"\n## {name}: FAILED\n{res['error']}")
            continue
        worst = max(res["errors"].values())
        print(f"\n## {name}  (copy {res['copy_gbs']:.0f} GB/s; worst error vs float64 over fwd, states and grads: "
              f"{worst:.1e})")
        print("  forward ms (% of copy)  " + "  ".join(f"{k} {ms:.3f} ({pc:.0f}%)" for k, (ms, pc) in res["fwd"].items()))
        print("  backward ms             " + "  ".join(f"{k} {ms:.3f}" for k, ms in res["bwd"].items()))
        print("  errors  " + "  ".join(f"{k} {e:.1e}" for k, e in res["errors"].items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
