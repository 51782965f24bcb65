"""Which of the CUDA extension's input checks crash the process on a GPU machine instead of raising (a probe, one
case per subprocess so a segfault ends only that case): python benchmarks/gpu_error_probe.py"""
import subprocess
import sys

CASES = {
    "fwd_u_2d": "ops.selective_scan_fwd(u[0], u[0], A, B, B, None, None, None, True, True)",
    "fwd_bad_D": "ops.selective_scan_fwd(u, u, A, B, B, torch.ones(5, device='cuda'), None, None, True, True)",
    "fwd_bad_B": "ops.selective_scan_fwd(u, u, A, B[..., :-1], B, None, None, None, True, True)",
    "bwd_bad_states": "ops.selective_scan_bwd(u, u, u, A, B, B, None, None, None, True, st[:, :, :1].contiguous())",
    "bwd_good_states": "ops.selective_scan_bwd(u, u, u, A, B, B, None, None, None, True, st)",
    "bwd_states_f16": "ops.selective_scan_bwd(u, u, u, A, B, B, None, None, None, True, st.half())",
}
SETUP = """
import torch
from vmamba_zoo.ops import cuda_backend
assert cuda_backend.load_extension()
ops = torch.ops.vmamba_zoo_cuda
u = torch.randn(2, 4, 600, device='cuda'); A = -torch.rand(4, 1, device='cuda')
B = torch.randn(2, 2, 1, 600, device='cuda')
y, st = ops.selective_scan_fwd_states(u, u, A, B, B, None, None, None, True, True)
torch.cuda.synchronize()
try:
    {case}
    torch.cuda.synchronize()
    print('returned')
except Exception as e:
    print('raised', type(e).__name__, str(e).splitlines()[0][:200])
"""
if __name__ == "__main__":
    for name, case in CASES.items():
        r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", SETUP.format(case=case)],
                           capture_output=True, text=True)
        tail = (r.stdout + r.stderr).strip().splitlines()
        print(f"{name}: rc {r.returncode}: {tail[-1] if tail else ''}", flush=True)
        if r.returncode != 0:
            print("   " + "\n   ".join(l for l in tail if "File" in l or "Fatal" in l)[:1500], flush=True)
