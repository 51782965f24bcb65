"""The fused SS2D kernels' variants side by side on the VMamba-T and -B stage shapes (batch 128, fp16 activations).

Forward: CUDA by direction (one warp per tile, batch and direction, atomic adds; the default), CUDA by segments
(deterministic mode's) and Triton, for inference and for a training forward that saves states; ms, GB/s over the
bytes the op must move and that as % of a measured device-to-device copy. Backward from saved states: wall ms of
the CUDA op (kernel + the host's products and sums); until 2026-12-03 it also timed the kernel without its
prefetch (VMAMBA_ZOO_SS2D_BWD_PREFETCH=0, since removed). Each CUDA forward is first checked against the float64
reference (fp32 and fp16, a small batch).

    PYTHONPATH=. python benchmarks/ss2d_cuda_variants.py
"""
import torch

from vmamba_zoo.analysis.benchmark import (STAGES_TINY, _nbytes, _ss2d_inputs, copy_bandwidth, cuda_time,
                                           environment)
from vmamba_zoo.ops import ss2d_selective_scan

STAGES_BASE = {"B stage0 56x56": (128, 128, 56, 56), "B stage3 7x7": (128, 1024, 7, 7)}
KERNELS = [("cuda directions", "cuda", "directions"), ("cuda segments", "cuda", "segments"),
           ("triton", "triton", None)]


def _run(args, backend, save_states):
    return torch.ops.vmamba_zoo.ss2d_scan_fwd(*args, 4, True, backend, save_states)


def _with_kernel(kernel, fn):
    if kernel is None:
        return fn()
    with environment({"VMAMBA_ZOO_SS2D_FWD_KERNEL": kernel}):
        return fn()


def check():
    print("correctness against float64 (rel. max error; batch 2; out and saved states)")
    for name, (_, channels, h, w) in STAGES_TINY.items():
        for dtype in (torch.float32, torch.float16):
            args = _ss2d_inputs(2, channels, h, w, dtype=dtype)
            ref_out, ref_states = _run([a.double() for a in args], "reference", True)
            line = []
            for label, backend, kernel in KERNELS[:2]:
                out, states = _with_kernel(kernel, lambda: _run(args, backend, True))
                err = lambda a, b: ((a.double() - b).abs().max() / b.abs().max()).item()  # noqa: E731
                line.append(f"{label} {err(out, ref_out):.1e} / {err(states, ref_states):.1e}")
            print(f"  {name} {str(dtype)[6:]:<8} " + "   ".join(line), flush=True)


def speed():
    copy_gbs = copy_bandwidth()
    print(f"\nforward ms (GB/s, % of copy {copy_gbs:.0f} GB/s); bytes: x, dts, Bs, Cs read, fp32 out (+ states) written")
    for name, shape in {**STAGES_TINY, **STAGES_BASE}.items():
        args = _ss2d_inputs(*shape)
        for save_states, mode in ((False, "infer"), (True, "train")):
            cells = []
            for label, backend, kernel in KERNELS:
                out, states = _with_kernel(kernel, lambda: _run(args, backend, save_states))
                nbytes = _nbytes(args[0], args[1], args[5], args[6], out) + (_nbytes(states) if save_states else 0)
                t = _with_kernel(kernel, lambda: cuda_time(lambda: _run(args, backend, save_states), 20, 5))
                gbs = nbytes / t / 1e9
                cells.append(f"{label} {t * 1e3:6.3f} ({gbs:5.0f}, {100 * gbs / copy_gbs:3.0f}%)")
                del out, states
            print(f"  {name:<15} {mode}  " + "  ".join(cells), flush=True)
        torch.cuda.empty_cache()


def backward():
    print("\nbackward from saved states, wall ms (cuda)")
    for name, shape in {**STAGES_TINY, **STAGES_BASE}.items():
        leaves = [t.requires_grad_() for t in _ss2d_inputs(*shape)]
        y = ss2d_selective_scan(*leaves, 4, True, "cuda", save_states=True)
        dy = torch.randn_like(y)
        t = cuda_time(lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True), 10, 3)
        print(f"  {name:<15} {t * 1e3:6.3f}", flush=True)
        del y, dy
        torch.cuda.empty_cache()


if __name__ == "__main__":
    import vmamba_zoo.ops  # noqa: F401  (registers the backends)
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    check()
    speed()
    backward()
