"""Convert an original VMamba release file ({'model': ..., 'model_ema': ...}) to our layout as safetensors."""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Optional, Union

import torch
import torch.nn as nn

from ..models.checkpoint import (CheckpointMismatchError, checkpoint_filter_fn, describe_state_dict,
                                 is_original_layout, load_checkpoint_file, remap_original_keys, unwrap_state_dict)

__all__ = ["convert_checkpoint", "match_registered_models", "format_report"]


def _arch(description: str) -> str:
    return re.sub(r",?\s*num_classes=\d+", "", description)  # the classifier size does not pick a model


def match_registered_models(state_dict: Dict[str, torch.Tensor]) -> List[str]:
    """Registered vmamba timm models whose architecture (classifier size aside) equals the state dict's."""
    import timm
    wanted = _arch(describe_state_dict(state_dict))
    names = []
    for name in timm.list_models("*vmamba*"):
        with torch.device("meta"):
            model = timm.create_model(name)
        if _arch(describe_state_dict(model.state_dict())) == wanted:
            names.append(name)
    return names


def convert_checkpoint(src: Union[str, os.PathLike], dst: Union[str, os.PathLike], ema: bool = False,
                       model: Optional[Union[str, nn.Module]] = None, model_kwargs: Optional[dict] = None
                       ) -> Dict[str, Any]:
    """Read ``src`` (original release, ours or timm-style; torch weights_only or safetensors), remap to our
    layout, check it against the model it is for and write ``dst`` (.safetensors). Returns a report dict.

    ``model``: a timm name (with ``model_kwargs``) or a module; when None the file must match one registered
    VMamba architecture, else :class:`CheckpointMismatchError` (pass ``model`` to convert anyway).
    """
    from safetensors.torch import save_file
    from ..checkpoints_manifest import find_by_filename

    dst = os.fspath(dst)
    if not dst.endswith(".safetensors"):
        raise ValueError(f"output must be a .safetensors file, got {dst}")
    raw = load_checkpoint_file(src)
    if not isinstance(raw, dict):
        raise ValueError(f"{src}: expected a dict checkpoint, got {type(raw).__name__}")
    nested = raw.get("state_dict")
    if "model" not in raw and isinstance(nested, dict) and ("model" in nested or "model_ema" in nested):
        raw = nested  # {'config': ..., 'state_dict': {'model': ...}} (the parity files' wrapping)
    original = unwrap_state_dict(raw, use_ema=ema)
    was_original = is_original_layout(original)
    ours = remap_original_keys(original) if was_original else dict(original)
    description = describe_state_dict(ours)
    matches = match_registered_models(ours)
    manifest = find_by_filename(os.fspath(src))
    timm_name = None
    if model is None:
        if not matches:
            raise CheckpointMismatchError(
                f"{src} fits no registered VMamba model: it looks like {description}. Pass --model NAME "
                f"(and --model-args) naming the architecture to convert it anyway")
        timm_name = matches[0]
        model_obj = None
    elif isinstance(model, str):
        import timm
        import vmamba_zoo  # noqa: F401
        if not timm.is_model(model):
            raise ValueError(f"unknown model {model!r} (registered VMamba models: "
                             f"{', '.join(timm.list_models('*vmamba*'))})")
        timm_name = model
        with torch.device("meta"):
            model_obj = timm.create_model(model, **(model_kwargs or {}))
    else:
        model_obj = model
    if model_obj is None:
        import timm
        num_classes = ours["head.fc.weight"].shape[0] if "head.fc.weight" in ours else 0
        with torch.device("meta"):
            model_obj = timm.create_model(timm_name, num_classes=num_classes)
    checked = checkpoint_filter_fn(ours, model_obj)  # raises CheckpointMismatchError naming both sides
    if "head.fc.weight" in ours and "head.fc.weight" not in checked:
        checked = ours  # keep the classifier in the file even when the target model has none
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in checked.items()}
    orig_keys = list(original)
    mapping = [(o, n) for o, n in zip(orig_keys, remap_original_keys(original) if was_original else orig_keys)]
    renamed = [(o, n) for o, n in mapping if o != n]
    examples = renamed[:6] + ([p for p in renamed if ".op." in p[0]][:2])
    report = {
        "source": os.fspath(src), "output": dst, "ema": ema, "num_tensors": len(tensors),
        "num_params": int(sum(v.numel() for v in tensors.values())), "source_layout": "original" if was_original else "ours",
        "num_renamed": len(renamed), "examples": examples, "architecture": description,
        "matches": matches, "timm_name": timm_name,
        "manifest": manifest, "expected_top1": manifest["top1"] if manifest else None,
    }
    metadata = {"format": "pt", "source": os.path.basename(os.fspath(src)), "ema": str(ema),
                "architecture": description, "timm_name": str(timm_name)}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    save_file(tensors, dst, metadata=metadata)
    return report


def format_report(report: Dict[str, Any]) -> str:
    lines = [f"converted {report['source']} ({'model_ema' if report['ema'] else 'model'} weights, "
             f"{report['source_layout']} layout) -> {report['output']}",
             f"  tensors: {report['num_tensors']} ({report['num_params']:,} values), renamed: {report['num_renamed']}",
             f"  architecture: {report['architecture']}",
             f"  registered models with this architecture: {', '.join(report['matches']) or 'none'}",
             f"  converted for: {report['timm_name'] or 'the given model'}"]
    if report["expected_top1"] is not None:
        lines.append(f"  manifest: {report['manifest']['timm_name']}, expected ImageNet top-1 {report['expected_top1']}")
    if report["examples"]:
        lines.append("  key mapping examples (original -> ours):")
        lines += [f"    {o} -> {n}" for o, n in report["examples"]]
    return "\n".join(lines)
