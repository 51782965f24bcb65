"""What the column walks cost the fused SS2D CUDA forward: the op at VMamba-T stage shapes with 1 direction
(row-major) at 4x the batch, 2 (row-major and reversed) at 2x, and 4 (plus the two column-major walks), so that
every case runs the same grid of one-warp blocks over the same number of steps. Equal times: a column walk, whose
reads jump W pixels a step, costs what a row walk does; a slower K4: the strided reads are what bounds the kernel.
The op zero-fills its fp32 output first: K1 and K2 fill 4x and 2x the bytes of K4 (about 0.04 ms per 154 MB).

    PYTHONPATH=. python benchmarks/ss2d_directions_cost.py      (on a CUDA machine)
"""
import torch

from vmamba_zoo.analysis.benchmark import STAGES_TINY, _ss2d_inputs, cuda_time
from vmamba_zoo.ops import cuda_backend


def main() -> None:
    assert cuda_backend.load_extension(), cuda_backend.extension_status()
    fwd_op = torch.ops.vmamba_zoo.ss2d_scan_fwd
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}; fp16, inference forward, ms")
    for name, shape in list(STAGES_TINY.items())[:3]:
        cells = {}
        for k in (1, 2, 4):
            batch, channels, h, w = shape
            args = _ss2d_inputs(batch * 4 // k, channels, h, w, directions=k)
            cells[k] = cuda_time(lambda: fwd_op(*args, k, True, "cuda", False), 20, 5) * 1e3
            del args
        print(f"{name} {tuple(shape)}: K1 x4 batch {cells[1]:.3f}  K2 x2 batch {cells[2]:.3f}  K4 {cells[4]:.3f}  "
              f"K4 / K1 {cells[4] / cells[1]:.2f}")
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
