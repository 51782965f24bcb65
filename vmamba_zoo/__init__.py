"""vmamba_zoo: VMamba backbones for timm, mmdet and mmseg."""
__version__ = "0.1.0"
