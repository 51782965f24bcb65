"""Image classification training, validation and effective-receptive-field analysis (library code of
``tools/train.py``, ``tools/validate.py``, ``tools/erf.py``), built on timm's data, optimizer, scheduler and
utility helpers; plus the digits demo data set."""
from .config import load_config, apply_overrides, parse_set_items
from .data import check_image_folder, write_digits_dataset
from .engine import train
from .erf import compute_erf, save_erf
from .validate import validate

__all__ = ["load_config", "apply_overrides", "parse_set_items", "check_image_folder", "write_digits_dataset",
           "train", "validate", "compute_erf", "save_erf"]
