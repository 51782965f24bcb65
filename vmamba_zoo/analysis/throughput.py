"""Inference / training throughput (images per second) and peak memory of registered timm models.

One process, models one after another: warm-up iterations, then timed iterations between device
synchronisations. Memory: on CUDA the peak allocated memory (torch.cuda.max_memory_allocated, reset
per measurement), for CUDA-graph compile modes the peak reserved memory (the graphs' pools, which replays use
without allocating); on CPU the growth of the process's peak resident set size (resource.getrusage
ru_maxrss) during the measurement - an upper-level proxy that is 0 when an earlier, larger measurement
already raised the peak; reported as "n/a" where unavailable.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .flops import create_model_for_size, plot_sweep

__all__ = ["DTYPES", "default_device", "measure_throughput", "benchmark_models", "throughput_table"]

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that replay CUDA graphs
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _maxrss_bytes() -> Optional[int]:
    try:
        import resource
        import sys
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB
    except Exception:
        return None


def _timed(step, warmup: int, iters: int, dev: torch.device) -> float:
    for _ in range(warmup):
        step()
    _sync(dev)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(dev)
    return time.perf_counter() - start


def _graphed_inference(run, dev: torch.device):
    """Capture ``run`` (an inference forward on static inputs) in a CUDA graph; return its replay."""
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):  # warm up on a side stream, as capture requires
        for _ in range(3):
            run()
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph.replay


def measure_throughput(model: nn.Module, batch_size: int = 64, img_size: int = 224, dtype: str = "fp32",
                       device: Optional[str] = None, train: bool = False, warmup: int = 5, iters: int = 20,
                       in_chans: int = 3, train_step: str = "sgd", compile: bool = False,
                       cuda_graph: bool = False, compile_options: Optional[dict] = None,
                       compile_mode: Optional[str] = None) -> Dict[str, Any]:
    """Images per second and peak memory of ``model``. ``dtype`` "fp16"/"bf16" run under autocast.

    Inference: eval, no_grad forward. Train: forward, backward of the mean output, then with
    ``train_step="sgd"`` an SGD step, with ``"scaler"`` a GradScaler-scaled backward and no optimizer step
    (the setting of the published speed comparisons). ``compile``: torch.compile the model first (compile
    time reported separately, not timed), with inductor's ``compile_options`` or torch.compile's ``compile_mode``
    (implies ``compile``; "reduce-overhead" replays the compiled forward and backward from CUDA graphs, each step
    marked with ``torch.compiler.cudagraph_mark_step_begin``). ``cuda_graph``: replay inference from a captured CUDA
    graph.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if warmup < 0 or iters < 1 or batch_size < 1:
        raise ValueError("need warmup >= 0, iters >= 1, batch_size >= 1")
    if train_step not in ("sgd", "scaler"):
        raise ValueError(f"train_step must be 'sgd' or 'scaler', got {train_step!r}")
    dev = torch.device(device or default_device())
    if cuda_graph and (train or dev.type != "cuda"):
        raise ValueError("cuda_graph is for inference on a CUDA device")
    if compile_mode is not None and compile_options:
        raise ValueError("give compile_mode or compile_options, not both (torch.compile takes one of them)")
    graphs = compile_mode in CUDA_GRAPH_MODES
    if graphs and dev.type != "cuda":
        raise ValueError(f"compile_mode={compile_mode!r} replays CUDA graphs: it needs a CUDA device, got {dev}")
    model = model.to(dev).train(train)
    runner = model
    if compile or compile_mode is not None:
        compile = True
        runner = torch.compile(model, **({"mode": compile_mode} if compile_mode else {"options": compile_options}))
    x = torch.randn(batch_size, in_chans, img_size, img_size, device=dev)
    use_amp = dtype != "fp32"
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6) if train and train_step == "sgd" else None
    scaler = torch.amp.GradScaler(dev.type, enabled=use_amp) if train and train_step == "scaler" else None

    def forward():
        with torch.autocast(dev.type, dtype=DTYPES[dtype], enabled=use_amp):
            return runner(x)

    def step():
        if graphs:  # a new iteration: the graphs' outputs of the last one may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        if not train:
            with torch.no_grad():
                forward()
            return
        loss = forward().float().mean()
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            model.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()

    compile_seconds = None
    if compile:  # the first calls compile; keep that out of the timing
        compile_seconds = _timed(step, 1, 1, dev)
    if cuda_graph:
        with torch.no_grad():
            step = _graphed_inference(forward, dev)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    rss_before = _maxrss_bytes()
    elapsed = _timed(step, warmup, iters, dev)
    if dev.type == "cuda" and graphs:
        # replays allocate nothing: the memory is the graphs' private pools, which stay reserved (an upper bound)
        peak, memory_kind = torch.cuda.max_memory_reserved(dev), "cuda max_memory_reserved (CUDA graph pools)"
    elif dev.type == "cuda":
        peak, memory_kind = torch.cuda.max_memory_allocated(dev), "cuda max_memory_allocated"
    else:
        after = _maxrss_bytes()
        peak = None if after is None or rss_before is None else after - rss_before
        memory_kind = "maxrss growth"
    if graphs:  # free this model's graph pools, else the next measurement's reserved memory counts them
        del runner, step
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    return {"img_per_s": batch_size * iters / elapsed, "seconds_per_iter": elapsed / iters, "peak_memory": peak,
            "memory_kind": memory_kind, "device": str(dev), "dtype": dtype, "batch_size": batch_size,
            "img_size": img_size, "mode": "train" if train else "infer", "compile_seconds": compile_seconds}


