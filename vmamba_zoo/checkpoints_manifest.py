"""Reader for ``checkpoints/manifest.json``: the released original weights, their URLs and top-1."""
from __future__ import annotations

import json
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["MANIFEST_PATH", "load_manifest", "manifest_entries", "manifest_entry", "find_by_filename"]



def _default_manifest() -> Path:
    # the repository's checkpoints/ folder (source tree, editable install), else the copy a wheel
    # installs under <prefix>/share/vmamba_zoo (setup.cfg data_files); VMAMBA_ZOO_MANIFEST overrides both
    in_repo = Path(__file__).resolve().parent.parent / "checkpoints" / "manifest.json"
    installed = Path(sys.prefix) / "share" / "vmamba_zoo" / "manifest.json"
    return in_repo if in_repo.is_file() or not installed.is_file() else installed


MANIFEST_PATH = Path(os.environ.get("VMAMBA_ZOO_MANIFEST", _default_manifest()))


@lru_cache(maxsize=None)
def load_manifest(path: Optional[str] = None) -> Dict[str, Any]:
    p = Path(path) if path else MANIFEST_PATH
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint manifest not found at {p} (set VMAMBA_ZOO_MANIFEST)")
    with open(p) as f:
        return json.load(f)


def manifest_entries() -> List[Dict[str, Any]]:
    return list(load_manifest()["checkpoints"])


def manifest_entry(timm_name: str) -> Dict[str, Any]:
    """Entry for ``vmamba_tiny`` or ``vmamba_tiny.in1k``; KeyError naming the known ones otherwise."""
    for entry in manifest_entries():
        if timm_name in (entry["timm_name"], entry["model"]):
            return entry
    raise KeyError(f"{timm_name!r} is not in the checkpoint manifest "
                   f"(known: {', '.join(e['timm_name'] for e in manifest_entries())})")


def find_by_filename(filename: str) -> Optional[Dict[str, Any]]:
    """Entry whose release file name equals ``filename``'s base name, else None."""
    base = os.path.basename(filename)
    return next((e for e in manifest_entries() if e["filename"] == base), None)
