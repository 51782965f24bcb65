"""The Python and dispatcher share of an eager VMamba step, measured on the CPU: the model narrowed (stem width 16)
at a tiny input (32x32, batch 1) under bfloat16 autocast (convolutions in float32), with the SS2D scan's backends
replaced by stand-ins that only allocate their outputs, so that what remains is mostly host work per operator - the
part that bounds eager training steps on a fast GPU (benchmarks/host_overhead.py measures it there). A proxy for
comparing trees and code paths, not a GPU number.

    PYTHONPATH=. python benchmarks/host_proxy_cpu.py [--model vmamba_tiny] [--steps 30] [--profile]
"""
import argparse
import statistics
import sys
import time
from collections import Counter

import timm
import torch

import vmamba_zoo.models  # noqa: F401
from vmamba_zoo.ops.backends import register_backend
from vmamba_zoo.ops.reference.ss2d import states_shape


def _fake_fwd(x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last, save_states=False):
    out = torch.empty(x.shape, dtype=torch.float32)
    return out, out.new_empty(states_shape(dts.shape[0], directions, dts.shape[3], A.shape[1], x.shape[-1])
                              if save_states else (0,))


def _fake_bwd(dy, x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last, states=None):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format)
                 for t in (x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds))


def _float32_conv(module, x, weight, bias):
    """Convolutions in float32: the CPU's half ones are slow (depthwise ones loop over channel groups, thousands of
    operators a step), unlike CUDA's."""
    with torch._C._DisableAutocast():
        y = torch.nn.functional.conv2d(x.float(), weight, bias, module.stride, module.padding, module.dilation,
                                       module.groups)
    return y.to(x.dtype)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vmamba_tiny")
    parser.add_argument("--dims", type=int, default=16, help="stem width (VMamba-T: 96): small, so kernels are cheap")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="also list the operators per step")
    args = parser.parse_args()
    torch.set_num_threads(1)
    register_backend("ss2d_scan_fwd", "stand_in", _fake_fwd, priority=100)
    register_backend("ss2d_scan_bwd", "stand_in", _fake_bwd, priority=100)
    model = timm.create_model(args.model, dims=args.dims, num_classes=10).train()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module._conv_forward = _float32_conv.__get__(module)
    x = torch.randn(1, 3, 32, 32)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x).float().mean()
        model.zero_grad(set_to_none=True)
        loss.backward()

    for _ in range(5):
        step()
    rates = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        rates.append((time.perf_counter() - start) / args.steps * 1e3)
    print(f"{args.model}: {statistics.median(rates):.2f} ms/step on the CPU "
          f"(rounds: {' '.join(f'{r:.2f}' for r in rates)}), torch {torch.__version__}")
    if args.profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step()
        names = Counter(e.name for e in prof.events())
        print(f"{sum(names.values())} operator events per step; most frequent:")
        for name, count in names.most_common(25):
            print(f"  {count:5d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
