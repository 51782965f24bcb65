"""Compiled VMamba training against eager Swin-T in one process, timed in alternating rounds (drift cancels).

Anchor settings: batch 128, 224x224, fp16 autocast, GradScaler backward, no optimizer step. For A/B runs of two
code versions: run it once per version on one machine and compare the ratios.
PYTHONPATH=. python benchmarks/compiled_train_vs_swin.py [--model vmamba_tiny] [--rounds 3] [--iters 10]
    [--variant NAME:VAR=VALUE,VAR=VALUE ...]   (also time the compiled model with these environment settings, which
                                               the CUDA kernels read at each call, in the same rounds)"""
import argparse
import sys
import time

import timm
import torch

import vmamba_zoo.models  # noqa: F401
from vmamba_zoo.analysis.benchmark import environment

sys.path.insert(0, "benchmarks")
from compiled_kernels import anchor_step  # noqa: E402


def rate(step, iters: int, batch: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    return iters * batch / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="vmamba_tiny")
    parser.add_argument("--baseline", default="swin_tiny_patch4_window7_224")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--variant", nargs="*", default=[], metavar="NAME:VAR=VALUE,...")
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    x = torch.randn(args.batch_size, 3, 224, 224, device="cuda")
    ours = timm.create_model(args.model).cuda().train()
    theirs = timm.create_model(args.baseline).cuda().train()
    compiled = anchor_step(ours, torch.compile(ours), x)
    steps = {args.model + " (compiled)": compiled, args.baseline + " (eager)": anchor_step(theirs, theirs, x)}
    for spec in args.variant:
        name, settings = spec.split(":", 1)
        env = dict(item.split("=", 1) for item in settings.split(","))
        steps[f"{args.model} (compiled, {name})"] = with_env(compiled, env)
    for step in steps.values():
        for _ in range(3):
            step()
    rates = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            rates[name].append(rate(step, args.iters, args.batch_size))
    for name, values in rates.items():
        print(f"{name}: train {max(values):.0f} img/s (rounds: {', '.join(f'{v:.0f}' for v in values)})")
    baseline = args.baseline + " (eager)"
    for name, values in rates.items():
        if name != baseline:
            print(f"ratio {name} / {baseline}: {max(values) / max(rates[baseline]):.3f} (best rounds)", flush=True)


def with_env(step, env):
    def run():
        with environment(env):
            step()
    return run

if __name__ == "__main__":
    main()
