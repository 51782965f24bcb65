"""VMamba as an OpenMMLab backbone for mmdet / mmseg.

The backbone is the timm classifier (:class:`vmamba_zoo.models.VMamba`) without its head: its ``stem``
and ``stages`` modules are reused as they are, plus one LayerNorm over channels per output (as the
original release's detection backbone). State-dict keys therefore stay those of the classifier,
``stem.*`` / ``stages.<i>.*``, plus ``out_norms.<i>.*``; the original detection backbone's
``outnorm<i>.*`` are mapped to ``out_norms.<i>.*`` on loading.
"""
from __future__ import annotations

import os
import re
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import timm
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import PretrainedInit
from mmengine.registry import MODELS
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..mixers import to_image
from ..models import CheckpointMismatchError, check_image_input, checkpoint_filter_fn, load_checkpoint_file
from ..models.checkpoint import is_original_layout, remap_original_keys, unwrap_state_dict

__all__ = ["VMambaBackbone", "SIZES"]

# size preset -> timm entrypoint whose defaults give the architecture (numbers live only there)
SIZES: Dict[str, str] = {
    "tiny": "vmamba_tiny", "small": "vmamba_small", "base": "vmamba_base",
    "vanilla_tiny": "vmamba_vanilla_tiny", "vanilla_small": "vmamba_vanilla_small",
    "vanilla_base": "vmamba_vanilla_base", "test": "test_vmamba",
    "tiny_mamba": "vmamba_tiny_mamba", "tiny_lstm": "vmamba_tiny_lstm", "tiny_xlstm": "vmamba_tiny_xlstm",
    "tiny_attn": "vmamba_tiny_attn",
}
NUM_STAGES = 4
_PRETRAINED_KEYS = {"type", "checkpoint", "use_ema", "prefix", "map_location"}
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, _BatchNorm)


