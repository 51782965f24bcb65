"""OpenMMLab (mmdet / mmseg) integration: ``VMambaBackbone`` in mmengine's root ``MODELS`` registry.

Import it from a config with ``custom_imports=dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)``
and use ``backbone=dict(type='VMambaBackbone', size='tiny', ...)``.
"""
try:
    import mmengine  # noqa: F401
except ImportError as err:  # an optional dependency: say how to get it
    raise ImportError(
        "vmamba_zoo.mm needs OpenMMLab's mmengine (and mmcv/mmdet/mmsegmentation to train detectors or "
        "segmentors): pip install 'vmamba_zoo[mm]'  (or: pip install mmengine==0.10.7 mmcv==2.1.0 mmdet==3.3.0 "
        f"mmsegmentation==1.2.2). Import failed with: {err}") from err

from .backbone import SIZES, VMambaBackbone

__all__ = ["VMambaBackbone", "SIZES"]
