"""Build our models from the original release's constructor arguments (its checkpoints' ``config``)."""
from __future__ import annotations

from typing import Any, Mapping

from .vmamba import VMamba

__all__ = ["create_from_original", "ORIGINAL_DEFAULTS"]

# The original VSSM constructor's defaults, so partial configs mean what they meant there.
ORIGINAL_DEFAULTS: Mapping[str, Any] = dict(
    patch_size=4, in_chans=3, num_classes=1000, depths=(2, 2, 9, 2), dims=(96, 192, 384, 768),
    ssm_d_state=16, ssm_ratio=2.0, ssm_dt_rank="auto", ssm_act_layer="silu", ssm_conv=3, ssm_conv_bias=True,
    ssm_drop_rate=0.0, ssm_init="v0", forward_type="v2", mlp_ratio=4.0, mlp_act_layer="gelu",
    mlp_drop_rate=0.0, gmlp=False, drop_path_rate=0.1, patch_norm=True, norm_layer="LN",
    downsample_version="v2", patchembed_version="v1", use_checkpoint=False, posembed=False, imgsize=224,
)

# forward_type -> z gate; these two are the released architectures (v05_noz: VMamba-T/S/B, v0: first release)
_FORWARD_TYPES = {"v05_noz": False, "v0": True}
_REQUIRED = dict(patch_size=4, ssm_act_layer="silu", mlp_act_layer="gelu", gmlp=False, patch_norm=True,
                 posembed=False, ssm_init="v0")


def create_from_original(config: Mapping[str, Any], **overrides) -> VMamba:
    """``VSSM(**config)`` of the original release, as a :class:`VMamba` with the same numerics.

    Unsupported options (other forward types, gMLP, position embeddings, ...) raise a ValueError
    naming the option. ``overrides`` go to :class:`VMamba` (e.g. ``drop_path_rate``, ``scan_backend``).
    """
    unknown = set(config) - set(ORIGINAL_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown original VMamba arguments: {sorted(unknown)}")
    c = dict(ORIGINAL_DEFAULTS, **config)
    if c["forward_type"] not in _FORWARD_TYPES:
        raise ValueError(f"forward_type={c['forward_type']!r} is not supported; vmamba_zoo reproduces the released "
                         f"architectures: {sorted(_FORWARD_TYPES)}")
    for key, value in _REQUIRED.items():
        if str(c[key]).lower() != str(value).lower():
            raise ValueError(f"original option {key}={c[key]!r} is not supported (only {value!r})")
    if str(c["norm_layer"]).lower() not in ("ln", "ln2d"):
        raise ValueError(f"norm_layer={c['norm_layer']!r} is not supported (ln or ln2d)")
    stems = {"v1": "patch", "v2": "conv"}
    downsamples = {"v1": "patch_merging", "v3": "conv"}
    if c["patchembed_version"] not in stems:
        raise ValueError(f"patchembed_version={c['patchembed_version']!r} is not supported ({sorted(stems)})")
    if c["downsample_version"] not in downsamples:
        raise ValueError(f"downsample_version={c['downsample_version']!r} is not supported ({sorted(downsamples)})")
    if c["mlp_drop_rate"] != c["ssm_drop_rate"]:
        raise ValueError("mlp_drop_rate and ssm_drop_rate must be equal (one proj_drop_rate here)")
    args = dict(
        in_chans=c["in_chans"], num_classes=c["num_classes"], dims=c["dims"], depths=c["depths"],
        d_state=c["ssm_d_state"], ssm_ratio=c["ssm_ratio"], dt_rank=c["ssm_dt_rank"], conv_kernel=c["ssm_conv"],
        conv_bias=c["ssm_conv_bias"], z_gate=_FORWARD_TYPES[c["forward_type"]], mlp_ratio=c["mlp_ratio"],
        stem_type=stems[c["patchembed_version"]], downsample_type=downsamples[c["downsample_version"]],
        proj_drop_rate=c["ssm_drop_rate"], drop_path_rate=c["drop_path_rate"],
    )
    args.update(overrides)
    model = VMamba(**args)
    if c["use_checkpoint"]:
        model.set_grad_checkpointing(True)
    return model
