"""FLOPs (MACs) of mmdet detectors and mmseg segmentors built from a config, counted as the VMamba paper did.

The paper's detection / segmentation figures (Mask R-CNN at 1280x800, UperNet at 512x2048) come from the
original release's analysis code: fvcore over the whole model with a handle for the selective scan. Its
protocol, which :func:`mm_complexity` follows:

* the model is built from the config (random weights: nothing is loaded) and put in eval mode;
* one random ``1x3xHxW`` tensor (H first: ``1280x800`` is 1280 rows by 800 columns) goes straight to
  ``model(inputs, data_samples, mode='tensor')``, i.e. mmdet's / mmseg's ``_forward``; the
  data_preprocessor (normalisation, padding) is bypassed;
* a detector runs backbone, neck, RPN head, proposal decoding + NMS, then the RoI heads: the bbox head on
  every proposal (up to ``test_cfg.rpn.max_per_img``, 1000 for Mask R-CNN) and the mask head on the first
  100 (mmdet's ``StandardRoIHead.forward``); the result reports how many proposals there were;
* a segmentor runs backbone, neck (if any) and decode head at feature resolution; the auxiliary head
  (training only) and the final resize to the input size are not run;
* fvcore's own handles + ours (:data:`vmamba_zoo.analysis.flops.FVCORE_HANDLES`); mmcv's RoIAlign and NMS
  (autograd Functions, traced as ``prim::PythonOp``) and elementwise ops count 0, as in the original.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .flops import FVCORE_HANDLES, count_params

__all__ = ["DEFAULT_SHAPES", "config_task", "load_mm_config", "build_mm_model", "count_mm_macs", "mm_complexity",
           "mm_complexity_table"]

# the paper's input sizes (H, W) per task
DEFAULT_SHAPES: Dict[str, Tuple[int, int]] = {"mmdet": (1280, 800), "mmseg": (512, 2048)}
_PIP = {"mmdet": "pip install 'vmamba_zoo[mm]'  (or: pip install mmengine==0.10.7 mmcv==2.1.0 mmdet==3.3.0)",
        "mmseg": "pip install 'vmamba_zoo[mm]'  (or: pip install mmengine==0.10.7 mmcv==2.1.0 mmsegmentation==1.2.2)",
        "fvcore": "pip install 'vmamba_zoo[analysis]'  (or: pip install fvcore)"}
_WHAT = {"mmdet": "a detector", "mmseg": "a segmentor", "fvcore": "FLOPs"}
# a top-level module that is not part of the network's compute
_SKIPPED_CHILDREN = {"data_preprocessor"}


def _require(package: str) -> None:
    """Import ``package`` (mmdet / mmseg / fvcore) or raise an ImportError that names the pip command."""
    try:
        importlib.import_module(package)
    except ImportError as err:
        raise ImportError(f"counting FLOPs of {_WHAT[package]} needs {package}, which failed to import ({err}): "
                          f"{_PIP[package]}") from err


def load_mm_config(config: Union[str, Any], cfg_options: Optional[dict] = None):
    """An mmengine ``Config`` from a path (its ``custom_imports``, e.g. ``vmamba_zoo.mm``, are imported)."""
    from mmengine.config import Config
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def config_task(cfg) -> str:
    """'mmdet' or 'mmseg': the config's ``default_scope`` (set by both libraries' base configs), else the
    model's head names."""
    scope = cfg.get("default_scope", None)
    if scope in DEFAULT_SHAPES:
        return scope
    model = cfg.get("model", None) or {}
    if any(k in model for k in ("rpn_head", "roi_head", "bbox_head")):
        return "mmdet"
    if "decode_head" in model:
        return "mmseg"
    raise ValueError(f"cannot tell whether this config is for mmdet or mmseg (default_scope={scope!r}, "
                     f"model keys {sorted(model)}); set default_scope = 'mmdet' or 'mmseg'")


