"""Run the plain selective-scan forward and backward ops a few times each, for Nsight Compute to profile one launch of
each (benchmarks/scan_ncu.sh): at VMamba-T's stage-0 shape (d_state 1, batch 128), or with SCAN_NCU_SHAPE=vanilla at
the vanilla stage-0 shape (d_state 16, batch 32, where "auto" runs the lanes forward with a pair of lanes a channel);
fp16 activations, fp32 dout."""
import os

import torch

from vmamba_zoo.analysis.benchmark import SCAN_STAGE0_T, SCAN_STAGE0_VANILLA, scan_speed_inputs
from vmamba_zoo.ops import cuda_backend

SHAPES = {"t": SCAN_STAGE0_T, "vanilla": SCAN_STAGE0_VANILLA}

assert cuda_backend.load_extension(), cuda_backend.extension_status()
u, delta, A, B, C, D, bias = [t.detach() for t in scan_speed_inputs(*SHAPES[os.environ.get("SCAN_NCU_SHAPE", "t")])]
dout = torch.randn(u.shape, device=u.device)
with torch.no_grad():
    for _ in range(4):
        torch.ops.vmamba_zoo_cuda.selective_scan_fwd(u, delta, A, B, C, D, None, bias, True, True)
    for _ in range(4):
        torch.ops.vmamba_zoo_cuda.selective_scan_bwd(dout, u, delta, A, B, C, D, None, bias, True)
torch.cuda.synchronize()
