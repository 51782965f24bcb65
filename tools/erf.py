#!/usr/bin/env python
"""Effective receptive field of a model's stage output, saved as a log-scale heat map PNG and a .npy.

    python tools/erf.py --model vmamba_tiny --pretrained --data-dir /data/imagenet/val --num-images 50 \
        --img-size 1024 --stage -1 --out erf_vmamba_tiny
    python tools/erf.py --model test_vmamba --img-size 64 --num-images 4 --out erf   # random images

The ERF (VMamba paper, after RepLKNet): |d out[centre] / d input| summed over channels, averaged over images.
"""
from __future__ import annotations

import argparse
import os
import sys

# this clone's package first, whatever the venv's editable install points to
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vmamba_tiny")
    p.add_argument("--checkpoint", help="weights (ours, timm-style or original release)")
    p.add_argument("--ema", action="store_true", help="the checkpoint's EMA weights")
    p.add_argument("--pretrained", action="store_true", help="timm pretrained weights (downloads)")
    p.add_argument("--num-classes", type=int, help="default: the checkpoint's")
    p.add_argument("--data-dir", help="image folder (default: random noise images)")
    p.add_argument("--num-images", type=int, default=16)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--stage", type=int, default=-1, help="stage index (0-3, -1 = last)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="erf", help="output prefix: <out>.png and <out>.npy")
    args = p.parse_args(argv)

    from vmamba_zoo.models.checkpoint import CheckpointMismatchError
    from vmamba_zoo.train.erf import build_erf_model, compute_erf, erf_summary, load_images, save_erf
    try:
        model = build_erf_model(args.model, args.checkpoint, ema=args.ema, pretrained=args.pretrained,
                                num_classes=args.num_classes)
        images = load_images(args.data_dir, args.num_images, args.img_size, model, seed=args.seed)
    except (FileNotFoundError, ValueError, KeyError, CheckpointMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    erf = compute_erf(model, images, stage=args.stage, batch_size=args.batch_size)
    png, npy = f"{args.out}.png", f"{args.out}.npy"
    title = f"ERF {args.model} stage {args.stage} ({images.shape[0]} images, {args.img_size}px)"
    save_erf(erf, png, npy, title=title)
    s = erf_summary(erf)
    areas = ", ".join(f"{k[4:]}%: {v:.3f}" for k, v in s.items() if k.startswith("area"))
    print(f"ERF {erf.shape[0]}x{erf.shape[1]} of {args.model} stage {args.stage} over {images.shape[0]} images; "
          f"max at {s['argmax']}; side of the centred square holding {areas}")
    print(f"wrote {png} and {npy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
