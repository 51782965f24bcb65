"""Token mixers: modules that mix information across the positions of a 2D map.

All implement :class:`TokenMixer` (channel-last tokens (batch, H*W, C) with their (H, W), or a (batch, H, W, C)
map) and are registered by name:
``ss2d`` (VMamba), ``mamba``, ``lstm``, ``xlstm``, ``attention``. See :mod:`vmamba_zoo.mixers.base`.
"""
from .attention import Attention
from .base import TokenMixer, create_mixer, get_mixer, list_mixers, register_mixer, to_image, to_tokens
from .lstm import LSTMMixer
from .mamba import Mamba
from .ss2d import SS2D, ss2d_scan
from .xlstm import XLSTMMixer, mlstm_chunkwise, slstm_scan

__all__ = ["TokenMixer", "register_mixer", "create_mixer", "get_mixer", "list_mixers", "to_image", "to_tokens", "SS2D",
           "ss2d_scan", "Mamba", "LSTMMixer", "XLSTMMixer", "Attention", "mlstm_chunkwise", "slstm_scan"]
