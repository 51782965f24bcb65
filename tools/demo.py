#!/usr/bin/env python
"""Build VMamba-T/S/B, print parameters and output shapes, time them on this machine, check parity."""
import argparse
import sys
from pathlib import Path

import vmamba_zoo  # noqa: F401  (registers the models)
from vmamba_zoo.demo import run_demo

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["vmamba_tiny", "vmamba_small", "vmamba_base"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--reference-dir", type=Path, default=REPO.parent / "shared" / "reference")
    args = parser.parse_args()
    ok = run_demo(args.models, args.image_size, args.batch_size, args.reference_dir)
    sys.exit(0 if ok else 1)
