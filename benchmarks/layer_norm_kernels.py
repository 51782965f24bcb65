"""Our Triton and CUDA LayerNorm forwards against torch's at VMamba-T's shapes on one GPU: time, bandwidth, correctness.

PYTHONPATH=. python benchmarks/layer_norm_kernels.py [--batch 128] [--inputs float32 float16] [--sweep]
(prints tables; commit the output with device + date)

Shapes: the channel-last maps (batch, H, W, C) of VMamba-T's four stages at 224x224, normalised over C.
Inputs float32 (the residual stream under autocast: the blocks' norms) and float16 (the scan's output: the SS2D
out_norm). Variants:
  torch fp32        F.layer_norm on the float32 input (a float16 one is cast first): float32 out
  torch fp32+cast   the same then .half(): what the Linear after it reads (two or three kernels)
  <backend> fp32    layer_norm(..., out_dtype=float32, backend=<backend>), backend triton or cuda (the forward; the
                    backward is torch's for cuda, as in auto mode, and the Triton kernel for triton)
  <backend> fp16    the same with out_dtype=float16: replaces "torch fp32+cast"
"eff GB/s" counts the bytes the fused operation must move at least (forward: read x, write y and the
per-row mean / rstd; backward adds: read x, dy, mean, rstd, write dx) over the measured time, and
"% copy" compares that with a device-to-device copy. L2 is flushed before every timed call. Each
correctness check prints a PASS or FAIL line; a failing case prints diagnostics and the run goes on
(exit status 1 at the end if anything failed).
"""
import argparse
import importlib
import sys
import traceback

import torch
import torch.nn.functional as F

import vmamba_zoo  # noqa: F401
from vmamba_zoo.analysis.benchmark import copy_bandwidth
from vmamba_zoo.analysis.benchmark import cuda_time as _cuda_time
from vmamba_zoo.ops import available_backends, layer_norm

KERNELS = "vmamba_zoo.ops.kernels.triton_layer_norm"
STAGES = {"stage0 56x56 C=96": (56, 96), "stage1 28x28 C=192": (28, 192),
          "stage2 14x14 C=384": (14, 384), "stage3 7x7 C=768": (7, 768)}
FAILURES = []


def cuda_time(fn, repeats=20, warmup=3):
    return _cuda_time(fn, repeats, warmup, flush_l2=True)  # cold cache: stage-3 tensors fit in L2


def report(ok: bool, what: str, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}")
    if not ok:
        FAILURES.append(what)


def diagnose(what: str, exc: BaseException, **tensors) -> None:
    """A failed case: the exception, the inputs, the environment, then carry on."""
    report(False, what, f"{type(exc).__name__}: {exc}")
    traceback.print_exc(file=sys.stdout)
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor):
            print(f"    {name}: shape {tuple(t.shape)} dtype {t.dtype} device {t.device} "
                  f"contiguous {t.is_contiguous()}")
    print(f"    torch {torch.__version__}, triton {_triton_version()}, backends {available_backends('layer_norm_fwd')}")
    try:  # a kernel fault is sticky: later cases will fail too, but say so instead of crashing here
        torch.cuda.synchronize()
    except Exception as sync_exc:  # noqa: BLE001
        print(f"    device error after the failure: {type(sync_exc).__name__}: {sync_exc}")


def _triton_version():
    try:
        import triton
        return triton.__version__
    except Exception as exc:  # noqa: BLE001  (diagnostics only)
        return f"unavailable ({exc})"


def make_case(batch, size, channels, seed=0, dtype=torch.float32):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = (3.0 + 2.0 * torch.randn(batch, size, size, channels, device="cuda", generator=g)).to(dtype)
    weight = 1.0 + 0.3 * torch.randn(channels, device="cuda", generator=g)
    bias = torch.randn(channels, device="cuda", generator=g)
    return x, weight, bias


def backends():
    """Our forward backends on this machine (the cuda one needs the extension built)."""
    return [b for b in ("triton", "cuda") if b in available_backends("layer_norm_fwd")]


