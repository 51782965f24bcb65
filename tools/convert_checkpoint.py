#!/usr/bin/env python
"""Convert an original VMamba release checkpoint to our layout as .safetensors.

    python tools/convert_checkpoint.py vssm1_tiny_0230s_ckpt_epoch_264.pth vmamba_tiny.safetensors [--ema]
    python tools/convert_checkpoint.py custom.pth out.safetensors --model test_vmamba \
        --model-args '{"dims": 32, "num_classes": 10}'

A file that fits no registered VMamba architecture is refused unless --model names one it fits.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="original release file (.pth, loaded with weights_only=True) or .safetensors")
    parser.add_argument("dst", help="output .safetensors")
    parser.add_argument("--ema", action="store_true", help="take 'model_ema' instead of 'model'")
    parser.add_argument("--model", help="timm model name the weights are for (needed for unregistered shapes)")
    parser.add_argument("--model-args", default=None, help="JSON dict of keyword arguments for --model")
    args = parser.parse_args(argv)

    from vmamba_zoo.analysis.convert import convert_checkpoint, format_report
    from vmamba_zoo.models import CheckpointMismatchError
    try:
        model_kwargs = json.loads(args.model_args) if args.model_args else None
        report = convert_checkpoint(args.src, args.dst, ema=args.ema, model=args.model, model_kwargs=model_kwargs)
    except (FileNotFoundError, KeyError, ValueError, CheckpointMismatchError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
