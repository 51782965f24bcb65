"""Sweep the fused SS2D kernels' tile (rows = channels x states per program, steps per chunk, warps) on the
VMamba-T stage shapes; prints fwd / bwd ms per setting. PYTHONPATH=. python benchmarks/ss2d_tune.py"""
import sys

import torch

from vmamba_zoo.analysis.benchmark import STAGES_TINY, _ss2d_inputs, cuda_time
from vmamba_zoo.ops import ss2d_selective_scan
from vmamba_zoo.ops.kernels import triton_ss2d as kern


# (rows, block_l, num_warps); the default first
SETTINGS = [(16, 32, 4), (16, 32, 2), (16, 64, 4), (32, 32, 4), (16, 16, 2), (8, 32, 2), (8, 32, 1), (8, 64, 2),
            (8, 16, 1), (4, 32, 1), (4, 64, 1), (4, 64, 2)]


def main(settings=SETTINGS, stages=("T stage0 56x56", "T stage2 14x14")):
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    default = dict(kern.SS2D_TILE)
    cases = {name: [t.requires_grad_() for t in _ss2d_inputs(*STAGES_TINY[name])] for name in stages}
    best = {}
    for rows, block_l, warps in settings:
        kern.SS2D_TILE.update(rows=rows, block_l=block_l, num_warps=warps)
        line = []
        for name, leaves in cases.items():
            y = ss2d_selective_scan(*leaves, 4, True, "triton")
            dy = torch.randn_like(y)
            tf = cuda_time(lambda: ss2d_selective_scan(*leaves, 4, True, "triton"), 5, 2)
            tb = cuda_time(lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True), 5, 2)
            line.append(f"{name.split()[1]} {tf * 1e3:6.3f}/{tb * 1e3:6.3f}")
            for key, t in (("fwd", tf), ("bwd", tb)):
                if t < best.get((name, key), (1e9,))[0]:
                    best[(name, key)] = (t, rows, block_l, warps)
        print(f"rows {rows:>2} block_l {block_l:>3} warps {warps}  " + "  ".join(line), flush=True)
    kern.SS2D_TILE.update(default)
    print("best (ms, rows, block_l, warps):")
    for (name, key), (t, *cfg) in sorted(best.items()):
        print(f"  {name} {key}: {t * 1e3:.3f} ms {cfg}")


if __name__ == "__main__":
    main(stages=tuple(sys.argv[1:]) or ("T stage0 56x56", "T stage2 14x14"))