def benchmark_models(names: Sequence[str], img_sizes: Sequence[int] = (224,), batch_size: int = 64,
                     dtype: str = "fp32", device: Optional[str] = None, modes: Sequence[str] = ("infer", "train"),
                     warmup: int = 5, iters: int = 20) -> Dict[str, Dict[int, Dict[str, Dict[str, Any]]]]:
    """{name: {img_size: {mode: measurement}}} for every registered model name (ours and timm's)."""
    for mode in modes:
        if mode not in ("infer", "train"):
            raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    device = device or default_device()
    results: Dict[str, Dict[int, Dict[str, Dict[str, Any]]]] = {}
    for name in names:
        results[name] = {}
        for size in img_sizes:
            model = create_model_for_size(name, size)
            results[name][size] = {mode: measure_throughput(model, batch_size, size, dtype, device, mode == "train",
                                                            warmup, iters) for mode in modes}
            del model
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
    return results


def _mem(value: Optional[int]) -> str:
    return "n/a" if value is None else f"{value / 2 ** 20:.0f}"


def throughput_table(results: Dict[str, Dict[int, Dict[str, Dict[str, Any]]]]) -> str:
    """Rows per (model, size): img/s and peak MiB per mode, and the img/s ratio to the first model."""
    names = list(results)
    first = names[0]
    modes = list(next(iter(next(iter(results.values())).values())))
    header = ["model", "size"]
    for mode in modes:
        header += [f"{mode} img/s", f"{mode} ratio", f"{mode} peak MiB"]
    rows: List[List[str]] = []
    for name in names:
        for size, per_mode in results[name].items():
            row = [name, str(size)]
            for mode in modes:
                m = per_mode[mode]
                ref = results[first].get(size, {}).get(mode)
                ratio = f"{m['img_per_s'] / ref['img_per_s']:.2f}" if ref else "-"
                row += [f"{m['img_per_s']:.1f}", ratio, _mem(m["peak_memory"])]
            rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    any_m = next(iter(next(iter(results.values())).values()))[modes[0]]
    note = (f"device {any_m['device']}, {any_m['dtype']}, batch {any_m['batch_size']}; ratio = img/s / {first}'s; "
            f"peak memory = {any_m['memory_kind']}")
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows] + [note])


def plot_throughput(results: Dict[str, Dict[int, Dict[str, Dict[str, Any]]]], path: str, mode: str = "infer") -> str:
    """PNG of img/s vs input size per model for ``mode``."""
    flat = {name: {s: {"v": r[mode]["img_per_s"]} for s, r in per.items() if mode in r} for name, per in results.items()}
    return plot_sweep(flat, path, key="v", scale=1.0, ylabel=f"{mode} images / s",
                      title=f"{mode} throughput vs input size")


__all__.append("plot_throughput")
