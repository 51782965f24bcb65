"""One fused SS2D CUDA forward + backward at a VMamba-T stage shape, for Nsight Compute:
ncu --clock-control none --kernel-name regex:ss2d_bwd --launch-skip 1 --launch-count 1 --section WarpStateStats \
    python benchmarks/ss2d_ncu.py 2        (the argument: stage index 0-3; runs two calls, the first as warm-up)"""
import sys

import torch

from vmamba_zoo.analysis.benchmark import STAGES_TINY, _ss2d_inputs
from vmamba_zoo.ops import ss2d_selective_scan


def main(stage: int, backend: str = "cuda"):
    shape = list(STAGES_TINY.values())[stage]
    leaves = [t.requires_grad_() for t in _ss2d_inputs(*shape)]
    for _ in range(2):
        y = ss2d_selective_scan(*leaves, 4, True, backend)
        torch.autograd.grad(y, leaves, torch.randn_like(y))
    torch.cuda.synchronize()
    print(f"ran stage {stage} {shape} [{backend}] twice")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2, sys.argv[2] if len(sys.argv) > 2 else "cuda")
