"""Foundation check on a GPU: the reference ops on CUDA agree with float64 CPU, and where the pure-PyTorch
path stands against timm's Swin-T / ConvNeXt-T in the same process (the starting point for the kernel work).

Run on the device machine:  PYTHONPATH=. python benchmarks/foundation_gpu_check.py
"""
import time

import timm
import torch

import vmamba_zoo  # noqa: F401
from vmamba_zoo.ops import selective_scan, cross_scan, cross_merge
from vmamba_zoo.ops.reference import selective_scan_naive


def check_ops():
    torch.manual_seed(0)
    b, k, d, n, L = 2, 4, 8, 4, 50
    f64 = dict(dtype=torch.float64)
    u, delta, z = (torch.randn(b, k * d, L, **f64) for _ in range(3))
    A = -torch.exp(torch.randn(k * d, n, **f64))
    B, C = torch.randn(b, k, n, L, **f64), torch.randn(b, k, n, L, **f64)
    D, bias = torch.randn(k * d, **f64), torch.randn(k * d, **f64)
    ref_in = [t.clone().requires_grad_() for t in (u, delta, A, B, C, D, z, bias)]
    y_ref = selective_scan_naive(*ref_in, delta_softplus=True)
    g = torch.randn_like(y_ref)
    grads_ref = torch.autograd.grad(y_ref, ref_in, g)
    for dtype, tol in ((torch.float32, 1e-4), (torch.float16, 3e-2), (torch.bfloat16, 1e-1)):
        ins = [t.to("cuda", dtype if i not in (2, 5, 7) else torch.float32).requires_grad_()
               for i, t in enumerate((u, delta, A, B, C, D, z, bias))]
        y = selective_scan(*ins[:6], z=ins[6], delta_bias=ins[7], delta_softplus=True)
        grads = torch.autograd.grad(y, ins, g.to("cuda", y.dtype))
        err = (y.double().cpu() - y_ref).abs().max().item() / y_ref.abs().max().item()
        gerr = max((a.double().cpu() - r).abs().max().item() / r.abs().max().item() for a, r in zip(grads, grads_ref))
        print(f"selective_scan cuda {str(dtype):15s} fwd rel err {err:.2e}  bwd rel err {gerr:.2e}  "
              f"{'ok' if err < tol and gerr < tol * 10 else 'FAIL'}")
    x = torch.randn(2, 5, 7, 9, device="cuda")
    for dirs in (1, 2, 4):
        ys = cross_scan(x, dirs)
        w = torch.randn_like(ys)
        lhs, rhs = (ys * w).sum().item(), (x * cross_merge(w, 7, 9, dirs)).sum().item()
        print(f"cross_scan/merge cuda K={dirs} adjoint |diff| {abs(lhs - rhs):.2e}")


def bench(model, batch, res, train, steps=10, warmup=3):
    model = model.cuda().train(train)
    x = torch.randn(batch, 3, res, res, device="cuda")
    scaler = torch.amp.GradScaler("cuda")
    torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16):
            if train:
                loss = model(x).float().mean()
                scaler.scale(loss).backward()
                model.zero_grad(set_to_none=True)
            else:
                with torch.no_grad():
                    model(x)
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start), torch.cuda.max_memory_allocated() / 2 ** 30


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "timm", timm.__version__)
    check_ops()
    print("\nbatch 64, 224x224, fp16 autocast (reference ops: pure PyTorch, no kernels yet)")
    print(f"{'model':<34}{'infer img/s':>12}{'train img/s':>12}{'train GiB':>10}")
    for name in ("vmamba_tiny", "swin_tiny_patch4_window7_224", "convnext_tiny"):
        infer, _ = bench(timm.create_model(name), 64, 224, train=False)
        train, mem = bench(timm.create_model(name), 64, 224, train=True)
        print(f"{name:<34}{infer:>12.0f}{train:>12.0f}{mem:>10.1f}")
