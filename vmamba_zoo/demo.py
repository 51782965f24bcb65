"""The README's main job until training lands: build VMamba-T/S/B, time them here, check parity."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Optional, Sequence

import timm
import torch

from .parity import check_reference_parity

__all__ = ["run_demo", "time_forward"]


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


def run_demo(model_names: Sequence[str] = ("vmamba_tiny", "vmamba_small", "vmamba_base"), image_size: int = 224,
             batch_size: int = 1, reference_dir: Optional[Path] = None, repeats: int = 3) -> bool:
    """Print a table of parameters, feature shapes and forward time per model; then the parity check.
    Returns False if any parity output is off."""
    torch.manual_seed(0)
    x = torch.randn(batch_size, 3, image_size, image_size)
    device = "cpu"
    print(f"input {tuple(x.shape)} on {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    header = f"{'model':<22}{'params':>12}  {'stage outputs (C x H x W)':<44}{'logits':>12}{'forward ms':>12}"
    print(header)
    print("-" * len(header))
    for name in model_names:
        model = timm.create_model(name).eval()
        params = sum(p.numel() for p in model.parameters())
        with torch.inference_mode():
            stages = model.forward_intermediates(x, intermediates_only=True)
            logits = model(x)
        shapes = " ".join("x".join(map(str, s.shape[1:])) for s in stages)
        seconds = time_forward(model, x, repeats)
        print(f"{name:<22}{params:>12,}  {shapes:<44}{str(tuple(logits.shape)):>12}{seconds * 1e3:>12.1f}")
    if reference_dir is None or not Path(reference_dir).is_dir():
        print(f"\nparity: reference data not found ({reference_dir}); skipped")
        return True
    rows = check_reference_parity(reference_dir)
    print(f"\nparity with the original release ({reference_dir}), rtol 1e-4 / atol 1e-5:")
    for file in sorted({r.file for r in rows}):
        sel = [r for r in rows if r.file == file]
        worst = max(r.max_abs_err for r in sel)
        status = "ok" if all(r.ok for r in sel) else "MISMATCH"
        print(f"  {file:<26} {len(sel):>2} outputs  max |diff| {worst:.2e}  {status}")
    return all(r.ok for r in rows)
