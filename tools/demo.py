#!/usr/bin/env python
"""`make demo`: digits -> tools/train.py -> tools/validate.py on the CPU, then params / GMACs and throughput
of VMamba-T/S/B here, then parity with the original release."""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this clone's package first, whatever the venv's editable install points to

from vmamba_zoo.demo import run_demo  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["vmamba_tiny", "vmamba_small", "vmamba_base"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=2, help="throughput batch")
    parser.add_argument("--epochs", type=int, help="digits training epochs (default: the demo config's)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "work_dirs" / "demo")
    parser.add_argument("--skip-train", action="store_true", help="only the tables and the parity check")
    parser.add_argument("--reference-dir", type=Path, default=REPO.parent / "shared" / "reference")
    args = parser.parse_args()
    ok = run_demo(args.models, args.image_size, args.batch_size, args.reference_dir, args.work_dir, args.epochs,
                  args.skip_train)
    sys.exit(0 if ok else 1)
