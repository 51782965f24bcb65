"""Effective receptive field (ERF) of a stage output, as in the VMamba paper (after RepLKNet, Ding et al. 2022).

For each input image: the gradient of the centre position of the chosen stage's output (summed over the
output's channels) w.r.t. the input image; its absolute value, summed over the input channels. The map is
averaged over the images. The figure shows ``log10(map + 1)`` of the map scaled to a maximum of 1e3
(RepLKNet's and VMamba's figures use a log scale so that the faint tails stay visible).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

__all__ = ["compute_erf", "save_erf", "load_images", "erf_summary", "build_erf_model"]


def load_images(folder: Optional[str], num_images: int, img_size: int, model: nn.Module, seed: int = 0) -> torch.Tensor:
    """``num_images`` images (N, 3, img_size, img_size), normalised for ``model``: from an image folder
    (``<dir>/<class>/<image>`` or ``<dir>/<image>``, resized and centre-cropped), else standard normal noise."""
    if folder is None:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(num_images, 3, img_size, img_size, generator=gen)
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from .data import IMG_EXTENSIONS
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    paths = []
    for dirpath, _, files in sorted(os.walk(folder)):
        paths += [os.path.join(dirpath, f) for f in sorted(files) if f.lower().endswith(IMG_EXTENSIONS)]
    if not paths:
        raise ValueError(f"no images ({', '.join(IMG_EXTENSIONS)}) under {folder}")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(paths))[:num_images]
    config = resolve_data_config({"img_size": img_size, "crop_pct": 1.0}, model=model, verbose=False)
    transform = create_transform(**config, is_training=False)
    return torch.stack([transform(Image.open(paths[i]).convert("RGB")) for i in chosen])


def compute_erf(model: nn.Module, images: torch.Tensor, stage: int = -1, batch_size: int = 8) -> np.ndarray:
    """ERF map (H, W) of ``model``'s stage ``stage`` output (any model with ``forward_intermediates``),
    averaged over ``images`` (N, C, H, W)."""
    model.eval()
    num_stages = len(getattr(model, "stages", [])) or 4
    index = stage % num_stages
    total = torch.zeros(images.shape[-2:], dtype=torch.float64)
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].clone().requires_grad_(True)
        (feat,) = model.forward_intermediates(x, indices=[index], stop_early=True, intermediates_only=True)
        h, w = feat.shape[-2:]
        # per image: d(sum over channels of out[:, :, h//2, w//2]) / d input; images are independent
        feat[:, :, h // 2, w // 2].sum().backward()
        total += x.grad.detach().abs().sum(dim=1).sum(dim=0).double()
    return (total / images.shape[0]).numpy()


def erf_summary(erf: np.ndarray, fractions: Sequence[float] = (0.2, 0.3, 0.5, 0.99)) -> Dict[str, Any]:
    """RepLKNet's numbers: the side (fraction of the image) of the smallest centred square holding
    ``t`` of the total ERF mass, for each ``t`` in ``fractions``; plus where the maximum is."""
    h, w = erf.shape
    total = erf.sum()
    cy, cx = h // 2, w // 2
    out: Dict[str, Any] = {"argmax": tuple(int(v) for v in np.unravel_index(np.argmax(erf), erf.shape))}
    for t in fractions:
        for r in range(0, max(h, w)):
            area = erf[max(cy - r, 0):cy + r + 1, max(cx - r, 0):cx + r + 1].sum()
            if area >= t * total:
                out[f"area{int(round(t * 100))}"] = min(1.0, (2 * r + 1) / max(h, w))
                break
    return out


def save_erf(erf: np.ndarray, png_path: str, npy_path: Optional[str] = None, title: Optional[str] = None) -> None:
    """The raw map as .npy and a log-scale heat map PNG (log10(map scaled to max 1e3 + 1))."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if npy_path:
        os.makedirs(os.path.dirname(os.path.abspath(npy_path)), exist_ok=True)
        np.save(npy_path, erf)
    peak = float(erf.max()) if erf.size else 0.0
    shown = np.log10(erf / peak * 1e3 + 1.0) if peak > 0 else np.zeros_like(erf)
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5))
    im = ax.imshow(shown, cmap="RdYlGn", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="log10(ERF / max * 1e3 + 1)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def build_erf_model(name: str, checkpoint: Optional[str] = None, ema: bool = False, pretrained: bool = False,
                    num_classes: Optional[int] = None) -> nn.Module:
    """``timm.create_model(name)`` with ``checkpoint`` loaded strictly (its classifier size unless given)."""
    import timm
    import vmamba_zoo  # noqa: F401
    from vmamba_zoo.models.checkpoint import load_checkpoint_file, load_original_checkpoint

    from .validate import checkpoint_num_classes

    raw = load_checkpoint_file(checkpoint) if checkpoint else None
    kwargs: Dict[str, Any] = {}
    if raw is not None:
        saved = raw.get("config") if isinstance(raw.get("config"), dict) else {}
        kwargs.update(saved.get("model_kwargs") or {})
        ckpt_classes = checkpoint_num_classes(raw)
        num_classes = num_classes or ckpt_classes
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = timm.create_model(name, pretrained=pretrained, **kwargs)
    if raw is not None:
        load_original_checkpoint(model, raw, ema=ema, strict_head=True)
    return model.eval()
