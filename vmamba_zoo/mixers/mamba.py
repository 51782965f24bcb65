"""Mamba (S6) block as a token mixer over the scan directions of a 2D map (Vision Mamba style).

For each scan direction k (``scan_directions`` 1: rows; 2: rows both ways, Vision Mamba's
bidirectional block; 4: rows and columns both ways), with shared in/out projections and per-direction
conv, projections and SSM parameters (d_inner = expand * dim, N = d_state):
    u, z = in_proj(x)                                  (pointwise, shared by the directions)
    u'_t = SiLU(sum_j w_j u_{t-j} + b)                  (causal depthwise conv1d along the scan)
    dt_t, B_t, C_t = x_proj(u'_t);  delta_t = softplus(dt_proj(dt_t) + bias)
    h_t = exp(delta_t A) h_{t-1} + delta_t B_t u'_t,  y_t = C_t . h_t + D u'_t   (selective scan op)
    out = out_proj(mean_k(y^k on its pixels) * SiLU(z))
FLOPs: the selective-scan op's formula (9*B*L*K*d_inner*N + ...), projections and conv natively.
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import Tensor

from ..ops import SCAN_DIRECTIONS, cross_merge, cross_scan, selective_scan
from .base import TokenMixer, register_mixer
from .ss2d import SS2D

__all__ = ["Mamba"]


@register_notrace_module  # shape arithmetic in forward: one leaf module under timm's fx tracing
@register_mixer("mamba")
class Mamba(TokenMixer):
    """Mamba block over 1, 2 or 4 scan directions of a 2D map. See the module doc.

    Args:
        dim: input/output channels. d_state: SSM state size N (16 as Mamba).
        expand: d_inner = int(expand * dim). dt_rank: "auto" = ceil(dim / 16).
        conv_kernel: causal depthwise conv1d width. scan_directions: 1, 2 or 4.
        proj_drop: dropout after out_proj. backend: op backend of the scan ops.
    """

    model_options = ("backend",)

    def __init__(self, dim: int, d_state: int = 16, expand: float = 1.0, dt_rank: Union[int, str] = "auto",
                 conv_kernel: int = 4, scan_directions: int = 2, proj_drop: float = 0.0, dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, backend: str = "auto", device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if scan_directions not in SCAN_DIRECTIONS:
            raise ValueError(f"scan_directions must be one of {SCAN_DIRECTIONS}, got {scan_directions}")
        d_inner = int(expand * dim)
        dt_rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        k = scan_directions
        self.d_inner, self.d_state, self.dt_rank, self.scan_directions = d_inner, d_state, dt_rank, k
        self.backend, self.dt_init = backend, (dt_min, dt_max, dt_init_floor)
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False, **dd)
        # one grouped conv holds the K directions' depthwise filters; left padding + crop makes it causal
        self.conv1d = nn.Conv1d(k * d_inner, k * d_inner, conv_kernel, padding=conv_kernel - 1, groups=k * d_inner,
                                **dd)
        self.act = nn.SiLU()
        self.x_proj_weight = nn.Parameter(torch.empty(k, dt_rank + 2 * d_state, d_inner, **dd))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, dt_rank, **dd))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner, **dd))
        self.A_logs = nn.Parameter(torch.empty(k * d_inner, d_state, **dd))
        self.Ds = nn.Parameter(torch.empty(k * d_inner, **dd))
        self.out_proj = nn.Linear(d_inner, dim, bias=False, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        SS2D.reset_ssm_parameters(self)  # same parameter names and init scheme as SS2D (Mamba's)

    def forward_tokens(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        (batch, length, _), (height, width) = x.shape, size
        k, d_inner = self.scan_directions, self.d_inner
        u, z = self.in_proj(x).chunk(2, dim=-1)
        us = cross_scan(u.contiguous().view(batch, height, width, d_inner), k, channels_last=True,
                        backend=self.backend)  # (batch, K, d_inner, L)
        us = self.act(self.conv1d(us.reshape(batch, k * d_inner, length))[..., :length])
        x_dbl = torch.einsum("bkdl,kcd->bkcl", us.view(batch, k, d_inner, length), self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        state_dtype = torch.promote_types(self.A_logs.dtype, torch.float32)
        ys = selective_scan(
            us, dts.reshape(batch, k * d_inner, length), -torch.exp(self.A_logs.to(state_dtype)), Bs.contiguous(),
            Cs.contiguous(), self.Ds.to(state_dtype), None, self.dt_projs_bias.reshape(-1).to(state_dtype),
            delta_softplus=True, fp32_output=True, backend=self.backend)
        y = cross_merge(ys.view(batch, k, d_inner, length), height, width, k, channels_last=True,
                        backend=self.backend).view(batch, length, d_inner) / k  # the mean: scale independent of K
        return self.proj_drop(self.out_proj(y.to(x.dtype) * F.silu(z)))
