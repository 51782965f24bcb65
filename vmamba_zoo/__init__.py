"""vmamba_zoo: VMamba (Visual State Space Model) backbones for timm, mmdet and mmseg.

Importing the package registers the models with timm (``timm.create_model('vmamba_tiny')``).
"""
from . import _inductor_compat, ops
from .models import (CheckpointMismatchError, VMamba, create_from_original, describe_state_dict,
                     load_original_checkpoint)

__version__ = "0.1.0"

# torch.compile with dynamic shapes: fixes inductor's stride ordering of our token views (enough on the CPU; on CUDA
# torch 2.11 fails later in inductor's tiling, so compile there with dynamic=False: README, Speed)
_inductor_compat.install()
__all__ = ["VMamba", "CheckpointMismatchError", "create_from_original", "describe_state_dict",
           "load_original_checkpoint", "ops"]
