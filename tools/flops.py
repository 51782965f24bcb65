#!/usr/bin/env python
"""Params and GMACs (multiply-adds, the papers' convention) of registered timm models.

    python tools/flops.py --models vmamba_tiny swin_tiny_patch4_window7_224 --img-size 224
    python tools/flops.py --models vmamba_tiny swin_tiny_patch4_window7_224 deit_small_patch16_224 \
        --sweep 224 384 512 768 1024 --plot gmacs.png
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vmamba_tiny", "vmamba_small", "vmamba_base"])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--sweep", type=int, nargs="+", help="input sizes to evaluate (overrides --img-size)")
    parser.add_argument("--method", choices=["fvcore", "torch"], default="fvcore",
                        help="fvcore (jit trace, real tensors) or torch FlopCounterMode (meta device, fast)")
    parser.add_argument("--plot", help="write a PNG of GMACs vs input size")
    args = parser.parse_args(argv)

    from vmamba_zoo.analysis.flops import complexity_table, plot_sweep
    sizes = args.sweep or [args.img_size]
    try:
        table, results = complexity_table(args.models, sizes, method=args.method)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"GMACs = 1e9 multiply-adds ({args.method}), batch 1, head included")
    print(table)
    if args.plot:
        plot_sweep(results, args.plot, title="GMACs vs input size")
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
