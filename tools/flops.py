#!/usr/bin/env python
"""Params and GMACs (multiply-adds, the papers' convention) of registered timm models, or of mmdet detectors /
mmseg segmentors built from a config (whole model: backbone + neck + heads, as the VMamba paper counts them).

    python tools/flops.py --models vmamba_tiny swin_tiny_patch4_window7_224 --img-size 224
    python tools/flops.py --models vmamba_tiny swin_tiny_patch4_window7_224 deit_small_patch16_224 \
        --sweep 224 384 512 768 1024 --plot gmacs.png
    python tools/flops.py --config configs/mmdet/mask-rcnn_vmamba-t_fpn_1x_coco.py --shape 1280 800
    python tools/flops.py --config configs/mmseg/upernet_vmamba-*.py --depth 2   # default shape 512 2048
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
    mm = parser.add_argument_group("detectors / segmentors (fvcore)")
    mm.add_argument("--config", nargs="+",
                    help="mmdet / mmseg config file(s): count the whole model instead of --models")
    mm.add_argument("--shape", type=int, nargs="+", metavar="N",
                    help="input H W (or one side); default: the paper's, detection 1280 800, segmentation 512 2048")
    mm.add_argument("--depth", type=int, default=1, help="module levels in the breakdown (2: roi_head.bbox_head, ...)")
    mm.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE", help="override config entries")
    args = parser.parse_args(argv)
    if args.config:
        return _configs(args)

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


def _configs(args) -> int:
    from vmamba_zoo.analysis.mm_flops import mm_complexity, mm_complexity_table
    if args.shape is not None and len(args.shape) not in (1, 2):
        print("error: --shape takes H W or one side", file=sys.stderr)
        return 2
    try:
        options = _options(args.cfg_options)
        results = [mm_complexity(path, args.shape, cfg_options=options, depth=args.depth) for path in args.config]
    except (ImportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("GMACs = 1e9 multiply-adds (fvcore), batch 1, random weights; see vmamba_zoo/analysis/mm_flops.py")
    print(mm_complexity_table(results))
    return 0


def _options(pairs):
    if not pairs:
        return None
    from mmengine.config import DictAction
    parsed = argparse.Namespace()
    DictAction(option_strings=["--cfg-options"], dest="options")(None, parsed, pairs)
    return parsed.options


if __name__ == "__main__":
    sys.exit(main())
