"""vmamba_zoo: VMamba (Visual State Space Model) backbones for timm, mmdet and mmseg.

Importing the package registers the models with timm (``timm.create_model('vmamba_tiny')``).
"""
from . import ops
from .models import (CheckpointMismatchError, VMamba, create_from_original, describe_state_dict,
                     load_original_checkpoint)

__version__ = "0.1.0"
__all__ = ["VMamba", "CheckpointMismatchError", "create_from_original", "describe_state_dict",
           "load_original_checkpoint", "ops"]
