#!/usr/bin/env python
"""Test a VMamba detector (mmdet) with mmengine's Runner.

    python tools/det_test.py CONFIG CHECKPOINT [--out OUT] [--show-dir DIR] [--work-dir DIR] [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]

Several GPUs / nodes: tools/dist_launch.sh tools/det_test.py CONFIG GPUS [args] (see configs/README.md).
"""
import sys

from vmamba_zoo.mm.runner import test_main


def main(argv=None):
    return test_main(argv, task="det")


if __name__ == "__main__":
    main(sys.argv[1:])