@MODELS.register_module()
class VMambaBackbone(BaseModule):
    """VMamba backbone returning NCHW maps at strides 4, 8, 16, 32 (one per ``out_indices``).

    Any input of at least 32x32 works: v2 models ceil-divide odd sizes, the vanilla 4x4 stem floors.

    Args:
        size: architecture preset, a key of :data:`SIZES` ('tiny', 'small', 'base', 'vanilla_tiny',
            'vanilla_small', 'vanilla_base', 'test', and the other-mixer 'tiny_mamba', 'tiny_lstm',
            'tiny_xlstm', 'tiny_attn') or its timm name ('vmamba_tiny', ...).
        out_indices: stages to return (0..3), in increasing order. Stages after the last one are not built.
        frozen_stages: -1 freezes nothing; k >= 0 freezes the stem and stages 0..k-1 (with their output
            norms): no gradients, and kept in eval mode by ``train()``. Stage i begins with its
            downsample, so stage k's downsample stays trainable.
        norm_eval: ``train()`` leaves every norm layer in eval mode (mmdet's BatchNorm convention).
            LayerNorm computes the same in both modes, so this only matters for norm layers that
            track statistics; it does not freeze parameters (use ``frozen_stages`` or paramwise_cfg).
        with_cp: activation checkpointing of every block (the classifier's ``set_grad_checkpointing``).
        dims, depths, d_state, ssm_ratio, dt_rank, conv_kernel, conv_bias, z_gate, scan_directions,
        mlp_ratio, stem_type, downsample_type, proj_drop_rate, drop_path_rate, norm_eps, in_chans,
        scan_backend, mixers, mixer_kwargs: override the preset (None keeps it); meanings as in :class:`VMamba`
            (e.g. ``mixers=('ss2d', 'ss2d', 'xlstm', 'attention')``; lists from configs are fine).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH, use_ema=False, prefix='backbone.')`` loads
            our / timm-style / original-release classifier files or detector / segmentor files (keys
            under ``prefix``), strictly: a file of another architecture raises CheckpointMismatchError.
            Output norms absent from the file (classifier checkpoints) start as identity-affine LayerNorms.
            ``map_location`` is accepted and ignored (files are read on the CPU). Other init_cfg entries
            are applied by mmengine as usual, before the file is loaded.
    """

    def __init__(self, size: str = "tiny", out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 dims: Union[None, int, Sequence[int]] = None, depths: Optional[Sequence[int]] = None,
                 d_state: Optional[int] = None, ssm_ratio: Optional[float] = None,
                 dt_rank: Union[None, int, str] = None, conv_kernel: Optional[int] = None,
                 conv_bias: Optional[bool] = None, z_gate: Optional[bool] = None,
                 scan_directions: Optional[int] = None, mlp_ratio: Optional[float] = None,
                 stem_type: Optional[str] = None, downsample_type: Optional[str] = None,
                 proj_drop_rate: Optional[float] = None, drop_path_rate: Optional[float] = None,
                 norm_eps: Optional[float] = None, in_chans: Optional[int] = None,
                 scan_backend: Optional[str] = None, mixers: Union[None, str, Sequence[str]] = None,
                 mixer_kwargs: Union[None, dict, Sequence[Optional[dict]]] = None,
                 init_cfg: Union[None, dict, Sequence[dict]] = None):
        super().__init__(init_cfg=init_cfg)
        name = SIZES.get(size, size if size in SIZES.values() else None)
        if name is None:
            raise ValueError(f"unknown VMamba size {size!r}; choose one of {sorted(SIZES)}")
        self.out_indices = _check_out_indices(out_indices)
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) \
                or not -1 <= frozen_stages <= NUM_STAGES:
            raise ValueError(f"frozen_stages must be an int in -1..{NUM_STAGES}, got {frozen_stages!r}")
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        self._pretrained_cfg()  # reject a malformed Pretrained init_cfg now, not at init_weights()

        overrides = dict(dims=dims, depths=depths, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank,
                         conv_kernel=conv_kernel, conv_bias=conv_bias, z_gate=z_gate, scan_directions=scan_directions,
                         mlp_ratio=mlp_ratio, stem_type=stem_type, downsample_type=downsample_type,
                         proj_drop_rate=proj_drop_rate, drop_path_rate=drop_path_rate, norm_eps=norm_eps,
                         in_chans=in_chans, scan_backend=scan_backend, mixers=mixers, mixer_kwargs=mixer_kwargs)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        classifier = timm.create_model(name, num_classes=0, **overrides)
        classifier.set_grad_checkpointing(with_cp)
        self.in_chans, self.dims = classifier.in_chans, classifier.dims
        self.out_channels = tuple(self.dims[i] for i in self.out_indices)
        self.stem = classifier.stem
        # later stages would produce nothing used and get no gradient (DDP rejects unused parameters)
        self.stages = classifier.stages[:self.out_indices[-1] + 1]
        eps = overrides.get("norm_eps", 1e-5)
        self.out_norms = nn.ModuleDict({str(i): nn.LayerNorm(self.dims[i], eps=eps) for i in self.out_indices})
        self._freeze_stages()

    # ----- forward / train mode -----
    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        check_image_input(x, self.in_chans)
        x, size = self.stem(x)  # (batch, H*W, C) tokens of a map of size (H, W) from here on
        outs = []
        for i, stage in enumerate(self.stages):
            x, size = stage(x, size)
            if str(i) in self.out_norms:
                outs.append(to_image(self.out_norms[str(i)](x), size).contiguous())
        return tuple(outs)

    def _frozen_modules(self):
        if self.frozen_stages < 0:
            return []
        return [self.stem, *self.stages[:self.frozen_stages],
                *(norm for i, norm in self.out_norms.items() if int(i) < self.frozen_stages)]

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> "VMambaBackbone":
        super().train(mode)
        self._freeze_stages()  # re-applied: a detector's train() would otherwise switch them back
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _NORM_TYPES):
                    module.eval()
        return self

    # ----- weights -----
    def _pretrained_cfg(self) -> Optional[dict]:
        cfgs = self.init_cfg if isinstance(self.init_cfg, (list, tuple)) else [self.init_cfg] if self.init_cfg else []
        found = [c for c in cfgs if c.get("type") in ("Pretrained", PretrainedInit)]
        if len(found) > 1:
            raise ValueError(f"at most one Pretrained init_cfg, got {len(found)}")
        if found and (set(found[0]) - _PRETRAINED_KEYS or not found[0].get("checkpoint")):
            raise ValueError(f"Pretrained init_cfg takes checkpoint (required), use_ema, prefix, map_location; "
                             f"got {dict(found[0])}")
        return found[0] if found else None

    def init_weights(self) -> None:
        """mmengine's hook. A Pretrained init_cfg is loaded here, strictly (mmengine's PretrainedInit
        would load non-strictly and leave mismatched weights random); other entries go to mmengine."""
        pretrained = self._pretrained_cfg()
        if pretrained is None or self.is_init:
            super().init_weights()
            return
        cfgs = self.init_cfg if isinstance(self.init_cfg, (list, tuple)) else [self.init_cfg]
        saved, self.init_cfg = self.init_cfg, [c for c in cfgs if c is not pretrained] or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = saved
        self.load_pretrained(pretrained["checkpoint"], use_ema=pretrained.get("use_ema", False),
                             prefix=pretrained.get("prefix", "backbone."))

    def load_pretrained(self, checkpoint: Union[str, Mapping], use_ema: bool = False,
                        prefix: Optional[str] = "backbone.") -> None:
        """Load a file (read with weights_only=True) or an already loaded checkpoint dict; see init_cfg."""
        raw = checkpoint if isinstance(checkpoint, Mapping) else load_checkpoint_file(checkpoint)
        sd = unwrap_state_dict(_keep_prefixed(raw, prefix), use_ema=use_ema)
        if is_original_layout(sd):
            sd = remap_original_keys(sd)
        sd = self._fit(sd)
        missing = self.load_state_dict(sd, strict=False).missing_keys
        where = "the given checkpoint" if isinstance(checkpoint, Mapping) else os.fspath(checkpoint)
        note = " (output norms not in the file: initialised to identity affine)" if missing else ""
        print_log(f"VMambaBackbone: loaded {len(sd)} tensors from {where}{' (EMA)' if use_ema else ''}{note}",
                  logger="current")

    def _fit(self, sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Our-layout state dict -> the part this backbone holds; raise unless it fits exactly."""
        body, norms = {}, {}
        for key, value in sd.items():
            key = re.sub(r"^outnorm(\d+)\.", r"out_norms.\1.", key)  # the original detection backbone
            if key.startswith("head."):  # classifier norm and fc
                continue
            if m := re.match(r"out_norms\.(\d+)\.", key):
                if m[1] in self.out_norms:  # outputs this backbone does not produce are skipped
                    norms[key] = value
            elif (m := re.match(r"stages\.(\d+)\.", key)) and int(m[1]) >= len(self.stages):
                continue  # stages after the last output are not built
            else:
                body[key] = value
        # stem + stages: checked by the classifier's filter against a head-less view of this backbone
        view = nn.Module()
        view.stem, view.stages = self.stem, self.stages
        checkpoint_filter_fn(body, view)
        if norms:  # a detection checkpoint: its output norms must match ours
            expected = {k: v.shape for k, v in self.out_norms.state_dict(prefix="out_norms.").items()}
            got = {k: v.shape for k, v in norms.items()}
            if got != expected:
                raise CheckpointMismatchError(f"checkpoint output norms {got} do not match the backbone's {expected} "
                                              f"(out_indices={self.out_indices})")
        return {**body, **norms}


def _check_out_indices(out_indices) -> Tuple[int, ...]:
    indices = (out_indices,) if isinstance(out_indices, int) else tuple(out_indices)
    if not indices or len(set(indices)) != len(indices) \
            or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < NUM_STAGES for i in indices):
        raise ValueError(f"out_indices must be distinct stage indices in 0..{NUM_STAGES - 1}, got {out_indices!r}")
    return tuple(sorted(indices))


def _keep_prefixed(checkpoint: Mapping, prefix: Optional[str]) -> Mapping:
    """A detector / segmentor checkpoint holds the whole model: keep only its keys under ``prefix``
    (at the top level or one level down, e.g. under 'state_dict'), with the prefix removed."""
    if not prefix:
        return checkpoint

    def keep(sd: Mapping) -> Mapping:
        if not any(isinstance(k, str) and k.startswith(prefix) for k in sd):
            return sd
        return {k[len(prefix):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)}

    return keep({k: keep(v) if isinstance(v, Mapping) else v for k, v in checkpoint.items()})
