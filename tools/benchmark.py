#!/usr/bin/env python
"""Speed of VMamba against timm's Swin and ConvNeXt in one process, kernel GB/s against a measured copy,
and where the GPU time goes. Needs a CUDA device.

    python tools/benchmark.py                          # tiny suite + kernels, batch 128, fp16 (anchor settings)
    python tools/benchmark.py --sizes tiny small base --compile --compile-cuda-graphs --out benchmarks/run.md
    python tools/benchmark.py --skip-models --profile vmamba_tiny
"""
from __future__ import annotations

import argparse
import datetime
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny"], choices=["tiny", "small", "base"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp16")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of our models")
    parser.add_argument("--compile-no-layout-opt", action="store_true",
                        help="also time torch.compile with inductor's layout optimization off")
    parser.add_argument("--cuda-graph", action="store_true", help="also time inference replayed from a CUDA graph")
    parser.add_argument("--compile-cuda-graphs", action="store_true",
                        help="also time torch.compile(mode='reduce-overhead'): inference and training from CUDA graphs")
    parser.add_argument("--compile-baselines", action="store_true",
                        help="run the compile variants on Swin and ConvNeXt too (same-variant ratios)")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--skip-kernels", action="store_true")
    parser.add_argument("--profile", nargs="*", default=[], metavar="MODEL",
                        help="print the CUDA time per kernel category of a train and an inference step "
                             "(of the compiled model with --compile)")
    parser.add_argument("--profile-top", type=int, default=15, help="kernels listed per profiled step")
    parser.add_argument("--out", help="also write the tables to this markdown file")
    args = parser.parse_args(argv)

    import torch
    if not torch.cuda.is_available():
        print("error: tools/benchmark.py needs a CUDA device (CPU throughput: tools/throughput.py)", file=sys.stderr)
        return 2
    from vmamba_zoo.analysis import benchmark as bench

    sections = [f"# vmamba_zoo benchmark, {torch.cuda.get_device_name()}, torch {torch.__version__}, "
                f"{datetime.date.today()}",
                f"batch {args.batch_size}, {args.img_size}x{args.img_size}, {args.dtype} autocast; "
                "infer = eval + no_grad; train = fwd + GradScaler backward, no optimizer step"]
    if not args.skip_models:
        rows = bench.model_benchmarks(args.sizes, args.batch_size, args.img_size, args.dtype, args.warmup,
                                      args.iters, args.compile, args.cuda_graph,
                                      compile_no_layout_opt=args.compile_no_layout_opt,
                                      compile_cuda_graphs=args.compile_cuda_graphs,
                                      compile_baselines=args.compile_baselines)
        sections.append(bench.model_table(rows))
        print(sections[-1], flush=True)
    if not args.skip_kernels:
        sections.append(bench.kernel_table(bench.kernel_benchmarks()))
        print(sections[-1], flush=True)
    for name in args.profile:
        for train in (True, False):
            sections.append(bench.profile_table(bench.profile_step(name, train, args.batch_size, args.img_size,
                                                                   args.dtype, compile=args.compile),
                                                top=args.profile_top))
            print(sections[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n\n".join(sections) + "\n")
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
