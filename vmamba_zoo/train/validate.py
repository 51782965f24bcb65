"""Top-1 / top-5 of a checkpoint on an ImageNet-layout folder (library code of ``tools/validate.py``).

Checkpoints: ours (``tools/train.py``'s ``*.pth.tar``, which also name the model), timm-style
(``state_dict``/``state_dict_ema``), the original release's ``{'model', 'model_ema'}`` (remapped by
:func:`vmamba_zoo.load_original_checkpoint`), bare state dicts and .safetensors; always read with
``weights_only=True``.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Mapping, Optional

import torch

__all__ = ["validate", "checkpoint_num_classes", "format_result"]


def checkpoint_num_classes(state: Mapping) -> Optional[int]:
    """Classifier size of a (possibly wrapped / original-layout) state dict, None without a classifier."""
    from vmamba_zoo.models.checkpoint import is_original_layout, remap_original_keys, unwrap_state_dict
    sd = unwrap_state_dict(state)
    if is_original_layout(sd):
        sd = remap_original_keys(sd)
    weight = sd.get("head.fc.weight")
    return None if weight is None else int(weight.shape[0])


def validate(checkpoint: Optional[str], data_dir: str, model_name: Optional[str] = None,
             num_classes: Optional[int] = None, img_size: Optional[int] = None, crop_pct: Optional[float] = None,
             ema: bool = False, batch_size: int = 64, workers: int = 2, device: Optional[str] = None,
             amp: Optional[str] = None, model_kwargs: Optional[Dict[str, Any]] = None, progress: bool = True,
             split: Optional[str] = None) -> Dict[str, Any]:
    """Evaluate ``checkpoint`` (or random weights when None) on ``data_dir``.

    ``data_dir`` is a class folder (``<dir>/<class>/<image>``) or an ImageNet root holding ``val/``
    (or ``split``). The model comes from ``model_name``, else from the checkpoint (our training files name it).
    A class count that differs between checkpoint, ``num_classes`` and the folder raises
    :class:`vmamba_zoo.CheckpointMismatchError` naming both numbers."""
    import timm
    from timm.data import create_dataset, create_loader, resolve_data_config

    import vmamba_zoo  # noqa: F401
    from vmamba_zoo.models.checkpoint import CheckpointMismatchError, load_checkpoint_file, load_original_checkpoint

    from .data import check_image_folder
    from .engine import AMP_DTYPES, evaluate

    folder = os.path.abspath(os.path.expanduser(str(data_dir)))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"validation folder not found: {folder}")
    sub = split or "val"
    if os.path.isdir(os.path.join(folder, sub)) and (split is not None or not os.path.isdir(os.path.join(folder, sub, sub))):
        folder = os.path.join(folder, sub)
    elif split is not None:
        raise FileNotFoundError(f"validation folder not found: {os.path.join(folder, sub)}")
    classes = check_image_folder(folder, "validation folder")

    raw: Dict[str, Any] = {}
    if checkpoint:
        raw = load_checkpoint_file(checkpoint)
    saved_cfg = raw.get("config") if isinstance(raw.get("config"), Mapping) else {}
    if not model_name:
        model_name = saved_cfg.get("model") or (raw.get("arch") if isinstance(raw.get("arch"), str) else None)
    if not model_name:
        raise ValueError("no model name: pass --model (the checkpoint does not name its architecture)")
    if model_kwargs is None:
        model_kwargs = dict(saved_cfg.get("model_kwargs") or {})
    ckpt_classes = None
    if raw:
        try:
            ckpt_classes = checkpoint_num_classes(raw if not ema else {"model": _pick_ema(raw)})
        except (KeyError, ValueError):
            ckpt_classes = None
    if num_classes is not None and ckpt_classes is not None and num_classes != ckpt_classes:
        raise CheckpointMismatchError(f"checkpoint {checkpoint} has a {ckpt_classes}-class classifier but "
                                      f"--num-classes is {num_classes}")
    model_classes = num_classes or ckpt_classes or len(classes)
    if model_classes != len(classes):
        source = f"checkpoint {checkpoint}" if ckpt_classes and not num_classes else "--num-classes"
        raise CheckpointMismatchError(f"{source} has {model_classes} classes but the folder {folder} has "
                                      f"{len(classes)} class folders")
    model = timm.create_model(model_name, num_classes=model_classes, **model_kwargs)
    if raw:
        load_original_checkpoint(model, raw, ema=ema, strict_head=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev).eval()

    # defaults: the training run's resolution and crop (our checkpoints store their config), else the model's
    if img_size is None and saved_cfg.get("img_size"):
        img_size = int(saved_cfg["img_size"])
    if crop_pct is None and saved_cfg.get("crop_pct"):
        crop_pct = float(saved_cfg["crop_pct"])
    args = {"img_size": img_size, "crop_pct": crop_pct, "interpolation": saved_cfg.get("interpolation")}
    data_config = resolve_data_config({k: v for k, v in args.items() if v is not None}, model=model,
                                      use_test_size=True, verbose=False)
    class_map = None
    saved_names = raw.get("class_names")
    if isinstance(saved_names, (list, tuple)) and len(saved_names) == model_classes:
        # our checkpoints store their label order: use it, so labels mean the same classes as in training
        unknown = sorted(set(classes) - set(saved_names))
        if unknown:
            raise CheckpointMismatchError(f"checkpoint {checkpoint} was trained on other classes than the folder "
                                          f"{folder} holds: {unknown[:5]} are not among its classes")
        class_map = {name: i for i, name in enumerate(saved_names)}
    dataset = create_dataset("", root=folder, split="validation", search_split=False, class_map=class_map)
    loader = create_loader(dataset, input_size=data_config["input_size"], batch_size=batch_size,
                           is_training=False, interpolation=data_config["interpolation"],
                           mean=data_config["mean"], std=data_config["std"], crop_pct=data_config["crop_pct"],
                           crop_mode=data_config.get("crop_mode"), num_workers=workers,
                           use_prefetcher=dev.type == "cuda", device=dev, pin_memory=dev.type == "cuda")
    start = time.perf_counter()
    metrics = evaluate(model, loader, dev, AMP_DTYPES.get(amp) if amp else None, progress=progress, desc="validate")
    return {"model": model_name, "checkpoint": checkpoint, "ema": ema, "img_size": data_config["input_size"][-1],
            "crop_pct": data_config["crop_pct"], "top1": metrics["top1"], "top5": metrics["top5"],
            "loss": metrics["loss"], "images": metrics["count"], "num_classes": model_classes, "folder": folder,
            "seconds": time.perf_counter() - start}


def _pick_ema(raw: Mapping) -> Mapping:
    for key in ("model_ema", "state_dict_ema"):
        if isinstance(raw.get(key), Mapping):
            return raw[key]
    raise KeyError(f"EMA weights requested but the checkpoint has no 'model_ema'/'state_dict_ema' entry")


def format_result(r: Dict[str, Any]) -> str:
    header = f"{'model':<20}{'weights':>8}{'size':>6}{'crop':>7}{'images':>8}{'top-1':>8}{'top-5':>8}{'loss':>8}"
    row = (f"{r['model']:<20}{'EMA' if r['ema'] else 'model':>8}{r['img_size']:>6}{r['crop_pct']:>7.3f}"
           f"{r['images']:>8}{r['top1']:>8.2f}{r['top5']:>8.2f}{r['loss']:>8.4f}")
    return "\n".join([header, "-" * len(header), row])
