"""The SS2D forward with and without saved states (the state before every 8th step, for the CUDA backward), per
backend and Triton chunk length, on the VMamba-T (and --base: -B) stage shapes; wall ms of one call, CUDA events.
PYTHONPATH=. python benchmarks/ss2d_states_fwd.py [--base]"""
import sys

import torch

from vmamba_zoo.analysis.benchmark import STAGES_TINY, _ss2d_inputs, cuda_time
from vmamba_zoo.ops import ss2d_selective_scan
from vmamba_zoo.ops.kernels import triton_ss2d

sys.path.insert(0, "benchmarks")
from ss2d_cuda_tune import STAGES_BASE  # noqa: E402


def main():
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    default_block = triton_ss2d.SS2D_TILE["block_l"]
    for name, shape in (STAGES_BASE if "--base" in sys.argv else STAGES_TINY).items():
        leaves = [t.requires_grad_() for t in _ss2d_inputs(*shape)]
        cells = []
        for backend in ("triton", "cuda"):
            blocks = (default_block, 8) if backend == "triton" else (None,)
            for block in blocks:
                if block:
                    triton_ss2d.SS2D_TILE["block_l"] = block
                for states in (False, True):
                    ms = 1e3 * cuda_time(lambda: ss2d_selective_scan(*leaves, 4, True, backend, save_states=states))
                    cells.append(f"{backend}{'/' + str(block) if block else ''}{' +states' if states else ''} "
                                 f"{ms:.3f}")
            triton_ss2d.SS2D_TILE["block_l"] = default_block
        print(f"{name}: fwd ms  " + "  ".join(cells), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
