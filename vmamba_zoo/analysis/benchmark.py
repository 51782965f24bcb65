"""Same-process speed comparison of VMamba against timm's Swin and ConvNeXt, kernel microbenchmarks
against the measured copy bandwidth, and a per-kernel GPU time profile (``tools/benchmark.py``).

Model settings follow the published side-by-side numbers (../shared/anchors): batch 128, 224x224, fp16
autocast; inference = eval + no_grad; train = forward + GradScaler-scaled backward, no optimizer step.
The original release cannot run in this process (its own CUDA extension), so its numbers are the anchor
table's, measured on an nvidia-h200, and labelled as such wherever they appear.
"""
from __future__ import annotations

import contextlib
import os
import re
import statistics
from collections import defaultdict
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import torch

from .throughput import measure_throughput

__all__ = ["SUITES", "ORIGINAL_H200", "model_benchmarks", "model_table", "copy_bandwidth", "kernel_benchmarks",
           "kernel_table", "profile_step", "profile_table", "environment"]

SUITES = {
    "tiny": ("vmamba_tiny", "swin_tiny_patch4_window7_224", "convnext_tiny"),
    "small": ("vmamba_small", "swin_small_patch4_window7_224", "convnext_small"),
    "base": ("vmamba_base", "swin_base_patch4_window7_224", "convnext_base"),
}
# the original release with its CUDA kernel: (infer img/s, train img/s, train peak GiB), nvidia-h200,
# batch 128, fp16 autocast (../shared/anchors/peer-baseline-h200.md, 2026-11-22)
ORIGINAL_H200 = {"tiny": (3098, 1172, 12.0), "small": (1660, 590, 22.2), "base": (1322, 464, 29.6)}


def model_benchmarks(sizes: Sequence[str] = ("tiny",), batch_size: int = 128, img_size: int = 224,
                     dtype: str = "fp16", warmup: int = 5, iters: int = 20, compile: bool = False,
                     cuda_graph: bool = False, device: Optional[str] = None,
                     log: Callable[[str], None] = print, compile_no_layout_opt: bool = False,
                     compile_cuda_graphs: bool = False, compile_baselines: bool = False) -> List[Dict[str, Any]]:
    """One row per (model, variant): img/s for inference and training, training peak memory.

    Variants of ours: "eager", plus "compile" (torch.compile of the whole model) and "cuda graph"
    (inference replayed from a captured graph; training column repeats eager) when asked for.
    ``compile_no_layout_opt`` adds "compile, no layout opt": inductor's layout optimization off. With convolutions in
    a graph it gives 4D tensors near them channels-last strides for their own dims; the models keep tokens between
    convolutions so that it costs nothing (benchmarks/benchmark_h200_2026-12-03_session7.md).
    ``compile_cuda_graphs`` adds "compile, CUDA graphs": torch.compile's mode "reduce-overhead", inference and training
    replayed from CUDA graphs (at batch 128 an H200 finishes a VMamba-T training step's kernels before the host has
    launched them: benchmarks/host_overhead_train_h200_2026-12-04.txt). ``compile_baselines`` runs the compile
    variants asked for on Swin and ConvNeXt too, so each variant has a same-variant Swin to compare with.
    """
    import timm

    import vmamba_zoo.models  # noqa: F401  (registers our names)
    rows = []
    for size in sizes:
        if size not in SUITES:
            raise ValueError(f"unknown size {size!r}; choose from {sorted(SUITES)}")
        for name in SUITES[size]:
            variants = [("eager", {})]
            if name.startswith("vmamba") or compile_baselines:
                variants += [("compile", {"compile": True})] if compile else []
                variants += ([("compile, CUDA graphs", {"compile_mode": "reduce-overhead"})]
                             if compile_cuda_graphs else [])
            if name.startswith("vmamba"):
                variants += ([("compile, no layout opt", {"compile": True,
                                                          "compile_options": {"layout_optimization": False}})]
                             if compile_no_layout_opt else [])
                variants += [("cuda graph", {"cuda_graph": True})] if cuda_graph else []
            for label, opts in variants:
                common = dict(batch_size=batch_size, img_size=img_size, dtype=dtype, device=device, warmup=warmup,
                              iters=iters, train_step="scaler")
                infer = measure_throughput(timm.create_model(name), train=False, **common, **opts)
                train_opts = {k: v for k, v in opts.items() if k != "cuda_graph"}
                train = (measure_throughput(timm.create_model(name), train=True, **common, **train_opts)
                         if label != "cuda graph" else None)
                row = {"size": size, "model": name, "variant": label, "infer": infer["img_per_s"],
                       "train": None if train is None else train["img_per_s"],
                       "train_gib": None if train is None else (train["peak_memory"] or 0) / 2 ** 30,
                       "compile_s": infer["compile_seconds"], "device": infer["device"],
                       "memory_kind": None if train is None else train["memory_kind"]}
                rows.append(row)
                log(f"  measured {name} [{label}]: infer {row['infer']:.0f} img/s"
                    + ("" if train is None else f", train {row['train']:.0f} img/s, {row['train_gib']:.1f} GiB"))
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
    return rows


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def model_table(rows: List[Dict[str, Any]]) -> str:
    """Markdown table with ratios to eager Swin of the same size (same run), to Swin of the same size and variant
    when that was measured (same run), and to the original (anchor numbers)."""
    swin = {(r["size"], r["variant"]): r for r in rows if r["model"].startswith("swin")}
    lines = ["| model | variant | infer img/s | train img/s | train GiB | infer / swin | train / swin "
             "| infer / swin, same variant | train / swin, same variant | infer / original* | train / original* |",
             "|" + "---|" * 11]
    for r in rows:
        ref, orig = swin.get((r["size"], "eager")), ORIGINAL_H200.get(r["size"])
        same = swin.get((r["size"], r["variant"])) if r["variant"] != "eager" else None
        ours = r["model"].startswith("vmamba")

        def ratio(key, base):
            return None if base is None or r[key] is None or not base[key] else r[key] / base[key]
        lines.append(" | ".join([
            f"| {r['model']}", r["variant"], _fmt(r["infer"], ".0f"), _fmt(r["train"], ".0f"),
            _fmt(r["train_gib"], ".1f"),
            _fmt(ratio("infer", ref), ".2f"), _fmt(ratio("train", ref), ".2f"),
            _fmt(ratio("infer", same), ".2f"), _fmt(ratio("train", same), ".2f"),
            _fmt(ratio("infer", orig and {"infer": orig[0]}) if ours else None, ".2f"),
            _fmt(ratio("train", orig and {"train": orig[1]}) if ours else None, ".2f")]) + " |")
    kinds = sorted({r["memory_kind"] for r in rows if r.get("memory_kind")})
    if kinds:
        lines.append("train GiB: " + "; ".join(kinds))
    lines.append("* original = the original release's numbers from ../shared/anchors (nvidia-h200, same settings), "
                 "not measured in this process; " + ", ".join(
                     f"{k}: {v[0]}/{v[1]} img/s, {v[2]} GiB" for k, v in ORIGINAL_H200.items()))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- kernels
