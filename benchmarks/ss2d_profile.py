"""Where the SS2D scan's GPU time goes, per backend and VMamba-T stage: CUDA time per kernel of one forward and
one backward (torch.profiler, 5 calls averaged). PYTHONPATH=. python benchmarks/ss2d_profile.py [backend ...]"""
import sys

import torch

from vmamba_zoo.analysis.benchmark import STAGES_TINY, _ss2d_inputs, kernel_times
from vmamba_zoo.ops import ss2d_selective_scan

CALLS = 5


def main(backends=("cuda", "auto")):
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    for name, shape in STAGES_TINY.items():
        leaves = [t.requires_grad_() for t in _ss2d_inputs(*shape)]
        for backend in backends:
            y = ss2d_selective_scan(*leaves, 4, True, backend)
            dy = torch.randn_like(y)
            for what, fn in (("fwd", lambda: ss2d_selective_scan(*leaves, 4, True, backend)),
                             ("bwd", lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True))):
                rows = sorted(kernel_times(fn, CALLS, warmup=1).items(), key=lambda kv: -kv[1])
                print(f"{name} [{backend}] {what}: {sum(t for _, t in rows) / 1e3:.3f} ms of kernels", flush=True)
                for kernel, t in rows[:8]:
                    print(f"    {t / 1e3:7.3f} ms  {kernel[:110]}")
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or ("cuda", "auto"))
