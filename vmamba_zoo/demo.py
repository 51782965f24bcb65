"""The README's main job (`make demo`): the real pipeline on an embedded data set, then the model tables.

1. scikit-learn's handwritten digits (1797 8x8 images, 10 classes, shipped inside scikit-learn) written as
   32x32 RGB PNGs in ImageNet folder layout (train/val);
2. ``tools/train.py`` trains ``test_vmamba`` on them on the CPU (configs/classification/demo_digits.yaml);
3. ``tools/validate.py`` measures the checkpoint's top-1 / top-5 (model and EMA weights);
4. params / GMACs of VMamba-T/S/B (FlopCounterMode on the meta device) and their inference throughput here;
5. the parity check against the original release's outputs (../shared/reference beside the repository).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

__all__ = ["run_demo", "time_forward", "train_and_validate", "print_parity"]

REPO = Path(__file__).resolve().parents[1]


def time_forward(model: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Median seconds of an inference forward (after one warm-up call)."""
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _run(cmd: List[str]) -> str:
    """Run a tool, streaming its output; returns stdout+stderr; raises on failure."""
    print("$ " + " ".join(os.path.relpath(c, REPO) if os.path.isabs(c) and c.startswith(str(REPO)) else c
                          for c in cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        print("  " + line, end="", flush=True)
    if proc.wait() != 0:
        raise RuntimeError(f"{cmd[1]} failed with exit code {proc.returncode}")
    return "".join(lines)


def train_and_validate(work_dir: Path, epochs: Optional[int] = None, img_size: int = 32) -> Dict[str, dict]:
    """Steps 1-3; returns {'model': validate result, 'ema': validate result, 'train_s': seconds}."""
    from .train.data import write_digits_dataset

    data_dir, out_dir = work_dir / "digits", work_dir / "train"
    counts = write_digits_dataset(data_dir, img_size=img_size)
    print(f"[1/5] digits data set: {counts['train']} train / {counts['val']} val PNGs ({img_size}x{img_size}, "
          f"10 classes) in {data_dir}", flush=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a fresh run every time
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), str(REPO / "configs" / "classification" / "demo_digits.yaml"),
           "--data-dir", str(data_dir), "--output", str(out_dir), "--img-size", str(img_size)]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    print(f"[2/5] training test_vmamba on the CPU ({torch.get_num_threads()} threads)", flush=True)
    start = time.perf_counter()
    _run(cmd)
    train_s = time.perf_counter() - start
    print(f"[3/5] validating {out_dir / 'last.pth.tar'}", flush=True)
    results: Dict[str, dict] = {"train_s": train_s}
    for key, extra in (("model", []), ("ema", ["--ema"])):
        json_path = work_dir / f"validate_{key}.json"
        _run([sys.executable, str(REPO / "tools" / "validate.py"), "--checkpoint", str(out_dir / "last.pth.tar"),
              "--data-dir", str(data_dir), "--no-progress", "--workers", "0", "--json", str(json_path)] + extra)
        results[key] = json.loads(json_path.read_text())
    return results


def print_parity(reference_dir: Optional[Path]) -> bool:
    from .parity import check_reference_parity
    if reference_dir is None or not Path(reference_dir).is_dir():
        print(f"parity: reference data not found ({reference_dir}); skipped")
        return True
    rows = check_reference_parity(reference_dir)
    print(f"parity with the original release ({reference_dir}), rtol 1e-4 / atol 1e-5:")
    for file in sorted({r.file for r in rows}):
        sel = [r for r in rows if r.file == file]
        worst = max(r.max_abs_err for r in sel)
        status = "ok" if all(r.ok for r in sel) else "MISMATCH"
        print(f"  {file:<26} {len(sel):>2} outputs  max |diff| {worst:.2e}  {status}")
    return all(r.ok for r in rows)


def run_demo(model_names: Sequence[str] = ("vmamba_tiny", "vmamba_small", "vmamba_base"), image_size: int = 224,
             batch_size: int = 2, reference_dir: Optional[Path] = None, work_dir: Optional[Path] = None,
             epochs: Optional[int] = None, skip_train: bool = False, min_top1: float = 80.0) -> bool:
    """The whole demo; returns False if the trained model stays below ``min_top1`` or parity is off."""
    import vmamba_zoo  # noqa: F401
    from .analysis.flops import complexity_table
    from .analysis.throughput import benchmark_models, throughput_table

    start = time.perf_counter()
    work_dir = Path(work_dir or REPO / "work_dirs" / "demo")
    print(f"vmamba_zoo demo: torch {torch.__version__}, {torch.get_num_threads()} CPU threads, work dir {work_dir}",
          flush=True)
    ok = True
    results = None
    if not skip_train:
        results = train_and_validate(work_dir, epochs=epochs)
    print(f"\n[4/5] params and GMACs at {image_size}x{image_size} (torch FlopCounterMode, meta device)", flush=True)
    table, _ = complexity_table(list(model_names), [image_size], method="torch")
    print(table)
    print(f"\ninference throughput on this machine ({image_size}x{image_size}, batch {batch_size}, fp32):", flush=True)
    bench = benchmark_models(list(model_names), [image_size], batch_size=batch_size, dtype="fp32", device="cpu",
                             modes=("infer",), warmup=1, iters=3)
    print(throughput_table(bench))
    print("\n[5/5] ", end="", flush=True)
    ok &= print_parity(reference_dir)
    total = time.perf_counter() - start
    print("\nsummary")
    if results is not None:
        m, e = results["model"], results["ema"]
        print(f"  digits (10 classes, chance 10%): test_vmamba trained in {results['train_s']:.0f}s, val top-1 "
              f"{m['top1']:.2f}% (EMA {e['top1']:.2f}%), top-5 {m['top5']:.2f}% on {m['images']} images")
        if max(m["top1"], e["top1"]) < min_top1:
            print(f"  top-1 below {min_top1}%: FAILED")
            ok = False
    print(f"  demo time {total:.0f}s; {'all good' if ok else 'FAILED'}")
    return ok