def variants():
    """name -> (forward function of (x, weight, bias), output dtype)."""
    def torch_fp32(x, w, b):
        return F.layer_norm(x.float(), (x.shape[-1],), w, b)

    def torch_fp32_cast(x, w, b):
        return F.layer_norm(x.float(), (x.shape[-1],), w, b).half()

    def ours(out_dtype, backend):
        return lambda x, w, b: layer_norm(x, w, b, out_dtype=out_dtype, backend=backend)

    found = {"torch fp32": (torch_fp32, torch.float32), "torch fp32+cast": (torch_fp32_cast, torch.float16)}
    for backend in backends():
        for out_dtype in (torch.float32, torch.float16):
            found[f"{backend} {'fp32' if out_dtype == torch.float32 else 'fp16'}"] = (ours(out_dtype, backend), out_dtype)
    return found


def rel_err(got, want):
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def check_correctness(name, x, weight, bias):
    """Each of our backends against float64 F.layer_norm on the same inputs: forward and all gradients, both output
    dtypes; and two backward runs bitwise equal."""
    for backend in backends():
        check_backend(f"{name} {backend}", x, weight, bias, backend)


def check_backend(name, x, weight, bias, backend):
    exact = [t.double().requires_grad_() for t in (x, weight, bias)]
    y_want = F.layer_norm(exact[0], (x.shape[-1],), exact[1], exact[2])
    g = torch.Generator(device="cuda").manual_seed(1)
    dy = torch.randn(x.shape, device="cuda", generator=g)
    for out_dtype in (torch.float32, torch.float16):
        tol = 1e-5 if torch.float16 not in (x.dtype, out_dtype) else 1e-2  # dx comes back in x's dtype
        what = f"correctness {name} out {str(out_dtype).replace('torch.', '')}"
        ours = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
        try:
            y = layer_norm(*ours, out_dtype=out_dtype, backend=backend)
            dy_out = dy.to(out_dtype)
            got = torch.autograd.grad(y, ours, dy_out)
            want = torch.autograd.grad(y_want, exact, dy_out.double(), retain_graph=True)
            errors = {"y": rel_err(y, y_want)}
            errors.update({k: rel_err(a, b) for k, a, b in zip(("dx", "dweight", "dbias"), got, want)})
            detail = ", ".join(f"{k} {v:.2e}" for k, v in errors.items()) + f" (max relative error, limit {tol})"
            report(y.dtype == out_dtype and max(errors.values()) < tol, what, detail)
            again = torch.autograd.grad(layer_norm(*ours, out_dtype=out_dtype, backend=backend), ours, dy_out)
            report(all(torch.equal(a, b) for a, b in zip(got, again)), f"determinism {name} out "
                   f"{str(out_dtype).replace('torch.', '')}", "two backward runs bitwise equal")
        except Exception as exc:  # noqa: BLE001  (report and go on)
            diagnose(what, exc, x=x, weight=weight, bias=bias)


def bench(batch, copy_gbs, input_dtype):
    in_bytes = torch.empty(0, dtype=input_dtype).element_size()
    print(f"\nLayerNorm over C of (batch {batch}, H, W, C) {input_dtype}; copy bandwidth {copy_gbs:.0f} GB/s")
    print(f"{'shape':<20}{'variant':<17}{'fwd ms':>9}{'eff GB/s':>10}{'% copy':>8}"
          f"{'fwd+bwd ms':>12}{'eff GB/s':>10}{'% copy':>8}")
    for name, (size, channels) in STAGES.items():
        try:
            x, weight, bias = make_case(batch, size, channels, dtype=input_dtype)
        except torch.OutOfMemoryError as exc:
            diagnose(f"allocate {name}", exc)
            continue
        check_correctness(name, x, weight, bias)
        rows = x.numel() // channels
        for variant, (forward, out_dtype) in variants().items():
            out_bytes = torch.empty(0, dtype=out_dtype).element_size()
            fwd_bytes = x.numel() * (in_bytes + out_bytes) + rows * 8
            bwd_bytes = x.numel() * (in_bytes + out_bytes + in_bytes) + rows * 8
            xg, wg, bg = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
            dy = torch.randn(x.shape, device="cuda", dtype=out_dtype)

            def fwd():
                with torch.no_grad():
                    forward(x, weight, bias)

            def fwd_bwd():
                torch.autograd.grad(forward(xg, wg, bg), (xg, wg, bg), dy)

            try:
                t_fwd, t_both = cuda_time(fwd), cuda_time(fwd_bwd)
            except Exception as exc:  # noqa: BLE001
                diagnose(f"timing {name} {variant}", exc, x=x, dy=dy)
                continue
            g_fwd, g_both = fwd_bytes / t_fwd / 1e9, (fwd_bytes + bwd_bytes) / t_both / 1e9
            print(f"{name:<20}{variant:<17}{t_fwd * 1e3:>9.3f}{g_fwd:>10.0f}{100 * g_fwd / copy_gbs:>7.0f}%"
                  f"{t_both * 1e3:>12.3f}{g_both:>10.0f}{100 * g_both / copy_gbs:>7.0f}%")
        torch.cuda.empty_cache()


