"""Sweep the fused SS2D CUDA kernels' work split (warps aimed for over the grid, most warps per block) on the
VMamba-T stage shapes, next to the Triton kernels and the auto path in the same process; prints fwd / bwd ms.
PYTHONPATH=. python benchmarks/ss2d_cuda_tune.py [--base] [--no-sweep]   (--base: VMamba-B's stage shapes)

The split applies to the kernels that join segments: deterministic mode's forward (swept with
VMAMBA_ZOO_SS2D_FWD_KERNEL=segments) and the backward that re-walks the forward (swept without saved states). The
defaults, the forward by direction and the backward from saved states, give each warp a whole direction."""
import argparse

import torch

from vmamba_zoo.analysis.benchmark import STAGES_TINY, _ss2d_inputs, cuda_time, environment
from vmamba_zoo.ops import ss2d_selective_scan

# (warps aimed for, most warps per block); the first is the built-in default
FWD_SPLITS = [(8192, 16), (4096, 16), (2048, 16), (8192, 8), (4096, 8), (2048, 8), (4096, 4), (1024, 16), (1, 1)]
BWD_SPLITS = [(8192, 4), (4096, 4), (8192, 2), (8192, 1), (1, 1)]


def _time(leaves, backend, save_states=None):
    y = ss2d_selective_scan(*leaves, 4, True, backend, save_states=save_states)
    dy = torch.randn_like(y)
    tf = cuda_time(lambda: ss2d_selective_scan(*leaves, 4, True, backend, save_states=save_states), 10, 3)
    tb = cuda_time(lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True), 10, 3)
    return tf * 1e3, tb * 1e3


# VMamba-B at batch 128, 224x224: dims 128..1024 (ssm_ratio 1), dt_rank dim/16
STAGES_BASE = {"B stage0 56x56": (128, 128, 56, 56), "B stage1 28x28": (128, 256, 28, 28),
               "B stage2 14x14": (128, 512, 14, 14), "B stage3 7x7": (128, 1024, 7, 7)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", action="store_true")
    parser.add_argument("--no-sweep", action="store_true", help="only the default split")
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    for name, shape in (STAGES_BASE if args.base else STAGES_TINY).items():
        leaves = [t.requires_grad_() for t in _ss2d_inputs(*shape)]
        line = [f"{b} {'%.3f/%.3f' % _time(leaves, b)}" for b in ("triton", "reference", "cuda", "auto")]
        print(f"{name}: fwd/bwd ms  " + "  ".join(line), flush=True)
        if args.no_sweep:
            continue
        for key, splits in (("FWD", FWD_SPLITS), ("BWD", BWD_SPLITS)):
            times = []
            for warps, segments in splits:
                split = {"VMAMBA_ZOO_SS2D_FWD_KERNEL": "segments", f"VMAMBA_ZOO_SS2D_{key}_WARPS": str(warps),
                         f"VMAMBA_ZOO_SS2D_{key}_SEGMENTS": str(segments)}
                with environment(split):
                    fwd, bwd = _time(leaves, "cuda", save_states=False)
                times.append((fwd if key == "FWD" else bwd, warps, segments))
                print(f"  cuda {key.lower()} warps {warps:>5} segments {segments:>2}: {times[-1][0]:.3f} ms",
                      flush=True)
            print(f"  best cuda {key.lower()}: %.3f ms (warps %d, segments %d)" % min(times), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
