"""Compiled VMamba training with inductor's layout optimization on (torch's default) and off, in one process.

With convolutions in the graph, inductor gives every 4D tensor upstream and downstream of one channels-last
strides. Up to d92cb0f, VMamba's (batch, H, W, C) maps were already channels-last in memory, so inductor took H for
their channel dim: it wrote them H-fastest, with strided stores, and copied them back for the matrix products.
Turning the optimization off was slower still (2164 vs 2088 img/s, benchmarks/token_layout_ab_h200_2026-12-03.txt);
the models now keep tokens between convolutions instead, which this script can check stays the faster setting.
PYTHONPATH=. python benchmarks/compile_layout_opt.py [--model vmamba_tiny] [--iters 10]"""
import argparse
import sys
import time

import timm
import torch

import vmamba_zoo.models  # noqa: F401

sys.path.insert(0, "benchmarks")
from compiled_kernels import anchor_step  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="vmamba_tiny")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    x = torch.randn(args.batch_size, 3, 224, 224, device="cuda")
    for layout_opt in (True, False):
        torch._dynamo.reset()
        model = timm.create_model(args.model).cuda().train()
        step = anchor_step(model, torch.compile(model, options={"layout_optimization": layout_opt}), x)
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args.iters):
            step()
        torch.cuda.synchronize()
        rate = args.iters * args.batch_size / (time.perf_counter() - start)
        print(f"{args.model} train, compiled, layout_optimization={layout_opt}: {rate:.0f} img/s, "
              f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
        del model, step


if __name__ == "__main__":
    main()
