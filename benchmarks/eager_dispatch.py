"""Eager VMamba steps with the ops' eager path (autograd.Function, no custom-op dispatch: backends.plain_eager)
against the custom ops, interleaved in one process, with eager Swin-T as the yardstick; plus the GPU's kernel time
per step (torch.profiler), to tell the host's share.

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

MODULES = [importlib.import_module(m) for m in ("vmamba_zoo.ops.layer_norm", "vmamba_zoo.ops.ss2d")]
PLAIN_EAGER = MODULES[0].plain_eager


def use_eager_path(on: bool) -> None:
    for module in MODULES:
        module.plain_eager = PLAIN_EAGER if on else (lambda tensors: False)


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
            variants = ("eager path", "custom ops") if name != args.baseline else ("-",)
            rates = {v: [] for v in variants}
            for v in variants:  # warm-up: builds, autotuning, allocator
                use_eager_path(v != "custom ops")
                step_ms(step, 3)
            for _ in range(args.rounds):
                for v in variants:
                    use_eager_path(v != "custom ops")
                    rates[v].append(args.batch_size / step_ms(step, args.steps) * 1e3)
            for v in variants:
                use_eager_path(v != "custom ops")
                median = statistics.median(rates[v])
                print(f"| {name} | {'infer' if infer else 'train'} | {v} | {' '.join(f'{r:.0f}' for r in rates[v])} "
                      f"| {median:.0f} | {kernel_ms(step):.1f} | {args.batch_size / median * 1e3:.1f} |", flush=True)
            del model, step
            torch.cuda.empty_cache()
    use_eager_path(True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
