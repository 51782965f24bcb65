"""Token mixers: modules that mix information across the positions of a (batch, H, W, C) map."""
from .ss2d import SS2D, ss2d_scan

__all__ = ["SS2D", "ss2d_scan"]