def build_mm_model(config: Union[str, Any], cfg_options: Optional[dict] = None) -> Tuple[nn.Module, str]:
    """(model in eval mode, task) from an mmdet / mmseg config. Weights stay random: no ``init_weights``,
    so a Pretrained ``init_cfg`` is neither downloaded nor loaded."""
    cfg = load_mm_config(config, cfg_options)
    task = config_task(cfg)
    _require(task)
    import vmamba_zoo.mm  # noqa: F401  registers VMambaBackbone even when the config has no custom_imports
    from mmengine.registry import init_default_scope
    registry = importlib.import_module(f"{task}.registry").MODELS
    importlib.import_module(f"{task}.utils").register_all_modules(init_default_scope=False)
    init_default_scope(task)
    return registry.build(cfg.model).eval(), task


class _TensorForward(nn.Module):
    """``model(x, data_samples, mode='tensor')`` as a one-tensor module, for fvcore's jit trace."""

    def __init__(self, model: nn.Module, data_samples):
        super().__init__()
        self.model = model
        self.data_samples = data_samples
        self.plain_encoder_decoder = _is_plain_encoder_decoder(model)

    def forward(self, x: torch.Tensor):
        if self.plain_encoder_decoder:
            # what mmseg's EncoderDecoder._forward does, but calling the head as a module: it calls
            # decode_head.forward() directly, which fvcore cannot scope, so the head's own resizes would be
            # put on the segmentor instead of the head (same total either way; tested)
            return self.model.decode_head(self.model.extract_feat(x))
        return self.model(x, self.data_samples, mode="tensor")


def _is_plain_encoder_decoder(model: nn.Module) -> bool:
    try:
        from mmseg.models.segmentors import EncoderDecoder
    except ImportError:
        return False
    return isinstance(model, EncoderDecoder) and type(model)._forward is EncoderDecoder._forward


def _data_samples(task: str, height: int, width: int):
    if task != "mmdet":
        return None  # mmseg's _forward needs no metadata
    from mmdet.structures import DetDataSample
    shape = (height, width)  # an unpadded, unscaled image: proposals are clipped to the whole input
    return [DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape, batch_input_shape=shape,
                                        scale_factor=(1.0, 1.0)))]


def _roi_counter(model: nn.Module) -> Tuple[Dict[str, int], list]:
    """Forward hooks recording how many RoIs the bbox / mask heads of a detector saw."""
    seen: Dict[str, int] = {}
    handles = []
    roi_head = getattr(model, "roi_head", None)
    for name in ("bbox_head", "mask_head"):
        head = getattr(roi_head, name, None)
        if isinstance(head, nn.Module):
            def hook(module, args, output, name=name):
                seen[name] = int(args[0].shape[0])
            handles.append(head.register_forward_hook(hook))
    return seen, handles


def count_mm_macs(model: nn.Module, task: str, shape: Sequence[int], depth: int = 1, seed: int = 0
                  ) -> Dict[str, Any]:
    """Count a built detector / segmentor at input ``shape`` (H, W) by fvcore with our op handles.

    Returns ``{'macs', 'modules', 'params', 'module_params', 'rois', 'uncounted_ops'}``: ``modules`` maps
    every called submodule up to ``depth`` levels ('backbone', 'neck', 'rpn_head', 'roi_head' at depth 1,
    'roi_head.bbox_head' at 2, ...) to its MACs, plus '(other)' for ops of the model's own forward at
    depth 1, so that the depth-1 entries sum to the total; ``rois`` (detectors) = RoIs seen by the bbox /
    mask heads; ``uncounted_ops`` = ops fvcore had no handle for (counted 0), with how often they ran.
    """
    _require("fvcore")
    from fvcore.nn import FlopCountAnalysis
    height, width = _hw(shape)
    wrapper = _TensorForward(model, _data_samples(task, height, width))
    seen, hooks = _roi_counter(model)
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(), warnings.catch_warnings():
            torch.manual_seed(seed)  # the proposals (hence the RoI heads' count) depend on the input values
            warnings.simplefilter("ignore")  # jit tracer warnings about python control flow
            analysis = FlopCountAnalysis(wrapper, (torch.randn(1, 3, height, width),)).set_op_handle(**FVCORE_HANDLES)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            total = int(round(analysis.total()))
            per_module = analysis.by_module()
            uncalled = {name[len("model."):] for name in analysis.uncalled_modules() if name.startswith("model.")}
            uncounted = dict(analysis.unsupported_ops())
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)
    modules = _module_breakdown(model, per_module, uncalled, depth)
    modules["(other)"] = total - sum(v for k, v in modules.items() if "." not in k)
    children = [n for n, _ in model.named_children() if n not in _SKIPPED_CHILDREN]
    return {"task": task, "shape": (height, width), "macs": total, "modules": modules,
            "params": count_params(model), "module_params": {n: count_params(getattr(model, n)) for n in children},
            "rois": dict(seen), "uncounted_ops": uncounted}


