"""VMamba models, registered with timm on import."""
from .checkpoint import (CheckpointMismatchError, checkpoint_filter_fn, describe_state_dict, load_checkpoint_file,
                         load_original_checkpoint)
from .original import create_from_original
from .vmamba import VMamba, check_image_input

__all__ = ["VMamba", "CheckpointMismatchError", "checkpoint_filter_fn", "check_image_input", "create_from_original",
           "describe_state_dict", "load_checkpoint_file", "load_original_checkpoint"]
