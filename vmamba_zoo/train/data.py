"""Image-folder data: checks with clear errors, timm datasets / loaders, and the digits demo data set."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple, Union

__all__ = ["IMG_EXTENSIONS", "check_image_folder", "folder_classes", "write_digits_dataset"]

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def folder_classes(root: Union[str, os.PathLike]) -> List[str]:
    """Sorted class folder names of an ImageNet-layout folder (``root/<class>/*.JPEG``)."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def check_image_folder(root: Union[str, os.PathLike], what: str = "image folder") -> List[str]:
    """Raise a FileNotFoundError / ValueError naming ``root`` unless it is ``root/<class>/<images>``;
    returns the class names."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{what} not found: {root} (expected ImageNet layout {root}/<class>/<image>)")
    classes = folder_classes(root)
    if not classes:
        raise ValueError(f"{what} {root} has no class sub-folders (expected {root}/<class>/<image>)")
    for name in classes:
        if any(f.lower().endswith(IMG_EXTENSIONS) for f in os.listdir(root / name)):
            return classes
    raise ValueError(f"{what} {root} has class folders but no images ({', '.join(IMG_EXTENSIONS)})")


def write_digits_dataset(root: Union[str, os.PathLike], img_size: int = 32, val_fraction: float = 0.2,
                         seed: int = 0) -> Dict[str, int]:
    """scikit-learn's handwritten digits (1797 8x8 images, 10 classes, shipped inside scikit-learn) as
    RGB PNGs of ``img_size`` pixels in ImageNet layout: ``root/{train,val}/<digit>/<index>.png``.

    The split is stratified and fixed by ``seed``. Existing complete output is reused. Returns the
    number of images per split."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(root)
    marker = root / f".digits_{img_size}_{val_fraction}_{seed}.done"
    digits = load_digits()
    images, labels = digits.images, digits.target  # float 0..16, (1797, 8, 8)
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        is_val[idx[:int(round(len(idx) * val_fraction))]] = True
    counts = {"train": int((~is_val).sum()), "val": int(is_val.sum())}
    if marker.is_file():
        return counts
    for i, (img, label) in enumerate(zip(images, labels)):
        split = "val" if is_val[i] else "train"
        folder = root / split / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (img * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        pil = Image.fromarray(pixels, mode="L").resize((img_size, img_size), Image.BILINEAR).convert("RGB")
        pil.save(folder / f"{i:04d}.png")
    marker.write_text(f"{counts}\n")
    return counts
