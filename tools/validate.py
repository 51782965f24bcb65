#!/usr/bin/env python
"""Top-1 / top-5 of a checkpoint on an ImageNet-layout folder.

    python tools/validate.py --checkpoint output/vmamba_tiny/model_best.pth.tar --data-dir /data/imagenet
    python tools/validate.py --model vmamba_tiny --checkpoint vssm1_tiny_0230s_ckpt_epoch_264.pth --ema \
        --data-dir /data/imagenet/val --img-size 256 --crop-pct 1.0

Checkpoints: ours (they name the model), timm-style, the original release's {'model', 'model_ema'},
.safetensors; read with weights_only=True.
"""
from __future__ import annotations

import argparse
import os
import json
import sys

# this clone's package first, whatever the venv's editable install points to
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="class folder (<dir>/<class>/<img>) or a root holding val/")
    p.add_argument("--split", help="sub-folder of --data-dir to use (default: val/ when present)")
    p.add_argument("--checkpoint", help="weights (none: random initialisation)")
    p.add_argument("--model", help="timm model name (default: the one the checkpoint names)")
    p.add_argument("--num-classes", type=int, help="default: the checkpoint's classifier / the folder's classes")
    p.add_argument("--ema", action="store_true", help="use the EMA weights (model_ema / state_dict_ema)")
    p.add_argument("--img-size", type=int, help="input resolution (default: the model's / the training run's)")
    p.add_argument("--crop-pct", type=float, help="centre crop fraction (1.0: resize only)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device")
    p.add_argument("--amp", choices=["fp16", "bf16"])
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from vmamba_zoo.models.checkpoint import CheckpointMismatchError
    from vmamba_zoo.train.validate import format_result, validate
    try:
        result = validate(args.checkpoint, args.data_dir, model_name=args.model, num_classes=args.num_classes,
                          img_size=args.img_size, crop_pct=args.crop_pct, ema=args.ema, batch_size=args.batch_size,
                          workers=args.workers, device=args.device, amp=args.amp, progress=not args.no_progress,
                          split=args.split)
    except (FileNotFoundError, ValueError, KeyError, CheckpointMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_result(result))
    print(f"result: top1={result['top1']:.2f} top5={result['top5']:.2f} images={result['images']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