def sweep(batch, copy_gbs):
    """Tile sizes (and backward programs per SM) of our kernels, called directly: float32 in, float16 out."""
    kernels = importlib.import_module(KERNELS)
    print(f"\ntile sweep (defaults: fwd tile {kernels.FWD_TILE_ELEMENTS}, bwd tile {kernels.BWD_TILE_ELEMENTS}, "
          f"{kernels.BWD_PROGRAMS_PER_SM} bwd programs per SM); float32 in, float16 out")
    print(f"{'shape':<20}{'kernel':<8}{'tile':>7}{'prog/SM':>9}{'ms':>9}{'eff GB/s':>10}{'% copy':>8}")
    for name, (size, channels) in STAGES.items():
        x, weight, bias = make_case(batch, size, channels)
        rows = x.numel() // channels
        fwd_bytes = x.numel() * 6 + rows * 8
        bwd_bytes = x.numel() * 10 + rows * 8
        try:
            y, mean, rstd = kernels.layer_norm_fwd(x, weight, bias, 1e-5, torch.float16)
            dy = torch.randn_like(y)
            for tile in (1024, 2048, 4096, 8192, 16384):
                t = cuda_time(lambda: kernels.layer_norm_fwd(x, weight, bias, 1e-5, torch.float16, tile))
                gbs = fwd_bytes / t / 1e9
                print(f"{name:<20}{'fwd':<8}{tile:>7}{'-':>9}{t * 1e3:>9.3f}{gbs:>10.0f}{100 * gbs / copy_gbs:>7.0f}%")
            for tile in (1024, 2048, 4096, 8192):
                for per_sm in (4, 8, 16, 32):
                    t = cuda_time(lambda: kernels.layer_norm_bwd(dy, x, weight, bias, mean, rstd, tile, per_sm))
                    gbs = bwd_bytes / t / 1e9
                    print(f"{name:<20}{'bwd':<8}{tile:>7}{per_sm:>9}{t * 1e3:>9.3f}{gbs:>10.0f}"
                          f"{100 * gbs / copy_gbs:>7.0f}%")
        except Exception as exc:  # noqa: BLE001
            diagnose(f"sweep {name}", exc, x=x)
        torch.cuda.empty_cache()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--inputs", nargs="+", default=["float32", "float16"], choices=["float32", "float16"])
    parser.add_argument("--sweep", action="store_true", help="also time other tile sizes of our Triton kernels")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("FAIL no CUDA device: this benchmark needs a GPU")
        return 1
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {_triton_version()}, "
          f"layer_norm backends {available_backends('layer_norm_fwd')}")
    copy_gbs = copy_bandwidth()
    for input_dtype in args.inputs:
        bench(args.batch, copy_gbs, getattr(torch, input_dtype))
    if args.sweep:
        sweep(args.batch, copy_gbs)
    print(f"\n{len(FAILURES)} FAIL" + (": " + "; ".join(FAILURES) if FAILURES else ""))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
