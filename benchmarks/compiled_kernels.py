"""Every CUDA kernel of one torch.compile'd VMamba training step: calls per step and ms, so inductor's fused kernels
can be matched with the code it generated (run with TORCH_LOGS=output_code 2>code.txt to keep that code).
PYTHONPATH=. python benchmarks/compiled_kernels.py [--model vmamba_tiny] [--min-ms 0.05] [--infer]"""
import argparse
from collections import defaultdict

import timm
import torch
from torch.profiler import ProfilerActivity, profile

import vmamba_zoo.models  # noqa: F401


def anchor_step(model, runner, x, infer: bool = False):
    """One step with the anchors' settings: fp16 autocast; train = GradScaler backward, no optimizer step."""
    scaler = torch.amp.GradScaler("cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.float16):
            if infer:
                with torch.no_grad():
                    return runner(x)
            loss = runner(x).float().mean()
        model.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
    return step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="vmamba_tiny")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--min-ms", type=float, default=0.05)
    parser.add_argument("--infer", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    model = timm.create_model(args.model).cuda().train(not args.infer)
    step = anchor_step(model, torch.compile(model), torch.randn(args.batch_size, 3, 224, 224, device="cuda"),
                       args.infer)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    us, calls = defaultdict(float), defaultdict(int)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            us[event.name] += event.device_time / args.steps
            calls[event.name] += 1
    total = sum(us.values())
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}: {args.model} "
          f"{'infer' if args.infer else 'train'}, compiled, {total / 1e3:.2f} ms of kernels per step")
    print("| ms | calls/step | us/call | kernel |\n|---|---|---|---|")
    for name, t in sorted(us.items(), key=lambda kv: -kv[1]):
        if t / 1e3 >= args.min_ms:
            n = calls[name] / args.steps
            print(f"| {t / 1e3:.3f} | {n:g} | {t / n:.1f} | {name[:140]} |")


if __name__ == "__main__":
    main()
