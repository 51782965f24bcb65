"""Sweep the fused SS2D kernels' tile (rows = channels x states per program, steps per tile, tiles per segment,
warps) on VMamba-T stage shapes; prints fwd / bwd ms per setting, and the unfused composition ("reference")
for comparison. PYTHONPATH=. python benchmarks/ss2d_tune.py ["T stage0 56x56" ...]"""
import sys

import torch

from vmamba_zoo.analysis.benchmark import STAGES_TINY, _ss2d_inputs, cuda_time
from vmamba_zoo.ops import ss2d_selective_scan
from vmamba_zoo.ops.kernels import triton_ss2d as kern


# SS2D_TILE overrides; the default first
SETTINGS = [{}, dict(dot_min_rank=1), dict(dot_min_rank=100), dict(rows=16), dict(rows=64), dict(seg_steps=8),
            dict(seg_steps=2), dict(num_warps=2)]


def main(settings=SETTINGS, stages=("T stage0 56x56", "T stage2 14x14")):
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    default = dict(kern.SS2D_TILE)
    cases = {name: [t.requires_grad_() for t in _ss2d_inputs(*STAGES_TINY[name])] for name in stages}
    best = {}
    for name, leaves in cases.items():
        y = ss2d_selective_scan(*leaves, 4, True, "reference")
        dy = torch.randn_like(y)
        tf = cuda_time(lambda: ss2d_selective_scan(*leaves, 4, True, "reference"), 5, 2)
        tb = cuda_time(lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True), 5, 2)
        print(f"composition {name}: {tf * 1e3:6.3f}/{tb * 1e3:6.3f}", flush=True)
    for setting in settings:
        kern.SS2D_TILE.update(default)
        kern.SS2D_TILE.update(setting)
        line = []
        for name, leaves in cases.items():
            y = ss2d_selective_scan(*leaves, 4, True, "triton")
            dy = torch.randn_like(y)
            tf = cuda_time(lambda: ss2d_selective_scan(*leaves, 4, True, "triton"), 5, 2)
            tb = cuda_time(lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True), 5, 2)
            line.append(f"{name.split()[1]} {tf * 1e3:6.3f}/{tb * 1e3:6.3f}")
            for key, t in (("fwd", tf), ("bwd", tb)):
                if t < best.get((name, key), (1e9,))[0]:
                    best[(name, key)] = (t, setting)
        print(f"{str(setting or 'default'):36s} " + "  ".join(line), flush=True)
    kern.SS2D_TILE.update(default)
    print(f"default {default}; best (ms, override):")
    for (name, key), (t, *cfg) in sorted(best.items()):
        print(f"  {name} {key}: {t * 1e3:.3f} ms {cfg}")


if __name__ == "__main__":
    main(stages=tuple(sys.argv[1:]) or tuple(STAGES_TINY))
