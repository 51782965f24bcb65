"""VMamba: Visual State Space Model (Liu et al., arXiv 2401.10166), for timm.

Two families share one implementation:
* VMamba-T/S/B (the v2 release): two-conv overlapping stem, conv downsampling, SS2D with
  d_state 1 and no z gate, an MLP after every mixer.
* vanilla VMamba (the first release): 4x4 patch stem, patch-merging downsampling, SS2D with
  d_state 16 and a z gate, no MLP.
Between stem and head, activations are channel-last tokens (batch, H*W, C) passed with their (H, W), and
convolutions take them as NCHW views (:func:`vmamba_zoo.mixers.to_image`): under torch.compile, inductor gives
4D tensors near a convolution channels-last strides for their own dims, so (batch, H, W, C) maps there would be
written H-fastest and copied back. ``forward_features`` returns (batch, H, W, C) (``output_fmt = 'NHWC'``),
``forward_intermediates`` NCHW by default.
"""
from __future__ import annotations

from functools import partial
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, SelectAdaptivePool2d, register_notrace_function, register_notrace_module, \
    trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint
from torch import Tensor

from ..mixers import create_mixer, get_mixer, to_image, to_tokens
from ..ops import LayerNorm  # nn.LayerNorm's parameters; fast for short rows, autocast-dtype output
from .checkpoint import checkpoint_filter_fn

__all__ = ["VMamba", "MIN_INPUT_SIZE"]

MIN_INPUT_SIZE = 32  # every stage keeps at least one position
Size = Tuple[int, int]

register_notrace_module(LayerNorm)  # one leaf under torch.fx: its forward checks shapes and dispatches on autocast


