"""Eager VMamba steps with the ops' eager path (no custom-op dispatch: backends.plain_eager), the same with its Python
autograd.Functions instead of the C++ nodes, the same with torch's or Triton's LayerNorm forward instead of the CUDA
one (auto mode's eager choice since 014a40e), and the custom ops, interleaved in one process, with eager Swin-T as the
yardstick; plus the GPU's kernel time per step (torch.profiler), to tell the host's share.

    PYTHONPATH=. python benchmarks/eager_dispatch.py [--models vmamba_tiny vmamba_small] [--batch-size 128]

Anchor settings: fp16 autocast, train = forward + GradScaler backward (no optimizer step), infer = no_grad."""
import argparse
import importlib
import statistics
import sys
import time

import timm
import torch

import vmamba_zoo.models  # noqa: F401

sys.path.insert(0, "benchmarks")
from compiled_kernels import anchor_step  # noqa: E402

LAYER_NORM = importlib.import_module("vmamba_zoo.ops.layer_norm")
SS2D = importlib.import_module("vmamba_zoo.ops.ss2d")
MODULES = (LAYER_NORM, SS2D)
ORIGINAL = {(module, name): getattr(module, name) for module in MODULES
            for name in ("plain_eager", "_no_saved_tensor_hooks", "_cuda_eager_op", "_eager_forward_backend")
            if hasattr(module, name)}
# what each variant changes: "eager path" is the package as it is; "torch LayerNorm" its eager path with the
# registry's LayerNorm forward (torch's, Triton's on the largest maps) instead of the CUDA node, as up to 182e0b8;
# "Python nodes" also without the C++ SS2D node and without torch's LayerNorm for half inputs (the Python
# autograd.Functions instead, as up to 353df3c); "custom ops" no eager path at all
_REGISTRY_NORM = {(LAYER_NORM, "_eager_forward_backend"): lambda present, backend: backend}
VARIANTS = {
    "eager path": {},
    "eager, torch LayerNorm": _REGISTRY_NORM,
    "eager, Python nodes": {(SS2D, "_cuda_eager_op"): lambda *args: None,
                            (LAYER_NORM, "_no_saved_tensor_hooks"): lambda: False, **_REGISTRY_NORM},
    "custom ops": {(module, "plain_eager"): (lambda tensors: False) for module in MODULES},
}


def use_variant(name: str) -> None:
    for (module, attr), original in ORIGINAL.items():
        setattr(module, attr, VARIANTS[name].get((module, attr), original))


def step_ms(step, steps: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1e3


def kernel_ms(step) -> float:
    from vmamba_zoo.analysis.benchmark import kernel_times
    return sum(kernel_times(step, calls=2, warmup=1).values()) / 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["vmamba_tiny"])
    parser.add_argument("--baseline", default="swin_tiny_patch4_window7_224")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  batch {args.batch_size}, fp16 autocast")
    x = torch.randn(args.batch_size, 3, 224, 224, device="cuda")
    print("| model | mode | ops via | img/s (rounds) | median img/s | GPU kernel ms/step | wall ms/step |")
    print("|---|---|---|---|---|---|---|")
    for name in [*args.models, args.baseline]:
        for infer in (True, False):
            model = timm.create_model(name).cuda().train(not infer)
            step = anchor_step(model, model, x, infer)
            variants = tuple(VARIANTS) if name != args.baseline else ("-",)
            rates = {v: [] for v in variants}
            for v in variants:  # warm-up: builds, autotuning, allocator
                use_variant(v if v in VARIANTS else "eager path")
                step_ms(step, 3)
            for _ in range(args.rounds):
                for v in variants:
                    use_variant(v if v in VARIANTS else "eager path")
                    rates[v].append(args.batch_size / step_ms(step, args.steps) * 1e3)
            for v in variants:
                use_variant(v if v in VARIANTS else "eager path")
                median = statistics.median(rates[v])
                print(f"| {name} | {'infer' if infer else 'train'} | {v} | {' '.join(f'{r:.0f}' for r in rates[v])} "
                      f"| {median:.0f} | {kernel_ms(step):.1f} | {args.batch_size / median * 1e3:.1f} |", flush=True)
            del model, step
            torch.cuda.empty_cache()
    use_variant("eager path")
    return 0


if __name__ == "__main__":
    sys.exit(main())
