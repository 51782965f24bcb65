"""Check and time the CUDA selective scan on one GPU: build, correctness, speed. Prints diagnostics, never a
bare traceback.

    PYTHONPATH=. python benchmarks/cuda_scan_check.py            # build (JIT if needed), PASS/FAIL table, timings
    PYTHONPATH=. python benchmarks/cuda_scan_check.py --sweep    # + backward block widths (VMAMBA_ZOO_CUDA_BWD_WARPS)

1. builds / loads the extension (just in time unless built at install) and says from where;
2. compares forward and all gradients with the float64 oracle for a few shapes (fp32 / fp16 / bf16), and
   checks that two backward runs give the same bits;
3. times forward and backward at the VMamba-T stage-0 shape (batch 128, K*D = 4*96, L = 56*56, d_state 1,
   fp16 u/delta/B/C, fp32 A/D/bias, fp32 output) and a d_state-16 shape, for the cuda and triton backends,
   as GB/s of the bytes that must move against a measured device-to-device copy.
Exit status 0 when everything ran and passed.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings

import torch

from vmamba_zoo.analysis.benchmark import (SCAN_STAGE0_T, SCAN_STAGE0_VANILLA, copy_bandwidth, cuda_time, environment,
                                           scan_inputs, scan_speed_inputs)

failures: list[str] = []
DEVICE = "cuda"


def note_failure(what: str, exc: BaseException | None = None) -> None:
    failures.append(what)
    print(f"  !! {what}")
    if exc is not None:
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        print("     " + "".join(lines[-6:]).replace("\n", "\n     ").rstrip())


# ----------------------------------------------------------------------------------------------- build
def build() -> bool:
    from vmamba_zoo.ops import cuda_backend
    print(f"extension cache: {cuda_backend.cache_dir()}  (TORCH_CUDA_ARCH_LIST={cuda_backend.arch_list()})")
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = cuda_backend.load_extension()
    print(f"load_extension: {ok} in {time.perf_counter() - start:.1f} s ({cuda_backend.extension_status()})")
    for w in caught:
        print(f"  warning: {w.message}")
    if not ok:
        note_failure("the CUDA extension is unavailable (see above)")
        return False
    try:
        available = torch.ops.vmamba_zoo_cuda.kernels_available(torch.cuda.current_device())
    except Exception as exc:  # noqa: BLE001
        note_failure("kernels_available() failed", exc)
        return False
    print(f"kernels_available on this GPU: {available}")
    if not available:
        note_failure("no code for this GPU's architecture in the build: set TORCH_CUDA_ARCH_LIST and rebuild")
    return bool(available)


# ----------------------------------------------------------------------------------------------- correctness
GRADS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
PARAMS = ("A", "D", "delta_bias")
FWD_TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
GRAD_TOL = {torch.float32: 1e-4, torch.float16: 1e-1, torch.bfloat16: 1e-1}


def make_inputs(batch, groups, group_size, d_state, length, seed=0):
    return scan_inputs(batch, groups, group_size, d_state, length, seed)


def rel_err(a, b) -> float:
    return ((a.double().cpu() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def check_case(shape, dtype, with_z) -> tuple[float, float, str, bool]:
    from vmamba_zoo.ops import selective_scan
    from vmamba_zoo.ops.reference import selective_scan_naive
    data = make_inputs(*shape, seed=shape[-1])
    if not with_z:
        data["z"] = None
    ours = {k: None if v is None else v.to(DEVICE, torch.float32 if k in PARAMS else dtype).requires_grad_()
            for k, v in data.items()}
    ref = {k: None if v is None else ours[k].detach().double().cpu().requires_grad_() for k, v in data.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to another backend is a failure here
        y = selective_scan(**ours, delta_softplus=True, backend="cuda")
        names = [k for k in GRADS if ours[k] is not None]
        grad = torch.randn(y.shape, dtype=torch.float64)
        got = torch.autograd.grad(y, [ours[k] for k in names], grad.to(DEVICE, y.dtype), retain_graph=True)
        again = torch.autograd.grad(y, [ours[k] for k in names], grad.to(DEVICE, y.dtype))
    if shape[-1] <= 300:
        y_ref = selective_scan_naive(**ref, delta_softplus=True)
    else:
        y_ref = selective_scan(**ref, delta_softplus=True, backend="reference")
    want = torch.autograd.grad(y_ref, [ref[k] for k in names], grad)
    fwd = rel_err(y, y_ref)
    grad_errs = {k: rel_err(a, b) for k, a, b in zip(names, got, want)}
    worst = max(grad_errs, key=grad_errs.get)
    deterministic = all(torch.equal(a, b) for a, b in zip(got, again))
    return fwd, grad_errs[worst], worst, deterministic


def correctness(cases=None) -> None:
    cases = cases or [((2, 4, 8, 1, 257), torch.float32, True), ((2, 2, 3, 4, 1), torch.float32, False),
             ((1, 4, 6, 16, 130), torch.float32, True), ((2, 2, 3, 4, 4097), torch.float32, True),
             ((1, 1, 8, 64, 300), torch.float32, False), ((2, 4, 96, 1, 3136), torch.float32, False),
             ((2, 4, 8, 1, 1000), torch.float16, True), ((1, 4, 6, 16, 130), torch.float16, False),
             ((2, 2, 20, 4, 513), torch.bfloat16, True), ((2, 4, 96, 1, 3136), torch.bfloat16, False)]
    print("\ncorrectness vs the float64 oracle (relative to max |ref|; grads: worst of all inputs)")
    print(f"{'shape (b,K,D,N,L)':<22}{'dtype':<10}{'z':<3}{'fwd err':>10}{'grad err':>10} {'(worst)':<14}"
          f"{'determ.':<8}result")
    for shape, dtype, with_z in cases:
        label = f"{'x'.join(map(str, shape)):<22}{str(dtype).replace('torch.', ''):<10}{'y' if with_z else 'n':<3}"
        try:
            fwd, grad, worst, deterministic = check_case(shape, dtype, with_z)
        except Exception as exc:  # noqa: BLE001
            print(f"{label}{'ERROR':>10}")
            note_failure(f"correctness {shape} {dtype}: raised", exc)
            continue
        ok = fwd < FWD_TOL[dtype] and grad < GRAD_TOL[dtype] and deterministic
        print(f"{label}{fwd:>10.1e}{grad:>10.1e} {'(' + worst + ')':<14}{'yes' if deterministic else 'NO':<8}"
              f"{'PASS' if ok else 'FAIL'}")
        if not ok:
            note_failure(f"correctness {shape} {dtype}: fwd {fwd:.1e} grad {grad:.1e} ({worst}), "
                         f"deterministic={deterministic}")
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------- speed
def speed_inputs(batch, groups, group_size, d_state, length, act=torch.float16):
    return scan_speed_inputs(batch, groups, group_size, d_state, length, act)


def speed(copy_gbs: float, sweep: bool) -> None:
    from vmamba_zoo.ops import available_backends
    cases = {"VMamba-T stage0 (N=1)": SCAN_STAGE0_T, "vanilla-T stage0 (N=16)": SCAN_STAGE0_VANILLA}
    print(f"\nspeed: fp16 u/delta/B/C, fp32 A/D/bias, softplus, fp32 output; copy bandwidth {copy_gbs:.0f} GB/s")
    print("  bytes counted: fwd reads u, delta (2 B), writes y (4 B) + B, C; bwd reads dout (4), u, delta, "
          "writes du, ddelta (2 each) + 2x B, C")
    print(f"{'case':<26}{'backend':<14}{'fwd ms':>8}{'fwd GB/s':>10}{'% copy':>8}{'bwd ms':>8}{'bwd GB/s':>10}"
          f"{'% copy':>8}")
    runs = [(b, None) for b in ("cuda", "triton") if b in available_backends("selective_scan_fwd")]
    if sweep:
        runs += [("cuda", w) for w in ("4", "8", "16")]
    for name, shape in cases.items():
        try:
            time_case(name, shape, runs, copy_gbs)
        except torch.OutOfMemoryError:
            print(f"{name:<26}out of memory")
        torch.cuda.empty_cache()


def time_case(name: str, shape, runs, copy_gbs: float) -> None:
    from vmamba_zoo.ops import selective_scan
    u, delta, A, B, C, D, bias = speed_inputs(*shape)
    elems = u.numel()
    bc_bytes = 2 * B.numel() * B.element_size()
    fwd_bytes = elems * (2 + 2 + 4) + bc_bytes
    bwd_bytes = elems * (4 + 2 + 2 + 2 + 2) + 2 * bc_bytes
    for backend, warps in runs:
        label = backend + (f" w{warps}" if warps else "")
        # VMAMBA_ZOO_CUDA_BWD_WARPS is read by the extension at each backward call
        try:
            with environment({"VMAMBA_ZOO_CUDA_BWD_WARPS": warps} if warps else {}), warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)  # a fallback to another backend is an error here
                y = selective_scan(u, delta, A, B, C, D, None, bias, True, True, backend)
                g = torch.randn_like(y)
                tf = cuda_time(lambda: selective_scan(u, delta, A, B, C, D, None, bias, True, True, backend))
                tb = cuda_time(lambda: torch.autograd.grad(y, (u, delta, A, B, C, D, bias), g, retain_graph=True))
            gf, gb = fwd_bytes / tf / 1e9, bwd_bytes / tb / 1e9
            print(f"{name:<26}{label:<14}{tf * 1e3:>8.3f}{gf:>10.0f}{100 * gf / copy_gbs:>7.0f}%"
                  f"{tb * 1e3:>8.3f}{gb:>10.0f}{100 * gb / copy_gbs:>7.0f}%", flush=True)
        except torch.OutOfMemoryError:
            print(f"{name:<26}{label:<14}  out of memory")
        except Exception as exc:  # noqa: BLE001
            print(f"{name:<26}{label:<14}  ERROR")
            note_failure(f"timing {name} {label}", exc)
        finally:
            y = g = None
            torch.cuda.empty_cache()
    # the kernel alone (no custom-op dispatch / Python wrapper around it)
    try:
        op = torch.ops.vmamba_zoo_cuda.selective_scan_fwd
        with torch.no_grad():
            tk = cuda_time(lambda: op(u, delta, A, B, C, D, None, bias, True, True))
        print(f"{name:<26}{'cuda (raw op)':<14}{tk * 1e3:>8.3f}{fwd_bytes / tk / 1e9:>10.0f}"
              f"{100 * fwd_bytes / tk / 1e9 / copy_gbs:>7.0f}%")
    except Exception as exc:  # noqa: BLE001
        note_failure(f"raw op timing {name}", exc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="also time backward block widths 4/8/16 warps")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check (run this on the GPU machine)")
        return 1
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  CUDA {torch.version.cuda}  "
          f"capability {'.'.join(map(str, torch.cuda.get_device_capability()))}")
    try:
        import vmamba_zoo.ops  # noqa: F401  (registers the backends)
    except Exception as exc:  # noqa: BLE001
        note_failure("importing vmamba_zoo failed (run from the repository root with PYTHONPATH=.)", exc)
        return 1
    if build():
        try:
            correctness()
        except Exception as exc:  # noqa: BLE001
            note_failure("correctness section crashed", exc)
        if not args.skip_speed:
            try:
                speed(copy_bandwidth(), args.sweep)
            except Exception as exc:  # noqa: BLE001
                note_failure("speed section crashed", exc)
    print("\n" + ("ALL PASS" if not failures else f"{len(failures)} problem(s):\n  - " + "\n  - ".join(failures)))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
