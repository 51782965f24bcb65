"""Run the plain selective-scan forward and backward ops at VMamba-T's stage-0 shape (d_state 1, batch 128, fp16
activations, fp32 dout) a few times each, for Nsight Compute to profile one launch of each
(benchmarks/scan_ncu.sh)."""
import torch

from vmamba_zoo.analysis.benchmark import scan_speed_inputs
from vmamba_zoo.ops import cuda_backend

assert cuda_backend.load_extension(), cuda_backend.extension_status()
u, delta, A, B, C, D, bias = [t.detach() for t in scan_speed_inputs(128, 4, 96, 1, 3136)]
dout = torch.randn(u.shape, device=u.device)
with torch.no_grad():
    for _ in range(4):
        torch.ops.vmamba_zoo_cuda.selective_scan_fwd(u, delta, A, B, C, D, None, bias, True, True)
    for _ in range(4):
        torch.ops.vmamba_zoo_cuda.selective_scan_bwd(dout, u, delta, A, B, C, D, None, bias, True)
torch.cuda.synchronize()
