"""YAML training configs with ``_base_`` inheritance and ``key=value`` command-line overrides.

A config file is a flat mapping (timm's argument names where they exist). ``_base_`` names one file (or a
list of files) relative to the config's own folder; bases are merged first, in order, the file's own keys
last. Nested mappings merge key by key. ``--set key=value`` values are parsed as YAML (``lr=2e-3``,
``amp=bf16``, ``model_kwargs.dims=[16,32,64,128]``); dotted keys reach into mappings.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import yaml

__all__ = ["load_config", "apply_overrides", "parse_set_items", "merge", "DEFAULTS"]

# Every key a config may set, with its default: the VMamba paper's ImageNet-1k recipe for VMamba-T.
DEFAULTS: Dict[str, Any] = {
    "model": "vmamba_tiny", "model_kwargs": {}, "pretrained": False, "initial_checkpoint": None,
    "data_dir": None, "train_split": "train", "val_split": "val", "num_classes": None,
    "img_size": 224, "crop_pct": None, "interpolation": "bicubic", "mean": None, "std": None,
    "batch_size": 128, "validation_batch_size": None, "workers": 8, "pin_memory": True,
    "epochs": 300, "opt": "adamw", "lr": None, "lr_base": 1.0e-3, "lr_base_size": 1024, "lr_base_scale": "linear",
    "weight_decay": 0.05, "momentum": 0.9, "opt_eps": 1.0e-8, "opt_betas": [0.9, 0.999],
    "sched": "cosine", "warmup_epochs": 20, "warmup_lr": 1.0e-6, "min_lr": 1.0e-5, "cooldown_epochs": 0,
    "sched_on_updates": True, "clip_grad": 5.0, "clip_mode": "norm",
    "drop_rate": 0.0, "drop_path_rate": 0.2,
    "aa": "rand-m9-mstd0.5-inc1", "scale": [0.08, 1.0], "ratio": [0.75, 1.3333333333333333], "hflip": 0.5,
    "color_jitter": 0.4, "reprob": 0.25, "remode": "pixel", "recount": 1,
    "mixup": 0.8, "cutmix": 1.0, "mixup_prob": 1.0, "mixup_switch_prob": 0.5, "mixup_mode": "batch",
    "mixup_off_epoch": 0, "smoothing": 0.1,
    "model_ema": True, "model_ema_decay": 0.9999, "model_ema_warmup": False,
    "amp": None, "grad_checkpointing": False, "channels_last": False, "device": None,
    "torchcompile": None, "torchcompile_mode": None,
    "seed": 0, "output": "output/train", "experiment": None, "checkpoint_hist": 3, "eval_metric": "top1",
    "log_interval": 50, "progress": True, "tensorboard": True, "max_train_steps": None,
}


def merge(base: Mapping, override: Mapping) -> Dict[str, Any]:
    """Recursive dict merge: mappings merge key by key, anything else is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path, seen: Sequence[Path]) -> Dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ValueError(f"_base_ cycle: {' -> '.join(map(str, list(seen) + [path]))}")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    bases = data.pop("_base_", None) or []
    if isinstance(bases, (str, os.PathLike)):
        bases = [bases]
    merged: Dict[str, Any] = {}
    for base in bases:
        merged = merge(merged, _read_yaml(path.parent / base, list(seen) + [path]))
    return merge(merged, data)


def load_config(path: Optional[Union[str, os.PathLike]] = None, overrides: Optional[Mapping[str, Any]] = None,
                strict: bool = True) -> Dict[str, Any]:
    """DEFAULTS <- the file and its ``_base_`` chain <- ``overrides`` (dotted keys allowed).

    With ``strict`` an unknown top-level key is an error (a typo would otherwise be silently ignored)."""
    cfg = dict(copy.deepcopy(DEFAULTS))
    if path is not None:
        cfg = merge(cfg, _read_yaml(Path(path), []))
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    if strict:
        unknown = sorted(set(cfg) - set(DEFAULTS))
        if unknown:
            raise KeyError(f"unknown config keys {unknown} (known: {', '.join(sorted(DEFAULTS))})")
    return cfg


def parse_set_items(items: Iterable[str]) -> Dict[str, Any]:
    """``['lr=2e-3', 'amp=bf16']`` -> ``{'lr': 0.002, 'amp': 'bf16'}`` (values parsed as YAML)."""
    out: Dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parsed = yaml.safe_load(value) if value != "" else None
        # YAML 1.1 reads 1e-3 as a string; accept it as a number
        if isinstance(parsed, str):
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        out[key.strip()] = parsed
    return out


def apply_overrides(cfg: Mapping[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(dict(cfg))
    for key, value in overrides.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out
