"""Where a step's wall time goes beyond its kernels: the host's launch time, the GPU's idle gaps and the host code
running when each gap ends, for the compiled VMamba step against eager Swin-T, and the img/s of the compile modes
that take the host out (CUDA graphs).
PYTHONPATH=. python benchmarks/host_overhead.py [--model vmamba_tiny] [--batch-size 128] [--infer] [--top 12]

Per step, with the anchors' settings (fp16 autocast; train = GradScaler backward, no optimizer step):
- wall ms: steps run back to back;
- host ms: one step launched into an idle GPU, timed until the call returns (no synchronisation);
- kernel ms: the union of the GPU's busy intervals (torch.profiler), and the idle gaps between kernels;
- gaps by what the host was doing when the kernel that ends the gap was launched (the innermost operator around
  its launch), and cProfile's functions by own time."""
import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict

import timm
import torch
from torch.profiler import ProfilerActivity, profile

import vmamba_zoo.models  # noqa: F401

sys.path.insert(0, "benchmarks")
from compiled_kernels import anchor_step  # noqa: E402

GAP_US = 5.0  # idle time shorter than this is launch latency, not counted as a gap


def wall_and_host_ms(step, steps: int) -> tuple[float, float]:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - start) / steps * 1e3
    hosts = []
    for _ in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        hosts.append((time.perf_counter() - start) * 1e3)
    torch.cuda.synchronize()
    return wall, statistics.median(hosts)


def _enclosing(ops_by_tid, tid, ts):
    """Innermost CPU operator of thread ``tid`` running at ``ts``."""
    best = None
    for start, end, name in ops_by_tid.get(tid, ()):
        if start <= ts <= end and (best is None or end - start < best[1] - best[0]):
            best = (start, end, name)
    return best[2] if best else "(no operator)"


def trace_summary(step, steps: int, top: int) -> list[str]:
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    kernels = sorted((e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")),
                     key=lambda e: e["ts"])
    runtime = {e["args"]["correlation"]: e for e in events
               if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    ops_by_tid = defaultdict(list)
    calls, call_us = defaultdict(int), defaultdict(float)
    for e in events:
        if e.get("cat") == "cpu_op":
            ops_by_tid[e["tid"]].append((e["ts"], e["ts"] + e["dur"], e["name"]))
        elif e.get("cat") in ("cuda_runtime", "cuda_driver"):
            calls[e["name"]] += 1
            call_us[e["name"]] += e["dur"]
    busy, gaps, end = 0.0, defaultdict(float), None
    gap_count = defaultdict(int)
    for k in kernels:
        k_end = k["ts"] + k["dur"]
        if end is not None and k["ts"] - end > GAP_US:
            launch = runtime.get(k["args"].get("correlation"))
            where = _enclosing(ops_by_tid, launch["tid"], launch["ts"]) if launch else "(launch not found)"
            gaps[where] += k["ts"] - end
            gap_count[where] += 1
        start = k["ts"] if end is None else max(k["ts"], end)
        busy += max(0.0, k_end - start)
        end = k_end if end is None else max(end, k_end)
    span = (end - kernels[0]["ts"]) if kernels else 0.0
    lines = [f"  profiled: {span / steps / 1e3:.2f} ms/step from first to last kernel, GPU busy {busy / steps / 1e3:.2f},"
             f" idle gaps > {GAP_US:g} us {sum(gaps.values()) / steps / 1e3:.2f} ms in {sum(gap_count.values()) / steps:.0f}",
             "  idle ms/step by the operator launching the kernel after the gap:"]
    for name, us in sorted(gaps.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {us / steps / 1e3:7.3f} ms  {gap_count[name] / steps:5.0f} gaps  {name[:110]}")
    lines.append("  CUDA API calls per step (count, host ms):")
    for name, us in sorted(call_us.items(), key=lambda kv: -kv[1])[:8]:
        lines.append(f"    {calls[name] / steps:7.0f}  {us / steps / 1e3:7.3f} ms  {name}")
    return lines


def python_profile(step, steps: int, top: int) -> list[str]:
    torch.cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    body = [line for line in out.getvalue().splitlines() if line.strip()]
    return ["  cProfile (ms are of all %d steps; the profiler itself slows Python calls):" % steps] + \
        ["    " + line[:150] for line in body[-(top + 1):]]


def op_table(step, steps: int, top: int) -> list[str]:
    """aten/custom operators by the host time they take themselves (self CPU), per step."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows)
    lines = [f"  host operators by self CPU time per step (all: {total / steps / 1e3:.2f} ms, "
             f"{sum(e.count for e in rows) / steps:.0f} calls):"]
    for e in rows[:top]:
        lines.append(f"    {e.self_cpu_time_total / steps / 1e3:7.3f} ms  {e.count / steps:6.0f} calls  {e.key[:100]}")
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="vmamba_tiny")
    parser.add_argument("--baseline", default="swin_tiny_patch4_window7_224")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--infer", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--modes", nargs="*", default=["default", "reduce-overhead"],
                        help="torch.compile modes to time (reduce-overhead = CUDA graphs; eager = not compiled)")
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "batch", args.batch_size,
          "infer" if args.infer else "train", flush=True)
    x = torch.randn(args.batch_size, 3, 224, 224, device="cuda")
    ours = timm.create_model(args.model).cuda().train(not args.infer)
    theirs = timm.create_model(args.baseline).cuda().train(not args.infer)
    runs = [(f"{args.model} eager", ours, ours) if mode == "eager" else
            (f"{args.model} compiled ({mode})", ours, torch.compile(ours, mode=None if mode == "default" else mode))
            for mode in args.modes] + [(f"{args.baseline} eager", theirs, theirs)]
    for index, (name, model, runner) in enumerate(runs):
        step = anchor_step(model, runner, x, args.infer)
        for _ in range(3):
            step()
        wall, host = wall_and_host_ms(step, args.steps * 2)
        print(f"\n{name}: wall {wall:.2f} ms/step ({args.batch_size / wall * 1e3:.0f} img/s), "
              f"host {host:.2f} ms to launch a step", flush=True)
        if index == 0 or name.endswith("eager"):  # the breakdowns: of the default compile and the baseline
            print("\n".join(trace_summary(step, args.steps, args.top)), flush=True)
            print("\n".join(python_profile(step, args.steps, args.top + 8)), flush=True)
            print("\n".join(op_table(step, args.steps, args.top + 8)), flush=True)


if __name__ == "__main__":
    main()