def _hw(shape: Sequence[int]) -> Tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        shape = shape * 2
    if len(shape) != 2 or min(shape) < 32:
        raise ValueError(f"shape must be (H, W) or (S,) with sides >= 32, got {shape}")
    return shape


def _module_breakdown(model: nn.Module, per_module, uncalled: Iterable[str], depth: int) -> Dict[str, int]:
    """{name: MACs} of the called submodules up to ``depth`` levels, in the model's order."""
    uncalled = set(uncalled)
    out: Dict[str, int] = {}
    for name, _ in model.named_modules():
        levels = name.count(".") + 1
        if not name or levels > depth or name.split(".")[0] in _SKIPPED_CHILDREN or name in uncalled:
            continue
        out[name] = int(round(per_module.get(f"model.{name}", 0)))
    return out


def mm_complexity(config: Union[str, Any], shape: Optional[Sequence[int]] = None,
                  cfg_options: Optional[dict] = None, depth: int = 1, seed: int = 0) -> Dict[str, Any]:
    """Build the model of an mmdet / mmseg config and count it (see :func:`count_mm_macs`); ``shape`` (H, W)
    defaults to the paper's size for the task (detection 1280x800, segmentation 512x2048). Weights and
    input come from ``seed``, so a detector's proposal count (and total) is the same on every call."""
    _require("fvcore")  # before a build that can take a while
    if shape is not None:
        _hw(shape)  # likewise: a bad shape fails now
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model, task = build_mm_model(config, cfg_options)
    result = count_mm_macs(model, task, shape or DEFAULT_SHAPES[task], depth=depth, seed=seed)
    result["config"] = config if isinstance(config, str) else getattr(config, "filename", None)
    return result


def mm_complexity_table(results: Sequence[Dict[str, Any]]) -> str:
    """Text: per config, total GMACs and params, then one indented line per module."""
    lines = []
    for r in results:
        h, w = r["shape"]
        lines.append(f"{r.get('config') or r['task']}  ({h}x{w}, {r['task']})")
        lines.append(f"  total  {r['macs'] / 1e9:.2f} GMACs, {r['params'] / 1e6:.2f} M params")
        rows = [("  " * (name.count(".") + 2) + name, macs, r["module_params"].get(name))
                for name, macs in r["modules"].items() if not (name == "(other)" and macs == 0)]
        width = max([len(label) for label, _, _ in rows] + [7])
        for label, macs, params in rows:
            extra = f"  {params / 1e6:7.2f} M params" if params is not None else ""
            lines.append(f"{label:<{width}} {macs / 1e9:9.2f} GMACs{extra}")
        if r["rois"]:
            lines.append("  RoIs: " + ", ".join(f"{k} {v}" for k, v in r["rois"].items()))
        ops = sorted(op for op in r["uncounted_ops"] if not op.startswith("aten::"))
        if ops:
            lines.append("  counted as 0 (no fvcore handle, as in the paper's count): " + ", ".join(ops))
    return "\n".join(lines)
