"""xLSTM mixer before/after a change, in one process on the same inputs and weights (CPU by default).

The "before" implementation is vmamba_zoo/mixers/xlstm.py at a git revision (default: the last one before the
chunk-parallel mLSTM and the sLSTM op). Reports CPU time per call (the least of 2 rounds of --iters calls, rounds alternating before and after) and the number of aten
ops dispatched per call (on a GPU each is at least one kernel launch, which bounds eager speed at these sizes),
and checks that both give the same outputs.

PYTHONPATH=. python benchmarks/xlstm_speed.py [--rev 17b9ac4] [--device cpu] [--batch 2] [--iters 5]
"""
import argparse
import importlib.util
import subprocess
import tempfile
import time

import timm
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import vmamba_zoo  # noqa: F401
from vmamba_zoo.mixers import base, create_mixer


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def load_old_mixer(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:vmamba_zoo/mixers/xlstm.py"], capture_output=True, text=True,
                            check=True).stdout
    path = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
    path.write(source)
    path.close()
    current = base._MIXERS.pop("xlstm")  # the old module registers itself under the same name
    try:
        spec = importlib.util.spec_from_file_location("vmamba_zoo.mixers._xlstm_before", path.name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        base._MIXERS["xlstm"] = current
    return module.XLSTMMixer


def timed(fns, iters, rounds=2):
    """Per function: the least CPU time of its calls (process time: robust on a machine others load; with one
    thread it is the work itself) and its op count. Each round runs every function ``iters`` times in a row
    (after a warm-up call), so each sees its own steady state; rounds alternate the functions."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, out in zip(fns, times):
            fn()
            for _ in range(iters):
                start = time.process_time()
                fn()
                out.append(time.process_time() - start)
    counts = []
    for fn in fns:
        counter = _CountOps()
        with counter:
            fn()
        counts.append(counter.count)
    return [min(t) for t in times], counts


def step(module, x, train):
    def run():
        if train:
            out = module(x)
            out.float().square().mean().backward()
        else:
            with torch.no_grad():
                module(x)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="17b9ac4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-model", action="store_true", help="mixers only, not vmamba_tiny_xlstm")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    old_cls = load_old_mixer(args.rev)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, least process time of 2 x {args.iters} calls; before = {args.rev}")
    print("ops = aten ops dispatched per call; a custom op counts 1 (the sLSTM op: ~15 ops per position forward and\n"
          "~13 backward in its PyTorch loop on the CPU; one Triton kernel on CUDA)")
    print(f"{'case':<44}{'mode':>6}{'before s':>10}{'after s':>10}{'speed-up':>9}{'ops before':>11}{'ops after':>10}")
    # the mixers of vmamba_tiny_xlstm at 224: mLSTM at stages 1-3, sLSTM at stage 4
    cases = [("mLSTM stage 1 (56x56, dim 96)", 56, 96, dict(cell="mlstm")),
             ("mLSTM stage 3 (14x14, dim 384)", 14, 384, dict(cell="mlstm")),
             ("sLSTM stage 4 (7x7, dim 768)", 7, 768, dict(cell="slstm")),
             ("sLSTM 28x28, dim 192", 28, 192, dict(cell="slstm"))]
    for name, size, dim, kwargs in cases:
        new = create_mixer("xlstm", dim, **kwargs).to(args.device)
        old = old_cls(dim, **kwargs).to(args.device)
        old.load_state_dict(new.state_dict())
        x = torch.randn(args.batch, size, size, dim, device=args.device)
        with torch.no_grad():
            diff = (new(x) - old(x)).abs().max().item()
        for train in (False, True):
            (t_old, t_new), (n_old, n_new) = timed([step(old, x, train), step(new, x, train)], args.iters)
            print(f"{name:<44}{'train' if train else 'infer':>6}{t_old:>10.4f}{t_new:>10.4f}{t_old / t_new:>8.1f}x"
                  f"{n_old:>11}{n_new:>10}", flush=True)
        print(f"    max |after - before| = {diff:.2e}")
    if args.no_model:
        return
    new_model = timm.create_model("vmamba_tiny_xlstm").to(args.device)
    old_model = timm.create_model("vmamba_tiny_xlstm").to(args.device)
    for block in (b for stage in old_model.stages for b in stage.blocks):
        mixer = block.mixer
        replacement = old_cls(mixer.out_proj.out_features, cell=mixer.cell, inner_ratio=mixer.inner / mixer.out_proj.out_features,
                              num_heads=mixer.num_heads, scan_directions=mixer.scan_directions,
                              chunk_size=mixer.chunk_size, block_index=1 if mixer.reverse else 0).to(args.device)
        replacement.load_state_dict(mixer.state_dict())
        block.mixer = replacement
    old_model.load_state_dict(new_model.state_dict())
    x = torch.randn(args.batch, 3, 224, 224, device=args.device)
    new_model.eval(), old_model.eval()
    with torch.no_grad():
        diff = (new_model(x) - old_model(x)).abs().max().item()
    for train in (False, True):
        new_model.train(train), old_model.train(train)
        (t_old, t_new), (n_old, n_new) = timed([step(old_model, x, train), step(new_model, x, train)], args.iters)
        print(f"{'vmamba_tiny_xlstm 224':<44}{'train' if train else 'infer':>6}{t_old:>10.4f}{t_new:>10.4f}"
              f"{t_old / t_new:>8.1f}x{n_old:>11}{n_new:>10}", flush=True)
    print(f"    max |after - before| (logits, eval) = {diff:.2e}")


if __name__ == "__main__":
    main()
