"""Checkpoints: the original VMamba release's layout, ours, and timm-style files.

The original names modules ``patch_embed`` / ``layers.i.blocks`` / ``layers.i.downsample`` /
``classifier``; we use timm's ``stem`` / ``stages.i.blocks`` / ``stages.{i+1}.downsample`` /
``head`` and name the parts of a block for what they are (``norm1``, ``mixer``). Every load checks
the architecture and raises, naming what the file looks like and what the model expects, instead of
leaving weights at their random initialisation.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from typing import Dict, Mapping, Optional, Union

import torch
from torch import Tensor

__all__ = ["checkpoint_filter_fn", "download_checkpoint", "load_checkpoint_file", "load_original_checkpoint", "remap_original_keys",
           "describe_state_dict", "unwrap_state_dict", "is_original_layout", "CheckpointMismatchError"]

StateDict = Dict[str, Tensor]


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


def download_checkpoint(url: str) -> str:
    """Download ``url`` once into torch.hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``); the path."""
    from urllib.parse import unquote, urlparse
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, os.path.basename(unquote(urlparse(url).path)))
    if not os.path.isfile(path):
        torch.hub.download_url_to_file(url, path, progress=True)  # writes a temporary file, then renames
    return path


def load_checkpoint_file(path: Union[str, os.PathLike]) -> dict:
    """Load a .safetensors file, or a torch file with ``weights_only=True`` (no arbitrary unpickling).
    An http(s) URL is downloaded first (once, see :func:`download_checkpoint`)."""
    path = os.fspath(path)
    if path.startswith(("http://", "https://")):
        path = download_checkpoint(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path, device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError subclasses with long messages
        raise ValueError(f"{path} is not a plain tensor checkpoint that can be loaded safely "
                         f"(weights_only=True refused it: {str(err).splitlines()[0]}). If you trust the file, "
                         f"load it yourself and pass the state dict, or convert it with "
                         f"tools/convert_checkpoint.py") from None


def unwrap_state_dict(checkpoint: Mapping, use_ema: bool = False) -> StateDict:
    """Pick the state dict out of a training checkpoint: ``model``/``model_ema`` (the original release),
    ``state_dict``/``state_dict_ema`` (timm), ``module`` or a bare state dict; drop ``module.``/``backbone.``."""
    keys = ("model_ema", "state_dict_ema") if use_ema else ("model", "state_dict", "module")
    for key in keys:
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
            break
    else:
        if use_ema:
            raise KeyError(f"EMA weights requested but the checkpoint has no 'model_ema'/'state_dict_ema' entry "
                           f"(top-level keys: {sorted(checkpoint)[:8]})")
    state_dict = {}
    for key, value in checkpoint.items():
        if not isinstance(value, Tensor):
            continue
        for prefix in ("module.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        state_dict[key] = value
    if not state_dict:
        raise ValueError("checkpoint holds no tensors")
    return state_dict


def is_original_layout(state_dict: Mapping[str, Tensor]) -> bool:
    return any(k.startswith(("patch_embed.", "layers.", "classifier.")) for k in state_dict)


_STEM_V2 = {"0": "conv1", "2": "norm1", "5": "conv2", "7": "norm2"}
_STEM_V0 = {"0": "conv", "2": "norm"}
_DOWN_V2 = {"1": "conv", "3": "norm"}


def remap_original_keys(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Original release key layout -> ours (tensor values unchanged except 1x1-conv weights squeezed)."""
    v2_stem = any(k.startswith("patch_embed.5.") for k in state_dict)
    out: StateDict = {}
    for key, value in state_dict.items():
        new = key
        if m := re.match(r"patch_embed\.(\d+)\.(.+)", key):
            new = f"stem.{(_STEM_V2 if v2_stem else _STEM_V0)[m[1]]}.{m[2]}"
        elif m := re.match(r"layers\.(\d+)\.downsample\.(.+)", key):
            part = m[2]
            if pm := re.match(r"(\d+)\.(.+)", part):
                part = f"{_DOWN_V2[pm[1]]}.{pm[2]}"
            new = f"stages.{int(m[1]) + 1}.downsample.{part}"
        elif m := re.match(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)", key):
            rest = m[3]
            rest = re.sub(r"^norm\.", "norm1.", rest)
            rest = re.sub(r"^op\.conv2d\.", "mixer.conv.", rest)
            rest = re.sub(r"^op\.", "mixer.", rest)
            new = f"stages.{m[1]}.blocks.{m[2]}.{rest}"
        elif key.startswith("classifier."):
            new = "head." + key[len("classifier."):].replace("head.", "fc.", 1)
        if new.endswith(("in_proj.weight", "out_proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")) \
                and value.dim() == 4:
            value = value.flatten(1)  # the original also stores 1x1 projections as conv weights
        out[new] = value
    return out


