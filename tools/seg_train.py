#!/usr/bin/env python
"""Train a VMamba segmentor (mmseg) with mmengine's Runner.

    python tools/seg_train.py CONFIG [--work-dir DIR] [--cfg-options k=v ...] [--resume [auto|PATH]] [--amp] [--launcher {none,pytorch,slurm,mpi}]

Several GPUs / nodes: tools/dist_launch.sh tools/seg_train.py CONFIG GPUS [args] (see configs/README.md).
"""
import sys

from vmamba_zoo.mm.runner import train_main


def main(argv=None):
    return train_main(argv, task="seg")


if __name__ == "__main__":
    main(sys.argv[1:])
