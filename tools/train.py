#!/usr/bin/env python
"""Train a VMamba (or any timm) classifier on an ImageNet-layout folder.

    python tools/train.py configs/classification/vmamba_tiny.yaml --data-dir /data/imagenet
    python tools/train.py configs/classification/vmamba_tiny.yaml --data-dir /data/imagenet --set lr=2e-3 amp=fp16
    torchrun --nproc_per_node 8 tools/train.py configs/classification/vmamba_small.yaml --data-dir /data/imagenet
    python tools/train.py CONFIG --data-dir DIR --output OUT --resume          # continue OUT/last.pth.tar

Flags override the YAML config, and --set key=value (YAML values, dotted keys) overrides both.
See configs/classification/README.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

# this clone's package first, whatever the venv's editable install points to
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="YAML config (configs/classification/*.yaml); defaults if omitted")
    p.add_argument("--data-dir", help="ImageNet-layout root holding train/ and val/")
    p.add_argument("--output", help="output folder (checkpoints, summary.csv, config.yaml)")
    p.add_argument("--model", help="timm model name")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--lr", type=float, help="absolute learning rate (default: lr_base scaled to the global batch)")
    p.add_argument("--img-size", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--amp", choices=["fp16", "bf16", "none"], help="mixed precision (none: fp32)")
    p.add_argument("--device", help="cpu, cuda (default: cuda if available)")
    p.add_argument("--grad-checkpointing", action="store_true", default=None, help="activation checkpointing")
    p.add_argument("--torchcompile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile the model (default backend: inductor); about 2x eager training speed on a GPU")
    p.add_argument("--torchcompile-mode", help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of tqdm bars")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="checkpoint to resume; without a value: <output>/last.pth.tar if present")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override any config key")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from timm.utils import setup_default_logging

    from vmamba_zoo.train import load_config, parse_set_items, train

    flags = {"data_dir": args.data_dir, "output": args.output, "model": args.model, "epochs": args.epochs,
             "batch_size": args.batch_size, "lr": args.lr, "img_size": args.img_size, "workers": args.workers,
             "device": args.device, "grad_checkpointing": args.grad_checkpointing, "torchcompile": args.torchcompile,
             "torchcompile_mode": args.torchcompile_mode}
    overrides = {k: v for k, v in flags.items() if v is not None}
    if args.amp is not None:
        overrides["amp"] = None if args.amp == "none" else args.amp
    if args.no_progress:
        overrides["progress"] = False
    try:
        overrides.update(parse_set_items(args.set))
        cfg = load_config(args.config, overrides)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg, indent=1, sort_keys=True))
        return 0
    rank = int(os.environ.get("RANK", "0"))
    setup_default_logging(default_level=logging.INFO if rank == 0 else logging.WARNING)
    logging.getLogger("timm.utils.checkpoint_saver").setLevel(logging.WARNING)  # per-epoch file lists
    try:
        summary = train(cfg, resume=args.resume)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if summary["rank"] == 0:
        ev = summary["eval"]
        if ev:
            print(f"done: epochs {summary['start_epoch']}..{summary['epochs'] - 1}, val top-1 {ev['top1']:.2f} "
                  f"top-5 {ev['top5']:.2f}; best {summary['best_metric']} (epoch {summary['best_epoch']}); "
                  f"checkpoint {summary['checkpoint']}")
        else:
            print(f"nothing to do: the run in {summary['output']} already finished its {summary['epochs']} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
