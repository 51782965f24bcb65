"""Pure-PyTorch reference implementations (any device, CPU included)."""
from .cross_scan import SCAN_DIRECTIONS, cross_merge, cross_scan, scan_order
from . import ss2d
from .selective_scan import (STATES_CHUNK, linear_scan, selective_scan_bwd, selective_scan_fwd,
                             selective_scan_fwd_states, selective_scan_naive)

__all__ = ["ss2d", "SCAN_DIRECTIONS", "cross_merge", "cross_scan", "scan_order", "STATES_CHUNK", "linear_scan",
           "selective_scan_bwd", "selective_scan_fwd", "selective_scan_fwd_states", "selective_scan_naive"]