@contextlib.contextmanager
def environment(settings: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block and restore them after (the CUDA kernels' knobs, such as
    VMAMBA_ZOO_SS2D_FWD_KERNEL, are read at each call, so benchmarks can compare variants in one process)."""
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_L2_FLUSH: Dict[str, Any] = {}


def cuda_time(fn: Callable[[], Any], repeats: int = 10, warmup: int = 3, flush_l2: bool = False) -> float:
    """Median seconds of ``fn`` between CUDA events; ``flush_l2`` overwrites 256 MiB before each call
    (cold-cache timing: small tensors would otherwise sit in the H200's 60 MB L2)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if flush_l2:
            _L2_FLUSH.setdefault("buffer", torch.empty(256 * 2 ** 20, dtype=torch.int8, device="cuda")).zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def copy_bandwidth(mib: int = 512) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + written)."""
    x = torch.randn(mib * 2 ** 20 // 4, device="cuda")
    y = torch.empty_like(x)
    return 2 * x.numel() * 4 / cuda_time(lambda: y.copy_(x)) / 1e9


def scan_inputs(batch: int, groups: int, group_size: int, d_state: int, length: int, seed: int = 0,
                positive_delta: bool = False) -> Dict[str, torch.Tensor]:
    """Random selective-scan inputs, float64 on the CPU (tests cast and move them): u, delta (batch, channels, L),
    A (channels, N) < 0, B, C (batch, groups, N, L), D, z, delta_bias; ``positive_delta`` for runs without
    softplus (decays must stay below 1)."""
    g = torch.Generator().manual_seed(seed)
    f = dict(dtype=torch.float64, generator=g)
    channels = groups * group_size
    u, delta = torch.randn(batch, channels, length, **f), 0.5 * torch.randn(batch, channels, length, **f)
    return dict(u=u, delta=delta.abs() if positive_delta else delta, A=-torch.exp(torch.randn(channels, d_state, **f)),
                B=torch.randn(batch, groups, d_state, length, **f), C=torch.randn(batch, groups, d_state, length, **f),
                D=torch.randn(channels, **f), z=torch.randn(batch, channels, length, **f),
                delta_bias=0.3 * torch.randn(channels, **f))


def scan_speed_inputs(batch: int, groups: int, group_size: int, d_state: int, length: int,
                      act_dtype: torch.dtype = torch.float16) -> List[torch.Tensor]:
    """(u, delta, A, B, C, D, delta_bias) on CUDA, activations in ``act_dtype``, parameters float32, with grad."""
    data = scan_inputs(batch, groups, group_size, d_state, length)
    params = ("A", "D", "delta_bias")
    return [data[k].to("cuda", torch.float32 if k in params else act_dtype).requires_grad_()
            for k in ("u", "delta", "A", "B", "C", "D", "delta_bias")]


# The plain scan's benchmark shapes, (batch, groups, group_size, d_state, length) as scan_speed_inputs takes them:
# VMamba-T's stage 0 (d_state 1, batch 128) and the vanilla release's (d_state 16, batch 32), both 56x56
SCAN_STAGE0_T = (128, 4, 96, 1, 3136)
SCAN_STAGE0_VANILLA = (32, 4, 192, 16, 3136)

# VMamba-T stage shapes at batch 128, 224x224 (d_inner = dim with ssm_ratio 1.0, d_state 1, dt_rank dim/16)
STAGES_TINY = {"T stage0 56x56": (128, 96, 56, 56), "T stage1 28x28": (128, 192, 28, 28),
               "T stage2 14x14": (128, 384, 14, 14), "T stage3 7x7": (128, 768, 7, 7)}


def _ss2d_inputs(batch, channels, height, width, d_state=1, directions=4, dtype=torch.float16):
    import math
    dev, length, rank = "cuda", height * width, math.ceil(channels / 16)
    g = torch.Generator(device=dev).manual_seed(0)
    rnd = lambda *s, dt=dtype: torch.randn(*s, device=dev, generator=g).to(dt)  # noqa: E731
    x = rnd(batch, height, width, channels)
    dts = rnd(batch, directions, rank, length)
    weight = rnd(directions, channels, rank, dt=torch.float32) * rank ** -0.5
    bias = rnd(directions * channels, dt=torch.float32) * 0.5 - 4.0
    A = -torch.exp(rnd(directions * channels, d_state, dt=torch.float32))
    Bs, Cs = rnd(batch, directions, d_state, length), rnd(batch, directions, d_state, length)
    Ds = rnd(directions * channels, dt=torch.float32)
    return [x, dts, weight, bias, A, Bs, Cs, Ds]


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def kernel_benchmarks(stages: Optional[Dict[str, tuple]] = None, log: Callable[[str], None] = print
                      ) -> List[Dict[str, Any]]:
    """ms and GB/s per op and backend on the VMamba-T stage shapes (fp16 activations, fp32 SSM parameters).

    GB/s counts the bytes the op must move at least (its inputs read once, its outputs written once), so
    "% copy" compares a kernel with the floor set by the measured copy bandwidth.
    """
    from ..ops import available_backends, cross_merge, cross_scan, ss2d_selective_scan

    stages = stages or STAGES_TINY
    copy_gbs = copy_bandwidth()
    rows = [{"op": "copy", "case": "512 MiB fp32", "backend": "torch", "ms": None, "gbs": copy_gbs}]
    for case, (batch, channels, height, width) in stages.items():
        x, dts, weight, bias, A, Bs, Cs, Ds = _ss2d_inputs(batch, channels, height, width)
        leaves = [t.requires_grad_() for t in (x, dts, weight, bias, A, Bs, Cs, Ds)]
        for backend in available_backends("ss2d_scan_fwd"):
            def fwd():
                return ss2d_selective_scan(*leaves, 4, True, backend)
            y = fwd()
            dy = torch.randn_like(y)
            fwd_bytes = _nbytes(x, dts, Bs, Cs, y)
            bwd_bytes = _nbytes(dy, x, dts, Bs, Cs) + _nbytes(x, dts, Bs, Cs)  # reads, then dx, ddts, dBs, dCs
            t_f = cuda_time(fwd)
            t_b = cuda_time(lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True))
            rows.append({"op": "ss2d scan fwd", "case": case, "backend": backend, "ms": t_f * 1e3,
                         "gbs": fwd_bytes / t_f / 1e9})
            rows.append({"op": "ss2d scan bwd", "case": case, "backend": backend, "ms": t_b * 1e3,
                         "gbs": bwd_bytes / t_b / 1e9})
            log(f"  {case} ss2d [{backend}]: fwd {t_f * 1e3:.2f} ms, bwd {t_b * 1e3:.2f} ms")
            del y, dy
        xd = x.detach()
        for backend in available_backends("cross_scan"):
            t_s = cuda_time(lambda: cross_scan(xd, 4, True, backend))
            ys = cross_scan(xd, 4, True, backend)
            t_m = cuda_time(lambda: cross_merge(ys, height, width, 4, True, backend))
            rows.append({"op": "cross_scan", "case": case, "backend": backend, "ms": t_s * 1e3,
                         "gbs": 5 * _nbytes(xd) / t_s / 1e9})
            rows.append({"op": "cross_merge", "case": case, "backend": backend, "ms": t_m * 1e3,
                         "gbs": 5 * _nbytes(xd) / t_m / 1e9})
        torch.cuda.empty_cache()
    for r in rows:
        r["pct_copy"] = 100 * r["gbs"] / copy_gbs
    return rows


def kernel_table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| op | case | backend | ms | GB/s | % of copy |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['case']} | {r['backend']} | {_fmt(r['ms'], '.3f')} | {r['gbs']:.0f} "
                     f"| {r['pct_copy']:.0f}% |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- profile
_CATEGORIES = [  # first match wins: what a kernel name says about the work it does
    ("selective scan / ss2d (ours)", r"_ss_|ss2d|scan_kernel|selective|cross"),
    ("layer norm", r"layer_norm|LayerNorm|layernorm"),
    ("matmul (gemm)", r"gemm|sm90_xmma|cutlass|ampere_|Kernel2|nvjet|cublas"),
    ("convolution", r"conv|Conv|implicit|depthwise|dgrad|wgrad"),
    ("layout / copy / cast", r"copy|Copy|transpose|permute|cat|contiguous|to_copy|cast|elementwise_kernel_with_index"),
    ("elementwise / reduce", r"elementwise|vectorized|reduce|Reduce|softmax|gelu|silu|add|mul"),
]


def kernel_times(fn: Callable[[], Any], calls: int = 3, warmup: int = 3) -> Dict[str, float]:
    """CUDA time (us) per kernel name of one call of ``fn``, averaged over ``calls`` profiled calls."""
    from torch.profiler import ProfilerActivity, profile
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    per_kernel: Dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        device_us = getattr(event, "device_time_total", None)
        if device_us is None:
            device_us = getattr(event, "cuda_time_total", 0.0)
        if device_us and event.device_type.name == "CUDA":
            per_kernel[event.key] += device_us / calls
    return per_kernel


def profile_step(name: str, train: bool = True, batch_size: int = 128, img_size: int = 224, dtype: str = "fp16",
                 steps: int = 3, model_kwargs: Optional[dict] = None, compile: bool = False) -> Dict[str, Any]:
    """CUDA kernel time of ``steps`` iterations of ``name`` (train: fwd + scaled bwd), per kernel and category;
    ``compile``: of the torch.compile'd model (compiled during the profiler's warm-up calls)."""
    import timm

    import vmamba_zoo.models  # noqa: F401
    from .throughput import DTYPES
    model = timm.create_model(name, **(model_kwargs or {})).cuda().train(train)
    if compile:
        model = torch.compile(model)
    x = torch.randn(batch_size, 3, img_size, img_size, device="cuda")
    scaler = torch.amp.GradScaler("cuda")

    def step():
        with torch.autocast("cuda", dtype=DTYPES[dtype]):
            if not train:
                with torch.no_grad():
                    return model(x)
            loss = model(x).float().mean()
        model.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()

    per_kernel = kernel_times(step, steps)
    total = sum(per_kernel.values())
    per_category: Dict[str, float] = defaultdict(float)
    for kernel, us in per_kernel.items():
        cat = next((c for c, pattern in _CATEGORIES if re.search(pattern, kernel)), "other")
        per_category[cat] += us
    mode = ("train" if train else "infer") + (", compiled" if compile else "")
    return {"model": name, "mode": mode, "total_ms": total / 1e3,
            "kernels": sorted(per_kernel.items(), key=lambda kv: -kv[1]),
            "categories": sorted(per_category.items(), key=lambda kv: -kv[1])}


def profile_table(result: Dict[str, Any], top: int = 15) -> str:
    total = result["total_ms"] * 1e3
    lines = [f"{result['model']} {result['mode']}: {result['total_ms']:.1f} ms of CUDA kernels per step",
             "| category | ms | % |", "|---|---|---|"]
    lines += [f"| {c} | {us / 1e3:.2f} | {100 * us / total:.1f} |" for c, us in result["categories"]]
    lines += ["", "| kernel (top %d) | ms | %% |" % top, "|---|---|---|"]
    lines += [f"| {k[:90]} | {us / 1e3:.2f} | {100 * us / total:.1f} |" for k, us in result["kernels"][:top]]
    return "\n".join(lines)
