#!/usr/bin/env python
"""Inference / training throughput (img/s) and peak memory of registered timm models, in one process.

    python tools/throughput.py --models vmamba_tiny swin_tiny_patch4_window7_224 --batch-size 64 --dtype bf16
    python tools/throughput.py --models vmamba_tiny deit_small_patch16_224 --sweep 224 384 512 --plot tp.png
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vmamba_tiny"])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--sweep", type=int, nargs="+", help="input sizes (overrides --img-size)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help="fp16/bf16: autocast")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--modes", nargs="+", choices=["infer", "train"], default=["infer", "train"])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--plot", help="write a PNG of img/s vs input size (first mode)")
    args = parser.parse_args(argv)

    from vmamba_zoo.analysis.throughput import benchmark_models, plot_throughput, throughput_table
    sizes = args.sweep or [args.img_size]
    try:
        results = benchmark_models(args.models, sizes, args.batch_size, args.dtype, args.device, args.modes,
                                   args.warmup, args.iters)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(throughput_table(results))
    if args.plot:
        plot_throughput(results, args.plot, mode=args.modes[0])
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
