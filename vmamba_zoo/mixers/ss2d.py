"""SS2D: the 2D selective-scan token mixer of VMamba.

Receives and returns channel-last tokens (batch, H*W, dim) (see :class:`TokenMixer`):
    in_proj (dim -> d_inner, or 2*d_inner with a z gate) -> depthwise conv -> SiLU
    -> cross-scan into ``scan_directions`` sequences -> per-direction low-rank projection to
    (dt, B, C) -> selective scan -> cross-merge -> out_norm [-> * SiLU(z)] -> out_proj.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import Tensor

from ..ops import LayerNorm
from ..ops.ss2d import ss2d_scan_projected
from ..ops.reference.cross_scan import SCAN_DIRECTIONS
from .base import TokenMixer, register_mixer, to_image, to_tokens

__all__ = ["SS2D", "ss2d_scan"]


@register_notrace_function  # shape arithmetic: one leaf node under torch.fx tracing
def ss2d_scan(x: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor, dt_projs_bias: Tensor, A_logs: Tensor,
              Ds: Tensor, scan_directions: int = 4, backend: str = "auto", size: Optional[Tuple[int, int]] = None
              ) -> Tensor:
    """Cross-scan -> selective scan -> cross-merge of a (batch, H, W, D) map, or of (batch, H*W, D) tokens of
    ``size`` (H, W).

    Returns x's layout in float32 (the scan state precision).
    x_proj_weight (K, R+2N, D), dt_projs_weight (K, D, R), dt_projs_bias (K, D), A_logs (K*D, N), Ds (K*D).
    """
    channels = x.shape[-1]
    height, width = (x.shape[1], x.shape[2]) if size is None else size
    k, proj_channels = x_proj_weight.shape[:2]
    if k != scan_directions:
        raise ValueError(f"x_proj_weight holds {k} directions' projections, scan_directions is {scan_directions}")
    # the per-direction projection of every pixel, as one matrix product in pixel order, then put in each scan
    # order (R+2N channels per direction: cheap) instead of projecting K directional copies of the map
    tokens = x if size is not None else x.flatten(1, 2)
    proj = F.linear(tokens, x_proj_weight.reshape(k * proj_channels, channels))
    y = ss2d_scan_projected(tokens, proj, dt_projs_weight, dt_projs_bias, A_logs, Ds, (height, width),
                            scan_directions, backend)
    return y if size is not None else y.view(x.shape)


# also wrapped by name: under fx the mixers' forward (TokenMixer.forward) has base.py's globals, where timm's
# notrace registry does not look
torch.fx.wrap("ss2d_scan")


@register_mixer("ss2d")
class SS2D(TokenMixer):
    """2D selective-scan mixer (VMamba). Channel-last tokens in and out.

    Per direction k of the cross-scan and channel d (the selective scan, N = d_state):
        h_t = exp(delta_t A_d) h_{t-1} + delta_t B_t u_t,   y_t = C_t . h_t + D_d u_t,
    with delta_t = softplus(dt_proj(x_proj(u_t)) + bias) and B_t, C_t = x_proj(u_t); the K outputs are
    summed back onto their pixels. FLOPs: the scan op's registered formula, projections natively.

    Args:
        dim: input/output channels.
        d_state: SSM state size N per channel.
        ssm_ratio: d_inner = int(ssm_ratio * dim) channels inside the mixer.
        dt_rank: rank of the delta projection; "auto" = ceil(dim / 16).
        conv_kernel: depthwise conv size before the scan (0 or 1 disables it).
        conv_bias: bias on the depthwise conv (the first release had one).
        z_gate: multiply the output by SiLU of a second input projection (the first release).
        scan_directions: 4 (rows, columns, both reversed), 2 (rows both ways) or 1.
        proj_drop: dropout after out_proj.
        backend: op backend ("auto", "reference", or a registered kernel backend).
    """

    model_options = ("d_state", "ssm_ratio", "dt_rank", "conv_kernel", "conv_bias", "z_gate", "scan_directions",
                     "backend")

    def __init__(self, dim: int, d_state: int = 1, ssm_ratio: float = 1.0, dt_rank: Union[int, str] = "auto",
                 conv_kernel: int = 3, conv_bias: bool = False, z_gate: bool = False, scan_directions: int = 4,
                 proj_drop: float = 0.0, dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 backend: str = "auto", device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        if scan_directions not in SCAN_DIRECTIONS:
            raise ValueError(f"scan_directions must be one of {SCAN_DIRECTIONS}, got {scan_directions}")
        d_inner = int(ssm_ratio * dim)
        dt_rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        k = scan_directions
        self.d_inner, self.d_state, self.dt_rank, self.scan_directions = d_inner, d_state, dt_rank, k
        self.z_gate, self.backend = z_gate, backend
        self.dt_init = (dt_min, dt_max, dt_init_floor)

        self.in_proj = nn.Linear(dim, d_inner * (2 if z_gate else 1), bias=False, **dd)
        self.conv = (nn.Conv2d(d_inner, d_inner, conv_kernel, padding=(conv_kernel - 1) // 2, groups=d_inner,
                               bias=conv_bias, **dd) if conv_kernel > 1 else nn.Identity())
        self.act = nn.SiLU()
        self.x_proj_weight = nn.Parameter(torch.empty(k, dt_rank + 2 * d_state, d_inner, **dd))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, dt_rank, **dd))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner, **dd))
        self.A_logs = nn.Parameter(torch.empty(k * d_inner, d_state, **dd))
        self.Ds = nn.Parameter(torch.empty(k * d_inner, **dd))
        self.out_norm = LayerNorm(d_inner, **dd)
        self.out_proj = nn.Linear(d_inner, dim, bias=False, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Initialise the SSM parameters as the original release does (Mamba's scheme)."""
        dt_min, dt_max, floor = self.dt_init
        nn.init.uniform_(self.x_proj_weight, -self.d_inner ** -0.5, self.d_inner ** -0.5)
        nn.init.uniform_(self.dt_projs_weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        # dt log-uniform in [dt_min, dt_max]; store its inverse softplus so softplus(bias) == dt
        dt = torch.exp(torch.rand_like(self.dt_projs_bias, dtype=torch.float32)
                       * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        states = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_logs.device)
        self.A_logs.copy_(torch.log(states).expand_as(self.A_logs))  # A = -(1..N): S4D-real
        self.Ds.fill_(1.0)

    def forward_tokens(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        x = self.in_proj(x)
        z: Optional[Tensor] = None
        if self.z_gate:
            x, z = x.chunk(2, dim=-1)
        x = to_tokens(self.act(self.conv(to_image(x, size))))[0]  # the conv keeps token memory: no copy
        y = ss2d_scan(x, self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_logs, self.Ds,
                      self.scan_directions, self.backend, size=size)
        y = self.out_norm(y.to(self.out_norm.weight.dtype))  # the scan returns float32 whatever the model dtype
        if z is not None:
            y = y * F.silu(z)
        return self.proj_drop(self.out_proj(y.to(x.dtype)))  # .to, not cast(): torch.fx traces this forward
