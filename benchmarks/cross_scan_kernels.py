"""Triton cross-scan / cross-merge against the reference (torch copies) and a device-to-device copy.

    PYTHONPATH=. python benchmarks/cross_scan_kernels.py                 # VMamba-T stages, fp16, K=4
    PYTHONPATH=. python benchmarks/cross_scan_kernels.py --directions 4 2 1 --dtype bf16 --batch 64
    PYTHONPATH=. python benchmarks/cross_scan_kernels.py --sweep         # also try other Triton tile budgets

Shapes: VMamba-T's SS2D inner width (d_inner = ssm_ratio 1.0 * dim = 96/192/384/768) at its stage maps
(56/28/14/7), batch 128, both image layouts. For each case and backend it prints the time per call, the
bandwidth over the bytes the op must move (scan: read the image once, write K sequences; merge: the
reverse), and that time as a percentage of a measured ``dst.copy_(src)`` moving the same number of bytes
(100% = as fast as a plain copy). Kernel times come from CUDA-graph replays timed with CUDA events, so
Python launch overhead does not hide the small stages; ``eager ms`` is the same loop launched from Python.
Each case also checks the Triton result against the reference (scan: bit-equal; merge: equal to the
reference run in float32 and rounded once) and prints PASS / FAIL; an error in one case is printed and
the run goes on.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import traceback

import torch

from vmamba_zoo.ops import reference
from vmamba_zoo.ops.kernels import triton_cross_scan as kernels

STAGES = [("T stage0", 96, 56), ("T stage1", 192, 28), ("T stage2", 384, 14), ("T stage3", 768, 7)]
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _events_time(run, calls: int, repeats: int) -> float:
    """Median seconds per call of ``run()`` (which makes ``calls`` calls), timed with CUDA events."""
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / calls)
    return statistics.median(times)


def time_call(fn, calls: int = 20, repeats: int = 7):
    """(graph seconds per call or None if capture failed, eager seconds per call)."""
    for _ in range(3):  # warm up: compile, allocator
        fn()
    torch.cuda.synchronize()

    def eager():
        for _ in range(calls):
            fn()
    eager_s = _events_time(eager, calls, repeats)
    graph_s = None
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # capture needs a non-default stream's warm-up per the torch docs
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        graph.replay()
        torch.cuda.synchronize()
        graph_s = _events_time(graph.replay, calls, repeats)
        del graph
    except Exception as err:  # noqa: BLE001 - report and use the eager time
        print(f"    (CUDA graph capture failed: {type(err).__name__}: {err}; using eager times)")
    return graph_s, eager_s


def copy_time(nbytes: int):
    """Seconds of ``dst.copy_(src)`` reading nbytes/2 and writing nbytes/2 (moving nbytes in all)."""
    src = torch.empty(max(1, nbytes // 2), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    graph_s, eager_s = time_call(lambda: dst.copy_(src))
    return graph_s if graph_s is not None else eager_s


def _mismatch(got, want) -> str:
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"shape/dtype {tuple(got.shape)} {got.dtype} vs {tuple(want.shape)} {want.dtype}"
    diff = (got.double() - want.double()).abs()
    where = torch.nonzero(diff == diff.max())[0].tolist()
    return f"max |diff| {diff.max().item():.3e} at {where}, {int((diff > 0).sum())}/{diff.numel()} differ"


def check(op, x_or_y, height, width, directions, channels_last, tile=None) -> str:
    if op == "scan":
        got = kernels.cross_scan(x_or_y, directions, channels_last, tile)
        want = reference.cross_scan(x_or_y, directions, channels_last)
    else:
        got = kernels.cross_merge(x_or_y, height, width, directions, channels_last, tile)
        want = reference.cross_merge(x_or_y.float(), height, width, directions, channels_last).to(x_or_y.dtype)
    return "PASS" if torch.equal(got, want) else "FAIL " + _mismatch(got, want)


def run_case(name, channels, size, directions, channels_last, dtype, batch, sweep):
    height = width = size
    layout = "cl" if channels_last else "cf"
    shape = (batch, height, width, channels) if channels_last else (batch, channels, height, width)
    x = torch.randn(shape, device="cuda").to(dtype)
    y = torch.randn(batch, directions, channels, height * width, device="cuda").to(dtype)
    nbytes = (1 + directions) * x.numel() * x.element_size()  # both ops: one image + K sequences
    t_copy = copy_time(nbytes)
    calls = {
        "scan": {"triton": lambda: kernels.cross_scan(x, directions, channels_last),
                 "reference": lambda: reference.cross_scan(x, directions, channels_last)},
        "merge": {"triton": lambda: kernels.cross_merge(y, height, width, directions, channels_last),
                  "reference": lambda: reference.cross_merge(y, height, width, directions, channels_last)},
    }
    prefix = f"{layout:<4}{directions:>2} {name:<10}{channels:>5}{f'{size}x{size}':>7} "
    for op, backends in calls.items():
        status = "-"
        try:
            status = check(op, x if op == "scan" else y, height, width, directions, channels_last)
        except Exception as err:  # noqa: BLE001 - a failing kernel must not stop the benchmark
            status = f"ERROR {type(err).__name__}: {err}"
            traceback.print_exc(limit=3, file=sys.stdout)
        times = {}
        for backend, fn in backends.items():
            try:
                times[backend] = time_call(fn)
            except Exception as err:  # noqa: BLE001
                print(f"{op:<6}{prefix}{backend:<20}  ERROR {type(err).__name__}: {err}")
                torch.cuda.synchronize()
        ref_s = times.get("reference", (None, None))
        ref_s = ref_s[0] if ref_s[0] is not None else ref_s[1]
        for backend, (graph_s, eager_s) in times.items():
            t = graph_s if graph_s is not None else eager_s
            speedup = f"{ref_s / t:>8.2f}x" if ref_s else f"{'-':>9}"
            print(f"{op:<6}{prefix}{backend:<20}{t * 1e3:>8.3f}{eager_s * 1e3:>10.3f}{nbytes / t / 1e9:>8.0f}"
                  f"{100 * t_copy / t:>7.0f}%{speedup}  {status if backend == 'triton' else ''}", flush=True)
        if sweep:
            sweep_tiles(op, x if op == "scan" else y, height, width, directions, channels_last, nbytes, t_copy,
                        prefix)


def sweep_tiles(op, tensor, height, width, directions, channels_last, nbytes, t_copy, prefix):
    """Other tile budgets for the Triton kernels (kernels.scan_step_blocks / tile_shape), each checked and timed."""
    budgets = [dict(tile_elements=e) for e in (1024, 2048, 8192)]  # scan: scan_step_blocks' budget only
    if op == "merge" and channels_last and directions == 4:
        budgets += [dict(channels_last_pixels=p) for p in (64, 128, 512)]
        budgets += [dict(tile_elements=8192, channels_last_pixels=512)]
    for tile in budgets:
        label = "triton " + ",".join(f"{k.split('_')[-1][:3]}={v}" for k, v in tile.items())
        try:
            if op == "scan":
                def fn():
                    return kernels.cross_scan(tensor, directions, channels_last, tile)
            else:
                def fn():
                    return kernels.cross_merge(tensor, height, width, directions, channels_last, tile)
            status = check(op, tensor, height, width, directions, channels_last, tile)
            graph_s, eager_s = time_call(fn)
            t = graph_s if graph_s is not None else eager_s
            print(f"{op:<6}{prefix}{label:<20}{t * 1e3:>8.3f}{eager_s * 1e3:>10.3f}{nbytes / t / 1e9:>8.0f}"
                  f"{100 * t_copy / t:>7.0f}%{'':>9}  {status}", flush=True)
        except Exception as err:  # noqa: BLE001
            print(f"{op:<6}{prefix}{label:<20}  ERROR {type(err).__name__}: {err}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--directions", type=int, nargs="+", default=[4], choices=[1, 2, 4])
    parser.add_argument("--sweep", action="store_true", help="also time other Triton tile budgets")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA device")
        return 1
    import triton
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"batch {args.batch}, {args.dtype}, default tiles (elements; see kernels.default_tile_elements): scan "
          f"{kernels.SCAN_TILE_ELEMENTS} (cf K=4: {kernels.default_tile_elements('scan', 4, False)}), merge "
          f"{kernels.TILE_ELEMENTS} (K=4 cf/cl: {kernels.default_tile_elements('merge', 4, False)}/"
          f"{kernels.default_tile_elements('merge', 4, True)}; cl K=4 pixels {kernels.CHANNELS_LAST_PIXELS})")
    big = 1 << 30
    print(f"device-to-device copy of 1 GiB: {2 * big / copy_time(2 * big) / 1e9:.0f} GB/s (read + write)")
    print("bytes counted: image once + K sequences once; '% copy' = copy time for those bytes / op time")
    print(f"{'op':<6}{'lay':<4}{'K':>2} {'case':<10}{'C':>5}{'map':>7} {'backend':<20}{'ms':>8}{'eager ms':>10}"
          f"{'GB/s':>8}{'% copy':>8}{'speedup':>9}  check")
    for directions in args.directions:
        for channels_last in (False, True):
            for name, channels, size in STAGES:
                try:
                    run_case(name, channels, size, directions, channels_last, DTYPES[args.dtype], args.batch,
                             args.sweep)
                    torch.cuda.empty_cache()  # the case's tensors are gone with its frame
                except Exception as err:  # noqa: BLE001
                    print(f"case {name} C={channels} {size}x{size} K={directions} "
                          f"{'cl' if channels_last else 'cf'}: ERROR {type(err).__name__}: {err}")
                    traceback.print_exc(limit=5, file=sys.stdout)
                    torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
