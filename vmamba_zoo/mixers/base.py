"""The token-mixer interface and the registry of mixers by name.

A token mixer mixes information across the positions of a map. Every mixer:

* implements ``forward_tokens(x, size)``: channel-last tokens ``(batch, H*W, dim)`` of a map of ``size``
  ``(H, W)`` in, the same layout out, for any H, W >= 1, in the input's dtype. This is the layout blocks keep
  between convolutions: under torch.compile, inductor gives 4D tensors near a convolution channels-last
  strides for their own dims, which for a ``(batch, H, W, dim)`` map means H fastest (a strided write and a
  copy back). ``mixer(x)`` also takes a ``(batch, H, W, dim)`` map and returns one;
* is built as ``Mixer(dim, *, proj_drop=0.0, device=None, dtype=None, **options)``; its ``options`` are
  its own (``mixer_kwargs`` of :class:`vmamba_zoo.models.VMamba`), plus those of the model named in
  the class attribute ``model_options`` (e.g. ``backend``, the op backend; ``block_index``, the block's
  index in the whole network, for mixers that alternate their direction from block to block);
* reports FLOPs through the ops it runs, not by a method of its own: matmuls, convolutions, einsums and
  ``scaled_dot_product_attention`` are counted natively by torch's ``FlopCounterMode``
  (:func:`vmamba_zoo.analysis.flops.count_macs_torch`, which also works on the meta device), and the
  ``vmamba_zoo::*`` custom ops by the formulas registered in :mod:`vmamba_zoo.analysis.flops`. A mixer
  that runs an op neither knows must register a formula there; elementwise work is not counted (the
  papers' convention).

Register a mixer with ``@register_mixer("name")`` on a :class:`TokenMixer` subclass; build one with
``create_mixer("name", dim, **options)``; models take per-stage names, e.g.
``mixers=("ss2d", "ss2d", "xlstm", "attention")``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Dict, List, Optional, Tuple, Type

import torch.nn as nn
from torch import Tensor

__all__ = ["TokenMixer", "register_mixer", "create_mixer", "get_mixer", "list_mixers", "to_image", "to_tokens"]

Size = Tuple[int, int]


def to_tokens(x: Tensor) -> Tuple[Tensor, Size]:
    """NCHW map -> (batch, H*W, C) tokens and (H, W). A view when the map is channels-last in memory (what
    convolutions return for :func:`to_image` inputs)."""
    return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


def to_image(x: Tensor, size: Size) -> Tensor:
    """(batch, H*W, C) tokens -> the NCHW view a convolution takes: channels-last memory, no copy."""
    return x.transpose(1, 2).unflatten(2, size)

_MIXERS: Dict[str, Type["TokenMixer"]] = {}


class TokenMixer(nn.Module, ABC):
    """Base class of token mixers: ``forward_tokens(x: (B, H*W, C), (H, W)) -> (B, H*W, C)``; ``forward(x, size)``
    takes tokens with their size, or a (B, H, W, C) map alone. See the module doc."""

    name: ClassVar[str] = ""
    # options the model passes from its own arguments (the rest come from mixer_kwargs)
    model_options: ClassVar[Tuple[str, ...]] = ()

    @abstractmethod
    def forward_tokens(self, x: Tensor, size: Size) -> Tensor:
        ...

    def forward(self, x: Tensor, size: Optional[Size] = None) -> Tensor:
        if size is not None:
            return self.forward_tokens(x, size)
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} takes a (batch, H, W, C) map, or (batch, H*W, C) tokens with "
                             f"their size=(H, W); got shape {tuple(x.shape)} without a size")
        size = (x.shape[1], x.shape[2])
        return self.forward_tokens(x.flatten(1, 2), size).unflatten(1, size)


def register_mixer(name: str) -> Callable[[Type[TokenMixer]], Type[TokenMixer]]:
    """Class decorator: register a :class:`TokenMixer` subclass under ``name`` (sets ``cls.name``)."""

    def wrap(cls: Type[TokenMixer]) -> Type[TokenMixer]:
        if not (isinstance(cls, type) and issubclass(cls, TokenMixer)):
            raise TypeError(f"register_mixer({name!r}) needs a TokenMixer subclass, got {cls!r}")
        if name in _MIXERS and _MIXERS[name] is not cls:
            raise ValueError(f"a mixer named {name!r} is already registered ({_MIXERS[name].__qualname__})")
        cls.name = name
        _MIXERS[name] = cls
        return cls

    return wrap


def get_mixer(name: str) -> Type[TokenMixer]:
    if name not in _MIXERS:
        raise ValueError(f"unknown token mixer {name!r}; registered: {', '.join(list_mixers())}")
    return _MIXERS[name]


def list_mixers() -> List[str]:
    return sorted(_MIXERS)


def create_mixer(name: str, dim: int, **kwargs) -> TokenMixer:
    """Build the mixer registered as ``name`` for ``dim`` channels (kwargs: its constructor options)."""
    return get_mixer(name)(dim, **kwargs)
