#!/usr/bin/env python
"""Test a VMamba segmentor (mmseg) with mmengine's Runner.

    python tools/seg_test.py CONFIG CHECKPOINT [--out OUT] [--show-dir DIR] [--work-dir DIR] [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]

Several GPUs / nodes: tools/dist_launch.sh tools/seg_test.py CONFIG GPUS [args] (see configs/README.md).
"""
import sys

from vmamba_zoo.mm.runner import test_main


def main(argv=None):
    return test_main(argv, task="seg")


if __name__ == "__main__":
    main(sys.argv[1:])