class ConvStem(nn.Module):
    """conv3x3/2 -> LN -> GELU -> conv3x3/2 -> LN (the v2 stem); NCHW image in, tokens and size out. Ceil-divides."""

    def __init__(self, in_chans: int, dim: int, eps: float = 1e-5, device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1, **dd)
        self.norm1 = LayerNorm(dim // 2, eps=eps, **dd)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1, **dd)
        self.norm2 = LayerNorm(dim, eps=eps, **dd)

    def forward(self, x: Tensor) -> Tuple[Tensor, Size]:
        x, size = to_tokens(self.conv1(x))
        x, size = to_tokens(self.conv2(to_image(self.act(self.norm1(x)), size)))
        return self.norm2(x), size


class PatchStem(nn.Module):
    """conv4x4/4 -> LN (the first release's stem). Floors odd sizes, as the released models do."""

    def __init__(self, in_chans: int, dim: int, eps: float = 1e-5, device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.conv = nn.Conv2d(in_chans, dim, 4, stride=4, **dd)
        self.norm = LayerNorm(dim, eps=eps, **dd)

    def forward(self, x: Tensor) -> Tuple[Tensor, Size]:
        x, size = to_tokens(self.conv(x))
        return self.norm(x), size


class ConvDownsample(nn.Module):
    """conv3x3/2 -> LN, tokens and size in and out (v2)."""

    def __init__(self, dim: int, out_dim: int, eps: float = 1e-5, device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, stride=2, padding=1, **dd)
        self.norm = LayerNorm(out_dim, eps=eps, **dd)

    def forward(self, x: Tensor, size: Size) -> Tuple[Tensor, Size]:
        x, size = to_tokens(self.conv(to_image(x, size)))
        return self.norm(x), size


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood -> LN(4C) -> Linear(4C -> out), tokens and size in and out (first release).

    Odd sizes are zero-padded to even first; the phase order (0,0), (1,0), (0,1), (1,1) (row offset
    first) is the one the released weights were trained with.
    """

    def __init__(self, dim: int, out_dim: int, eps: float = 1e-5, device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.norm = LayerNorm(4 * dim, eps=eps, **dd)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False, **dd)

    def forward(self, x: Tensor, size: Size) -> Tuple[Tensor, Size]:
        batch, channels, (height, width) = x.shape[0], x.shape[2], size
        # 5D and 6D views: no 4D map for inductor's layout choice (see the module doc)
        x = F.pad(x.reshape(batch, height, width, 1, channels), (0, 0, 0, 0, 0, width % 2, 0, height % 2))
        height, width = height + height % 2, width + width % 2
        # (batch, H/2, row phase, W/2, column phase, C) -> the phases (0,0), (1,0), (0,1), (1,1) along channels
        x = x.view(batch, height // 2, 2, width // 2, 2, channels).permute(0, 1, 3, 4, 2, 5)
        x = x.reshape(batch, height * width // 4, 4 * channels)
        return self.reduction(self.norm(x)), (height // 2, width // 2)


class VSSBlock(nn.Module):
    """x + DropPath(mixer(LN(x))), then x + DropPath(MLP(LN(x))) when mlp_ratio > 0. Tokens of a map of ``size``.

    ``mixer`` names a registered token mixer (:mod:`vmamba_zoo.mixers`), built with ``mixer_kwargs``.
    """

    def __init__(self, dim: int, mixer_kwargs: dict, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 proj_drop: float = 0.0, eps: float = 1e-5, mixer: str = "ss2d", device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=eps, **dd)
        self.mixer = create_mixer(mixer, dim, proj_drop=proj_drop, **mixer_kwargs, **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp: Optional[nn.Module] = None
        if mlp_ratio > 0:
            self.norm2 = LayerNorm(dim, eps=eps, **dd)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop, **dd)
            self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, size: Size) -> Tensor:
        x = x + self.drop_path1(self.mixer(self.norm1(x), size))
        if self.mlp is not None:
            x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class VMambaStage(nn.Module):
    """[downsample] -> blocks. The stage output (what detection backbones take) is the blocks' output."""

    def __init__(self, in_dim: int, dim: int, depth: int, downsample: Optional[type], drop_path: Sequence[float],
                 block_kwargs: Union[dict, Sequence[dict]], eps: float = 1e-5, device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.downsample = downsample(in_dim, dim, eps=eps, **dd) if downsample is not None else None
        per_block = [block_kwargs] * depth if isinstance(block_kwargs, dict) else list(block_kwargs)
        self.blocks = nn.Sequential(*[VSSBlock(dim, drop_path=drop_path[i], eps=eps, **per_block[i], **dd)
                                      for i in range(depth)])
        self.grad_checkpointing = False

    def forward(self, x: Tensor, size: Size) -> Tuple[Tensor, Size]:
        if self.downsample is not None:
            x, size = self.downsample(x, size)
        for block in self.blocks:
            x = checkpoint(block, x, size) if self.grad_checkpointing and not torch.jit.is_scripting() \
                else block(x, size)
        return x, size


class VMambaHead(nn.Module):
    """LN over channels -> global pool -> dropout -> Linear, on NHWC features (norm before pooling)."""

    def __init__(self, dim: int, num_classes: int, global_pool: str = "avg", drop_rate: float = 0.0,
                 eps: float = 1e-5, norm: bool = True, device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim, eps=eps, **dd) if norm else nn.Identity()  # feeds pooling: keeps fp32
        self.global_pool = self._make_pool(global_pool)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(dim, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, global_pool: Optional[str] = None, device=None, dtype=None) -> None:
        if global_pool is not None:
            self.global_pool = self._make_pool(global_pool)
        self.fc = nn.Identity()
        if num_classes > 0:
            self.fc = nn.Linear(self.dim, num_classes, device=device, dtype=dtype)
            trunc_normal_(self.fc.weight, std=0.02)
            nn.init.zeros_(self.fc.bias)
        self.train(self.training)  # new modules follow the model's train/eval mode

    @staticmethod
    def _make_pool(global_pool: str) -> SelectAdaptivePool2d:
        # concat pooling would double the width the classifier is sized for: refuse it (as timm's ConvNeXt)
        assert "catavgmax" not in (global_pool or ""), "VMamba's head does not support catavgmax pooling"
        # global_pool='' keeps the unpooled (batch, H, W, C) map (timm contract): only flatten a pooled map
        return SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool), input_fmt="NHWC")

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(self.global_pool(self.norm(x)))
        return x if pre_logits else self.fc(x)


@register_notrace_function  # python control flow on shapes: a leaf under torch.fx
def check_image_input(x: Tensor, in_chans: int, min_size: int = MIN_INPUT_SIZE) -> None:
    """Raise a ValueError naming the problem unless x is a (batch, in_chans, H>=min, W>=min) tensor."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"VMamba expects a 4D image tensor (batch, {in_chans}, H, W), got {shape}")
    if x.shape[1] != in_chans:
        raise ValueError(f"VMamba was built for {in_chans} input channels but the image has {x.shape[1]} "
                         f"(shape {tuple(x.shape)}); create the model with in_chans={x.shape[1]} or fix the input")
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(f"VMamba needs images of at least {min_size}x{min_size} (4 stages of stride 32), "
                         f"got {x.shape[2]}x{x.shape[3]}")


def _to_stage_tuple(value, name: str) -> Tuple[int, ...]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(values) != 4 or any(int(v) <= 0 for v in values):
        raise ValueError(f"{name} must give 4 positive stage values, got {value!r}")
    return tuple(int(v) for v in values)


def _stage_mixers(mixers, mixer_kwargs) -> Tuple[Tuple[str, ...], Tuple[dict, ...]]:
    """``mixers`` (a name or 4 names) and ``mixer_kwargs`` (None, a dict for every stage, or 4 dicts/None)
    -> 4 registered names and 4 dicts. Lists are accepted (YAML / mmengine configs give lists)."""
    names = (mixers,) * 4 if isinstance(mixers, str) else tuple(mixers)
    if len(names) != 4 or not all(isinstance(n, str) for n in names):
        raise ValueError(f"mixers must be a mixer name or 4 stage names, got {mixers!r}")
    for name in names:
        get_mixer(name)  # a ValueError listing the registered names
    if mixer_kwargs is None or isinstance(mixer_kwargs, dict):
        kwargs = (dict(mixer_kwargs or {}),) * 4
    else:
        kwargs = tuple(dict(k or {}) for k in mixer_kwargs)
        if len(kwargs) != 4:
            raise ValueError(f"mixer_kwargs must be a dict or 4 stage dicts, got {mixer_kwargs!r}")
    return names, kwargs


class VMamba(nn.Module):
    """VMamba backbone + classifier.

    Args:
        in_chans, num_classes, global_pool, drop_rate, drop_path_rate: as every timm model.
        dims: stage widths, or the first stage's width (then doubled per stage).
        depths: VSS blocks per stage.
        mixers: token mixer of each stage, a registered name (:func:`vmamba_zoo.mixers.list_mixers`:
            "ss2d", "mamba", "lstm", "xlstm", "attention") or 4 names, e.g. ("ss2d", "ss2d", "xlstm", "attention").
        mixer_kwargs: options of the mixers, a dict for every stage or 4 dicts (None = defaults).
        d_state, ssm_ratio, dt_rank, conv_kernel, conv_bias, z_gate, scan_directions: SS2D options (ss2d
            stages; mixer_kwargs of a stage override them). Other mixers take their options from
            mixer_kwargs only, plus ``scan_backend`` and the block index where they declare them.
        mlp_ratio: MLP hidden width / dim after each mixer; 0 disables the MLP (first release).
        stem_type: "conv" (two 3x3 stride-2 convs, v2) or "patch" (4x4 stride-4, first release).
        downsample_type: "conv" (3x3 stride-2 conv, v2) or "patch_merging" (first release).
        proj_drop_rate: dropout inside the mixer and MLP.
        norm_eps: LayerNorm epsilon.
        scan_backend: op backend for the scans ("auto", "reference", ...).
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, global_pool: str = "avg",
                 dims: Union[int, Sequence[int]] = 96, depths: Sequence[int] = (2, 2, 9, 2), d_state: int = 1,
                 ssm_ratio: float = 1.0, dt_rank: Union[int, str] = "auto", conv_kernel: int = 3,
                 conv_bias: bool = False, z_gate: bool = False, scan_directions: int = 4, mlp_ratio: float = 4.0,
                 stem_type: str = "conv", downsample_type: str = "conv", drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0, drop_path_rate: float = 0.1, norm_eps: float = 1e-5,
                 scan_backend: str = "auto", mixers: Union[str, Sequence[str]] = "ss2d",
                 mixer_kwargs: Union[None, dict, Sequence[Optional[dict]]] = None, device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if isinstance(dims, int):
            dims = tuple(dims * 2 ** i for i in range(4))
        dims, depths = _to_stage_tuple(dims, "dims"), _to_stage_tuple(depths, "depths")
        stems = {"conv": ConvStem, "patch": PatchStem}
        downsamples = {"conv": ConvDownsample, "patch_merging": PatchMerging}
        if stem_type not in stems:
            raise ValueError(f"stem_type must be one of {sorted(stems)}, got {stem_type!r}")
        if downsample_type not in downsamples:
            raise ValueError(f"downsample_type must be one of {sorted(downsamples)}, got {downsample_type!r}")
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.dims, self.depths = dims, depths
        self.mixers, self.mixer_kwargs = _stage_mixers(mixers, mixer_kwargs)
        self.output_fmt = "NHWC"
        self.num_features = self.head_hidden_size = dims[-1]

        self.stem = stems[stem_type](in_chans, dims[0], eps=norm_eps, **dd)
        model_options = dict(d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank, conv_kernel=conv_kernel,
                             conv_bias=conv_bias, z_gate=z_gate, scan_directions=scan_directions,
                             backend=scan_backend)

        def block_kwargs(stage: int, block_index: int) -> dict:
            mixer = self.mixers[stage]
            options = dict(model_options, block_index=block_index)
            kwargs = {k: options[k] for k in get_mixer(mixer).model_options}
            return dict(mixer=mixer, mixer_kwargs=dict(kwargs, **self.mixer_kwargs[stage]), mlp_ratio=mlp_ratio,
                        proj_drop=proj_drop_rate)

        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").split(list(depths))
        self.stages = nn.Sequential(*[
            VMambaStage(dims[max(i - 1, 0)], dims[i], depths[i], downsamples[downsample_type] if i else None,
                        dpr[i].tolist(), [block_kwargs(i, sum(depths[:i]) + j) for j in range(depths[i])],
                        eps=norm_eps, **dd)
            for i in range(4)])
        self.feature_info = [dict(num_chs=dims[i], reduction=4 * 2 ** i, module=f"stages.{i}") for i in range(4)]
        self.head = VMambaHead(dims[-1], num_classes, global_pool, drop_rate, eps=norm_eps, **dd)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # ----- timm model API -----
    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {"*.A_logs", "*.Ds"}  # SSM decay rates and skips, as the paper's recipe

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else [
            (r"^stages\.(\d+)\.downsample", (0,)),
            (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            (r"^head\.norm", (99999,)),
        ])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        ref = next(self.parameters())
        self.head.reset(num_classes, global_pool, device=ref.device, dtype=ref.dtype)

    def forward_intermediates(self, x: Tensor, indices: Optional[Union[int, List[int]]] = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False
                              ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """Stage outputs (before the next stage's downsample), NCHW by default; ``norm`` applies the
        head norm to the last stage's output."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        check_image_input(x, self.in_chans)
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last_index = len(self.stages) - 1
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[:max_index + 1]
        intermediates = []
        x, size = self.stem(x)
        for index, stage in enumerate(stages):
            x, size = stage(x, size)
            if index in take_indices:
                feat = (self.head.norm(x) if norm and index == last_index else x).unflatten(1, size)
                intermediates.append(feat.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else feat)
        if intermediates_only:
            return intermediates
        return x.unflatten(1, size), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        ref = next(self.parameters())
        if max_index < len(self.stages) - 1:
            # features now end at an earlier stage: the head (sized for the last one) goes
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self.head = VMambaHead(self.num_features, 0, "", norm=False, device=ref.device, dtype=ref.dtype)
            self.head.train(self.training)
            self.num_classes = 0
        else:
            if prune_norm:
                self.head.norm = nn.Identity()
            if prune_head:
                self.reset_classifier(0, "")
        self.stages = self.stages[:max_index + 1]
        self.stages.training = self.training  # slicing makes a new container in train mode
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        check_image_input(x, self.in_chans)
        x, size = self.stem(x)
        for stage in self.stages:
            x, size = stage(x, size)
        return x.unflatten(1, size)  # (batch, H, W, C): after the last convolution, no layout cost

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(url: str = "", **kwargs) -> dict:
    return {
        "url": url, "num_classes": 1000, "input_size": (3, 224, 224), "test_input_size": (3, 224, 224),
        "pool_size": (7, 7), "min_input_size": (3, MIN_INPUT_SIZE, MIN_INPUT_SIZE), "crop_pct": 0.875,
        "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv1", "classifier": "head.fc", "license": "mit",
        "paper_ids": "arXiv:2401.10166", "paper_name": "VMamba: Visual State Space Model",
        "origin_url": "https://github.com/MzeroMiko/VMamba", **kwargs,
    }


_RELEASES = "https://github.com/MzeroMiko/VMamba/releases/download"
default_cfgs = generate_default_cfgs({
    "vmamba_tiny.in1k": _cfg(url=f"{_RELEASES}/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth"),
    "vmamba_small.in1k": _cfg(url=f"{_RELEASES}/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth"),
    "vmamba_base.in1k": _cfg(url=f"{_RELEASES}/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth"),
    "vmamba_vanilla_tiny.in1k": _cfg(url=f"{_RELEASES}/%23v0cls/vssmtiny_dp01_ckpt_epoch_292.pth",
                                     first_conv="stem.conv"),
    "vmamba_vanilla_small.in1k": _cfg(url=f"{_RELEASES}/%23v0cls/vssmsmall_dp03_ckpt_epoch_238.pth",
                                      first_conv="stem.conv"),
    "vmamba_vanilla_base.in1k": _cfg(url=f"{_RELEASES}/%23v0cls/vssmbase_dp06_ckpt_epoch_241.pth",
                                     first_conv="stem.conv"),
    **{f"{name}.untrained": _cfg() for name in ("vmamba_tiny_mamba", "vmamba_tiny_lstm", "vmamba_tiny_xlstm",
                                                  "vmamba_tiny_attn")},
    "test_vmamba.untrained": _cfg(input_size=(3, 160, 160), test_input_size=(3, 160, 160), pool_size=(5, 5),
                                  crop_pct=0.95),
})


def _create_vmamba(variant: str, pretrained: bool = False, **kwargs) -> VMamba:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_model_with_cfg(
        VMamba, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


# Architecture of each released model: the original's constructor arguments, named for what they are.
V2_ARGS = dict(d_state=1, dt_rank="auto", conv_kernel=3, conv_bias=False, z_gate=False, mlp_ratio=4.0,
               stem_type="conv", downsample_type="conv")
VANILLA_ARGS = dict(d_state=16, ssm_ratio=2.0, dt_rank="auto", conv_kernel=3, conv_bias=True, z_gate=True,
                    mlp_ratio=0.0, stem_type="patch", downsample_type="patch_merging")


@register_model
def vmamba_tiny(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-T (s1l8): 30.2M params, 4.9 GMACs, 82.6% ImageNet top-1."""
    args = dict(dims=96, depths=(2, 2, 8, 2), ssm_ratio=1.0, drop_path_rate=0.2, **V2_ARGS)
    return _create_vmamba("vmamba_tiny", pretrained, **dict(args, **kwargs))


@register_model
def vmamba_small(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-S (s2l15): 50.1M params, 8.7 GMACs, 83.6% ImageNet top-1."""
    args = dict(dims=96, depths=(2, 2, 15, 2), ssm_ratio=2.0, drop_path_rate=0.3, **V2_ARGS)
    return _create_vmamba("vmamba_small", pretrained, **dict(args, **kwargs))


@register_model
def vmamba_base(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-B (s2l15): 88.6M params, 15.4 GMACs, 83.9% ImageNet top-1."""
    args = dict(dims=128, depths=(2, 2, 15, 2), ssm_ratio=2.0, drop_path_rate=0.6, **V2_ARGS)
    return _create_vmamba("vmamba_base", pretrained, **dict(args, **kwargs))


@register_model
def vmamba_vanilla_tiny(pretrained: bool = False, **kwargs) -> VMamba:
    """First-release VMamba-T: 22.9M params, 5.6 GMACs, 82.2% ImageNet top-1."""
    args = dict(dims=96, depths=(2, 2, 9, 2), drop_path_rate=0.1, **VANILLA_ARGS)
    return _create_vmamba("vmamba_vanilla_tiny", pretrained, **dict(args, **kwargs))


@register_model
def vmamba_vanilla_small(pretrained: bool = False, **kwargs) -> VMamba:
    """First-release VMamba-S: 44.4M params, 11.2 GMACs, 83.5% ImageNet top-1."""
    args = dict(dims=96, depths=(2, 2, 27, 2), drop_path_rate=0.3, **VANILLA_ARGS)
    return _create_vmamba("vmamba_vanilla_small", pretrained, **dict(args, **kwargs))


@register_model
def vmamba_vanilla_base(pretrained: bool = False, **kwargs) -> VMamba:
    """First-release VMamba-B: 76.3M params, 18.0 GMACs, 83.7% ImageNet top-1."""
    args = dict(dims=128, depths=(2, 2, 27, 2), drop_path_rate=0.6, **VANILLA_ARGS)
    return _create_vmamba("vmamba_vanilla_base", pretrained, **dict(args, **kwargs))


# VMamba-T with other token mixers: vmamba_tiny's stem, stages, MLPs and drop-path, only the mixers differ;
# options chosen to land within 10% of VMamba-T's 30.2M parameters (untrained: no weights released).
def _tiny_with_mixers(variant: str, pretrained: bool, mixers, mixer_kwargs, **kwargs) -> VMamba:
    args = dict(dims=96, depths=(2, 2, 8, 2), ssm_ratio=1.0, drop_path_rate=0.2, mixers=mixers,
                mixer_kwargs=mixer_kwargs, **V2_ARGS)
    return _create_vmamba(variant, pretrained, **dict(args, **kwargs))


@register_model
def vmamba_tiny_mamba(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-T with Mamba (S6, d_state 16, expand 1) blocks, bidirectional rows as Vision Mamba: 32.5M params."""
    return _tiny_with_mixers("vmamba_tiny_mamba", pretrained, "mamba", dict(scan_directions=2), **kwargs)


@register_model
def vmamba_tiny_lstm(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-T with LSTMs over rows and columns, both ways (hidden dim / 4 per direction): 30.1M params."""
    return _tiny_with_mixers("vmamba_tiny_lstm", pretrained, "lstm", dict(scan_directions=4, hidden_ratio=0.25),
                             **kwargs)


@register_model
def vmamba_tiny_xlstm(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-T with xLSTM: mLSTM in stages 0-2, sLSTM in stage 3 (a sequential recurrence, cheap at stride 32);
    one scan direction alternating per block as Vision-LSTM: 29.8M params."""
    mlstm = dict(cell="mlstm", scan_directions=1, inner_ratio=0.5, num_heads=4)
    return _tiny_with_mixers("vmamba_tiny_xlstm", pretrained, "xlstm",
                             (mlstm, mlstm, mlstm, dict(mlstm, cell="slstm")), **kwargs)


@register_model
def vmamba_tiny_attn(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-T with self-attention: 7x7 windows in stages 0-1, global in stages 2-3, head width 32, queries and
    keys at half width (qk_ratio 0.5; full width would be 33.8M, +12%): 31.4M params."""
    local, world = dict(window_size=7, qk_ratio=0.5), dict(window_size=0, qk_ratio=0.5)
    return _tiny_with_mixers("vmamba_tiny_attn", pretrained, "attention", (local, local, world, world), **kwargs)


@register_model
def test_vmamba(pretrained: bool = False, **kwargs) -> VMamba:
    """A very small VMamba (v2 layout) for fast tests."""
    args = dict(dims=16, depths=(1, 1, 2, 1), ssm_ratio=1.0, drop_path_rate=0.0, **V2_ARGS)
    return _create_vmamba("test_vmamba", pretrained, **dict(args, **kwargs))
