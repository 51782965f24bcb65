"""Throughput of every token-mixer variant at the Tiny size on one GPU, same process (issue: plug-in mixers).

PYTHONPATH=. python benchmarks/mixers_throughput.py
PYTHONPATH=. python benchmarks/mixers_throughput.py --names vmamba_tiny_mamba vmamba_tiny_xlstm --reference-cross-scan
    (each model also with cross-scan / cross-merge on the reference's torch copies, in the same process)
"""
import argparse
import warnings

import timm
import torch

import vmamba_zoo  # noqa: F401
from vmamba_zoo.analysis.benchmark import environment
from vmamba_zoo.analysis.flops import model_complexity
from vmamba_zoo.analysis.throughput import measure_throughput

NAMES = ["vmamba_tiny", "vmamba_tiny_attn", "vmamba_tiny_xlstm", "vmamba_tiny_mamba", "vmamba_tiny_lstm",
         "swin_tiny_patch4_window7_224"]

REFERENCE_CROSS_SCAN = {"VMAMBA_ZOO_CROSS_SCAN_BACKEND": "reference", "VMAMBA_ZOO_CROSS_MERGE_BACKEND": "reference"}


def row(name, label, variables):
    with environment(variables):
        cost = model_complexity(name, 224, method="torch")
        infer = measure_throughput(timm.create_model(name), 64, 224, "fp16", "cuda", False, 2, 5)
        train = measure_throughput(timm.create_model(name), 64, 224, "fp16", "cuda", True, 2, 5)
    print(f"{label:<42}{cost['params'] / 1e6:>9.1f}{cost['macs'] / 1e9:>7.2f}{infer['img_per_s']:>12.0f}"
          f"{train['img_per_s']:>12.0f}{train['peak_memory'] / 2 ** 30:>10.1f}", flush=True)
    torch.cuda.empty_cache()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="+", default=NAMES)
    parser.add_argument("--reference-cross-scan", action="store_true",
                        help="also time each model with cross-scan / cross-merge on the reference backend")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the rows (alternating the A/B order)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    print("batch 64, 224x224, fp16 autocast; train = fwd + bwd + SGD step")
    print(f"{'model':<42}{'params M':>9}{'GMACs':>7}{'infer img/s':>12}{'train img/s':>12}{'train GiB':>10}", flush=True)
    for round_ in range(args.rounds):
        for name in args.names:
            rows = [(name, {})] + ([(name + " [reference cross-scan]", REFERENCE_CROSS_SCAN)]
                                   if args.reference_cross_scan else [])
            for label, variables in rows[::-1] if round_ % 2 else rows:
                row(name, label, variables)