def describe_state_dict(state_dict: Mapping[str, Tensor]) -> str:
    """One line saying which VMamba architecture a state dict (our layout) holds."""
    sd = remap_original_keys(state_dict) if is_original_layout(state_dict) else state_dict
    blocks = defaultdict(set)
    for key in sd:
        if m := re.match(r"stages\.(\d+)\.blocks\.(\d+)\.", key):
            blocks[int(m[1])].add(int(m[2]))
    if not blocks:
        return f"not a VMamba state dict (first keys: {list(sd)[:4]})"
    stages = sorted(blocks)
    dims = [sd[f"stages.{i}.blocks.0.norm1.weight"].shape[0] for i in stages
            if f"stages.{i}.blocks.0.norm1.weight" in sd]
    parts = [f"stem={'patch' if 'stem.conv.weight' in sd else 'conv'}",
             f"dims={'-'.join(map(str, dims))}",
             f"depths={'-'.join(str(len(blocks[i])) for i in stages)}"]
    a_logs = sd.get("stages.0.blocks.0.mixer.A_logs")
    x_proj = sd.get("stages.0.blocks.0.mixer.x_proj_weight")
    in_proj = sd.get("stages.0.blocks.0.mixer.in_proj.weight")
    if a_logs is not None and x_proj is not None and dims:
        d_inner = x_proj.shape[2]
        parts += [f"d_state={a_logs.shape[1]}", f"ssm_ratio={d_inner / dims[0]:g}",
                  f"scan_directions={x_proj.shape[0]}"]
        if in_proj is not None:
            parts.append(f"z_gate={in_proj.shape[0] == 2 * d_inner}")
    fc1 = sd.get("stages.0.blocks.0.mlp.fc1.weight")
    parts.append(f"mlp_ratio={fc1.shape[0] / fc1.shape[1]:g}" if fc1 is not None else "mlp_ratio=0")
    fc = sd.get("head.fc.weight")
    parts.append(f"num_classes={fc.shape[0] if fc is not None else 0}")
    return "VMamba(" + ", ".join(parts) + ")"


def _check_fits(state_dict: StateDict, model: torch.nn.Module, allow_head_mismatch: bool) -> None:
    expected = model.state_dict()
    head = ("head.fc.weight", "head.fc.bias")
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected and not (k in head and allow_head_mismatch)]
    wrong = [k for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape
             and not (k in head and allow_head_mismatch)]
    if missing or unexpected or wrong:
        details = []
        if wrong:
            details.append(f"{len(wrong)} shape mismatches, e.g. {wrong[0]}: file {tuple(state_dict[wrong[0]].shape)}"
                           f" vs model {tuple(expected[wrong[0]].shape)}")
        if missing:
            details.append(f"{len(missing)} missing keys, e.g. {missing[:3]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        raise CheckpointMismatchError(
            f"checkpoint does not fit the model: the file looks like {describe_state_dict(state_dict)}, "
            f"the model expects {describe_state_dict(expected)}; " + "; ".join(details))


def checkpoint_filter_fn(state_dict: Mapping, model: torch.nn.Module, use_ema: bool = False) -> StateDict:
    """timm ``pretrained_filter_fn``: any supported layout -> ours, checked against ``model``.

    The classifier may differ in size (timm drops it when num_classes changes); everything else must
    match exactly, or :class:`CheckpointMismatchError` says what the file is.
    """
    sd = unwrap_state_dict(state_dict, use_ema=use_ema)
    if is_original_layout(sd):
        sd = remap_original_keys(sd)
    if getattr(model, "num_classes", 1) == 0 or "head.fc.weight" not in model.state_dict():
        sd = {k: v for k, v in sd.items() if not k.startswith("head.fc.")}
    _check_fits(sd, model, allow_head_mismatch=True)
    return sd


def load_original_checkpoint(model: torch.nn.Module, path_or_state_dict: Union[str, os.PathLike, Mapping],
                             ema: bool = False, strict_head: bool = True) -> torch.nn.Module:
    """Load an original-release (or our / timm-style) checkpoint into ``model``.

    ``ema`` picks ``model_ema`` over ``model``. The whole architecture must match; with
    ``strict_head=False`` a classifier of another class count is skipped (fine-tuning), otherwise it is
    an error naming both class counts. Returns the model.
    """
    raw = path_or_state_dict if isinstance(path_or_state_dict, Mapping) else load_checkpoint_file(path_or_state_dict)
    sd = checkpoint_filter_fn(raw, model, use_ema=ema)
    expected = model.state_dict()
    if "head.fc.weight" in sd and "head.fc.weight" in expected \
            and sd["head.fc.weight"].shape != expected["head.fc.weight"].shape:
        if strict_head:
            raise CheckpointMismatchError(
                f"checkpoint classifier has {sd['head.fc.weight'].shape[0]} classes, the model "
                f"{expected['head.fc.weight'].shape[0]}; create the model with "
                f"num_classes={sd['head.fc.weight'].shape[0]}, or pass strict_head=False to keep the "
                f"model's freshly initialised classifier")
        sd = {k: v for k, v in sd.items() if not k.startswith("head.fc.")}
    model.load_state_dict(sd, strict="head.fc.weight" in sd or "head.fc.weight" not in expected)
    return model
