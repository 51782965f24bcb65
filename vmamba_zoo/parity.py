"""Check our models against the original release's parity data (``../shared/reference``)."""
from __future__ import annotations

from pathlib import Path
from typing import List, NamedTuple, Union

import torch

from .models import create_from_original, load_original_checkpoint

__all__ = ["ParityRow", "check_reference_parity"]


class ParityRow(NamedTuple):
    file: str
    output: str
    max_abs_err: float
    ok: bool


def check_reference_parity(reference_dir: Union[str, Path], rtol: float = 1e-4, atol: float = 1e-5
                           ) -> List[ParityRow]:
    """Rebuild every ``parity_*.pt`` model, load its original-layout weights, and compare its logits and
    stage outputs with the stored ones (float32, CPU)."""
    rows = []
    files = sorted(Path(reference_dir).glob("parity_*.pt"))
    if not files:
        raise FileNotFoundError(f"no parity_*.pt files in {reference_dir}")
    for path in files:
        data = torch.load(path, map_location="cpu", weights_only=True)
        model = load_original_checkpoint(create_from_original(data["config"]), data["state_dict"]).eval()
        for name, x in data["inputs"].items():
            with torch.no_grad():
                logits = model(x)
                stages = model.forward_intermediates(x, intermediates_only=True)
            outputs = {name: logits, **{f"{name}_stage{i}": s for i, s in enumerate(stages)}}
            for key, ours in outputs.items():
                ref = data["outputs"][key]
                err = (ours - ref).abs().max().item()
                ok = ours.shape == ref.shape and torch.allclose(ours, ref, rtol=rtol, atol=atol)
                rows.append(ParityRow(path.stem, key, err, ok))
    return rows
