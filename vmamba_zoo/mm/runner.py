"""Shared code of ``tools/{det,seg}_{train,test}.py``: thin CLIs over mmengine's ``Runner``.

- ``train_main(argv, task)`` / ``test_main(argv, task)`` with task 'det' (mmdet) or 'seg' (mmseg).
- Resuming works under torch's ``weights_only=True`` default of ``torch.load``: the few classes mmengine
  pickles into its checkpoints are allow-listed with ``torch.serialization.add_safe_globals``
  (:func:`allow_mmengine_checkpoints`); arbitrary unpickling stays off.
- A Pretrained ``init_cfg`` whose checkpoint is an http(s) URL is downloaded once (``download_checkpoint``, torch.hub)
  (into ``torch.hub.get_dir()/checkpoints``) and replaced by the local path before the model is built,
  so the backbone's strict loader reads a file (:func:`resolve_pretrained_urls`).
"""
from __future__ import annotations

import argparse
import os
import pickle
import os.path as osp
from typing import List, Optional, Sequence

from ..models.checkpoint import download_checkpoint

__all__ = ["allow_mmengine_checkpoints", "resolve_pretrained_urls", "build_train_parser", "build_test_parser",
           "train_main", "test_main", "SAFE_GLOBALS"]

TASKS = ("det", "seg")


def _safe_globals() -> list:
    """What mmengine 0.10.x puts in a Runner checkpoint besides tensors and builtins (found by loading
    checkpoints written by the e2e tests with weights_only=True until nothing was refused)."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    try:  # numpy >= 1.25 / 2.x
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # older numpy
        from numpy.core.multiarray import _reconstruct, scalar
    found = [HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype,
             # HistoryBuffer.__getstate__ stores its statistics functions, pickled as
             # getattr(HistoryBuffer, 'min'): only that use of getattr is allowed, not the builtin itself
             (_history_buffer_getattr, "builtins.getattr")]
    # numpy >= 1.25 pickles an array's dtype with its class (numpy.dtypes.Float64DType for HistoryBuffer's logs)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found += [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64)]
    return found


def _history_buffer_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` while unpickling: only ``getattr(HistoryBuffer, <statistics method>)``."""
    from mmengine.logging.history_buffer import HistoryBuffer
    allowed = {"min", "max", "current", "mean", *HistoryBuffer._statistics_methods}  # defaults + registered
    if obj is HistoryBuffer and isinstance(name, str) and not name.startswith("_") and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(f"weights_only load: getattr({obj!r}, {name!r}) is not allowed")


SAFE_GLOBALS: Optional[list] = None


def allow_mmengine_checkpoints() -> list:
    """Allow-list mmengine's checkpoint classes for ``torch.load(weights_only=True)``; idempotent."""
    global SAFE_GLOBALS
    if SAFE_GLOBALS is None:
        import torch
        SAFE_GLOBALS = _safe_globals()
        torch.serialization.add_safe_globals(SAFE_GLOBALS)
    return SAFE_GLOBALS


def resolve_pretrained_urls(node) -> None:
    """In place: every ``dict(type='Pretrained', checkpoint='http(s)://...')`` under a config node gets the
    path of the file downloaded (once) by torch.hub instead of the URL."""
    if isinstance(node, dict):
        ckpt = node.get("checkpoint")
        if node.get("type") == "Pretrained" and isinstance(ckpt, str) and ckpt.startswith(("http://", "https://")):
            node["checkpoint"] = download_checkpoint(ckpt)
        for value in node.values():
            resolve_pretrained_urls(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            resolve_pretrained_urls(value)


def _common_args(parser: argparse.ArgumentParser) -> None:
    from mmengine.config import DictAction
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default: ./work_dirs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="override config entries, key=value (e.g. train_dataloader.batch_size=4)")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none",
                        help="job launcher (pytorch for torchrun / tools/dist_launch.sh)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)


def build_train_parser(task: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=f"Train a {'detector' if task == 'det' else 'segmentor'}")
    parser.add_argument("config", help="config file")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="resume: 'auto' (or no value) takes the latest checkpoint of the work dir, "
                             "else the path of a checkpoint")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (AmpOptimWrapper)")
    _common_args(parser)
    return parser


def build_test_parser(task: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=f"Test a {'detector' if task == 'det' else 'segmentor'}")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--out", help="dump the predictions to this file (det: a .pkl) or folder (seg)")
    parser.add_argument("--show-dir", help="save painted predictions under <work_dir>/<timestamp>/<show-dir>")
    _common_args(parser)
    return parser


def _import_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    import vmamba_zoo.mm  # noqa: F401  (registers VMambaBackbone)
    if task == "det":
        from mmdet.utils import register_all_modules
    else:
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)


def _load_cfg(args, task: str):
    from mmengine.config import Config
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    _import_task(task)
    allow_mmengine_checkpoints()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir", None) is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    resolve_pretrained_urls(cfg.model)
    return cfg


def train_main(argv: Optional[Sequence[str]], task: str):
    """Entry of tools/{det,seg}_train.py. Returns the Runner after training."""
    from mmengine.runner import Runner
    args = build_train_parser(task).parse_args(argv)
    cfg = _load_cfg(args, task)
    if args.amp:
        if cfg.optim_wrapper.get("type", "OptimWrapper") == "AmpOptimWrapper":
            print("AMP is already on in the config")
        else:
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.loss_scale = "dynamic"
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def test_main(argv: Optional[Sequence[str]], task: str):
    """Entry of tools/{det,seg}_test.py. Returns the metrics dict."""
    from mmengine.runner import Runner
    args = build_test_parser(task).parse_args(argv)
    cfg = _load_cfg(args, task)
    cfg.load_from = args.checkpoint
    if args.show_dir is not None:
        hooks = cfg.default_hooks
        if "visualization" not in hooks:
            raise RuntimeError("--show-dir needs a 'visualization' entry in default_hooks")
        hooks.visualization.draw = True
        if task == "det":
            hooks.visualization.test_out_dir = args.show_dir
        else:
            hooks.visualization.interval = 1
            cfg.visualizer.save_dir = args.show_dir
    if args.out is not None:
        if task == "det":
            if not args.out.endswith((".pkl", ".pickle")):
                raise ValueError("--out must be a .pkl file for detection")
            evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
            cfg.test_evaluator = [*evaluators, dict(type="DumpDetResults", out_file_path=args.out)]
        else:
            cfg.test_evaluator.output_dir = args.out
            cfg.test_evaluator.keep_results = True
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    return metrics


def _argv(argv: Optional[Sequence[str]]) -> Optional[List[str]]:
    return None if argv is None else list(argv)
