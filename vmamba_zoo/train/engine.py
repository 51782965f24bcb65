"""The training loop of ``tools/train.py``: timm's data pipeline, optimizer, scheduler, EMA, AMP scaler,
checkpoint saver and summary CSV around a VMamba (or any timm) classifier. One process or many (torchrun,
DDP: NCCL on GPUs, gloo on the CPU).

Resume: every epoch ends with ``last.pth.tar`` written atomically (timm's CheckpointSaver writes a temporary
file and ``os.replace``s it), holding model, optimizer, AMP scaler, EMA and the checkpoint history. A resumed
run restarts at the epoch after the saved one, with the same schedule (the scheduler is a function of the
step), and data order / augmentation seeded from ``seed + epoch`` (+ rank), so it does not depend on how
many epochs ran in the killed process.
"""
from __future__ import annotations

import logging
import math
import os
import random
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["train", "train_one_epoch", "evaluate", "setup_distributed", "resolve_lr", "build_model",
           "TrainCheckpointSaver", "LAST_CHECKPOINT"]

_logger = logging.getLogger("vmamba_zoo.train")
LAST_CHECKPOINT = "last.pth.tar"
AMP_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


# ------------------------------------------------------------------------------------------ helpers
def setup_distributed(device: Optional[str] = None) -> Dict[str, Any]:
    """Initialise torch.distributed from torchrun's environment (WORLD_SIZE/RANK/LOCAL_RANK).
    NCCL on CUDA, gloo on the CPU. Returns {'distributed', 'world_size', 'rank', 'local_rank', 'device'}."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        device = f"cuda:{local_rank}"
    info = {"distributed": world_size > 1, "world_size": world_size, "rank": 0, "local_rank": local_rank,
            "device": torch.device(device)}
    if world_size > 1:
        if info["device"].type == "cuda":
            torch.cuda.set_device(info["device"])
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if info["device"].type == "cuda" else "gloo")
        info["rank"] = dist.get_rank()
    return info


def resolve_lr(cfg: Dict[str, Any], global_batch: int) -> float:
    """``lr`` if set, else ``lr_base`` scaled from ``lr_base_size`` to the global batch (linear or sqrt)."""
    if cfg.get("lr") is not None:
        return float(cfg["lr"])
    ratio = global_batch / float(cfg["lr_base_size"])
    if cfg.get("lr_base_scale", "linear") == "sqrt":
        ratio = ratio ** 0.5
    return float(cfg["lr_base"]) * ratio


def build_model(cfg: Dict[str, Any], num_classes: int) -> nn.Module:
    import timm
    import vmamba_zoo  # noqa: F401  registers the models
    from vmamba_zoo.models.checkpoint import load_original_checkpoint

    kwargs = dict(cfg.get("model_kwargs") or {})
    for key in ("drop_rate", "drop_path_rate"):
        if cfg.get(key) is not None:
            kwargs.setdefault(key, cfg[key])
    model = timm.create_model(cfg["model"], pretrained=bool(cfg.get("pretrained")), num_classes=num_classes, **kwargs)
    if cfg.get("initial_checkpoint"):
        # fine-tuning: a classifier of another class count is skipped, anything else must fit
        load_original_checkpoint(model, cfg["initial_checkpoint"], strict_head=False)
    return model


class TrainCheckpointSaver:
    """timm's CheckpointSaver (atomic tmp-file + os.replace of ``last.pth.tar``, ranked history, best file)
    storing plain data only (the config dict, class names), so files load with ``weights_only=True``."""

    def __new__(cls, *args, **kwargs):
        from timm.utils import CheckpointSaver
        from timm.utils.model import get_state_dict

        class _Saver(CheckpointSaver):
            def __init__(self, *a, extra: Optional[Dict[str, Any]] = None, **kw):
                super().__init__(*a, **kw)
                self.extra = extra or {}

            def _save(self, save_path, epoch, metric=None):
                state = {"epoch": epoch, "arch": self.extra.get("arch", type(self.model).__name__.lower()),
                         "optimizer": self.optimizer.state_dict(), "version": 2,
                         "state_dict": get_state_dict(self.model, self.unwrap_fn)}
                if self.amp_scaler is not None:
                    state[self.amp_scaler.state_dict_key] = self.amp_scaler.state_dict()
                if self.model_ema is not None:
                    state["state_dict_ema"] = get_state_dict(self.model_ema, self.unwrap_fn)
                if metric is not None:
                    state["metric"] = metric
                state["saver"] = self.state_dict(epoch, metric)
                state.update(self.extra)
                torch.save(state, save_path)

        return _Saver(*args, **kwargs)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, dynamic_ncols=True, leave=False, **kwargs)


# ----------------------------------------------------------------------------------------- epochs
def train_one_epoch(epoch: int, model: nn.Module, loader, optimizer, loss_fn: Callable, lr_scheduler,
                    device: torch.device, amp_dtype: Optional[torch.dtype] = None, loss_scaler=None,
                    model_ema=None, mixup_fn=None, clip_grad: Optional[float] = None, clip_mode: str = "norm",
                    channels_last: bool = False, world_size: int = 1, progress: bool = True,
                    log_interval: int = 50) -> Dict[str, float]:
    from timm.utils import AverageMeter, dispatch_clip_grad, reduce_tensor
    from timm.models import model_parameters

    model.train()
    losses = AverageMeter()
    updates_per_epoch = len(loader)
    num_updates = epoch * updates_per_epoch
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None else nullcontext
    start = time.perf_counter()
    bar = _progress(loader, progress, desc=f"train {epoch}", total=updates_per_epoch)
    for batch_idx, (inputs, target) in enumerate(bar):
        inputs, target = inputs.to(device, non_blocking=True), target.to(device, non_blocking=True)
        if mixup_fn is not None:
            inputs, target = mixup_fn(inputs, target)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast():
            output = model(inputs)
            loss = loss_fn(output, target)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, step {batch_idx}; stopping")
        optimizer.zero_grad(set_to_none=True)
        if loss_scaler is not None:
            loss_scaler(loss, optimizer, clip_grad=clip_grad, clip_mode=clip_mode,
                        parameters=model_parameters(model, exclude_head="agc" in clip_mode))
        else:
            loss.backward()
            if clip_grad:
                dispatch_clip_grad(model_parameters(model, exclude_head="agc" in clip_mode), value=clip_grad,
                                   mode=clip_mode)
            optimizer.step()
        num_updates += 1
        if model_ema is not None:
            model_ema.update(model, step=num_updates)
        losses.update(loss.item(), inputs.size(0))
        lr_scheduler.step_update(num_updates=num_updates, metric=losses.avg)
        lr = optimizer.param_groups[0]["lr"]
        if progress:
            bar.set_postfix(loss=f"{losses.avg:.4f}", lr=f"{lr:.2e}")
        elif log_interval and (batch_idx % log_interval == 0 or batch_idx == updates_per_epoch - 1):
            _logger.info(f"train {epoch} [{batch_idx + 1}/{updates_per_epoch}] loss {losses.avg:.4f} lr {lr:.3e}")
    avg = torch.tensor([losses.avg], device=device)
    if world_size > 1:
        avg = reduce_tensor(avg, world_size)
    lrs = [g["lr"] for g in optimizer.param_groups]
    return {"loss": float(avg.item()), "lr": sum(lrs) / len(lrs), "time_s": time.perf_counter() - start}


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, amp_dtype: Optional[torch.dtype] = None,
             world_size: int = 1, progress: bool = True, desc: str = "eval", channels_last: bool = False
             ) -> Dict[str, float]:
    """Loss, top-1 and top-5 (%) of ``model`` over ``loader`` (averaged over processes when distributed)."""
    from timm.utils import AverageMeter, accuracy, reduce_tensor

    model.eval()
    loss_fn = nn.CrossEntropyLoss()
    loss_m, top1_m, top5_m = AverageMeter(), AverageMeter(), AverageMeter()
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None else nullcontext
    for inputs, target in _progress(loader, progress, desc=desc):
        inputs, target = inputs.to(device), target.to(device)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast():
            output = model(inputs)
        output = output.float()
        if output.shape[-1] <= int(target.max()):
            raise ValueError(f"the model has {output.shape[-1]} classes but the data has labels up to "
                             f"{int(target.max())}")
        loss = loss_fn(output, target)
        acc1, acc5 = accuracy(output, target, topk=(1, min(5, output.shape[-1])))
        if world_size > 1:
            loss, acc1, acc5 = (reduce_tensor(t, world_size) for t in (loss, acc1, acc5))
        n = inputs.size(0)
        loss_m.update(loss.item(), n)
        top1_m.update(acc1.item(), n)
        top5_m.update(acc5.item(), n)
    return {"loss": loss_m.avg, "top1": top1_m.avg, "top5": top5_m.avg, "count": top1_m.count}


# torch.compile modes (torch.compile raises on others only when it first runs, after the loaders are built)
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_model(model: nn.Module, backend: Optional[str], mode: Optional[str] = None) -> nn.Module:
    """``torch.compile(model, backend=..., mode=...)`` when ``backend`` is set (timm's --torchcompile), else the model.

    The compiled module only runs the steps: EMA, checkpoints and resume keep using ``model`` (same parameters), so
    saved keys carry no ``_orig_mod.`` prefix. Compiled VMamba-T trains 1.25x (default mode) to 1.7x
    (reduce-overhead) as fast as eager Swin-T on nvidia-h200, against 0.56x eager (README, Speed)."""
    if not backend:
        if mode:
            raise ValueError(f"torchcompile_mode={mode!r} needs torchcompile (a backend, e.g. inductor)")
        return model
    if mode not in COMPILE_MODES:
        raise ValueError(f"torchcompile_mode must be one of {', '.join(str(m) for m in COMPILE_MODES)}; got {mode!r}")
    import torch._dynamo
    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise ValueError(f"unknown torchcompile backend {backend!r}; torch knows "
                         f"{', '.join(torch._dynamo.list_backends())}")
    # dynamic=False: a last batch of another size recompiles for its shape; on CUDA, torch 2.11's inductor fails on
    # VMamba with dynamic shapes (tiling assertion; benchmarks/gpu_compiled_model_tests_h200_2026-12-06.txt)
    return torch.compile(model, backend=backend, mode=mode, dynamic=False)


# ------------------------------------------------------------------------------------------ train
def train(cfg: Dict[str, Any], resume: Optional[str] = None) -> Dict[str, Any]:
    """Train as ``cfg`` says (see ``configs/classification/``). ``resume``: a checkpoint path, or "auto"
    for ``<output>/last.pth.tar`` when present. Returns a summary dict (rank 0 holds the metrics)."""
    from timm.data import Mixup, FastCollateMixup, create_dataset, create_loader, resolve_data_config
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3, NativeScaler, distribute_bn, update_summary

    from .data import check_image_folder

    if not cfg.get("data_dir"):
        raise ValueError("no data_dir: pass --data-dir or set data_dir in the config")
    env = setup_distributed(cfg.get("device"))
    device, rank, world_size, distributed = env["device"], env["rank"], env["world_size"], env["distributed"]
    is_main = rank == 0
    _seed_everything(int(cfg["seed"]) + rank)

    # ---- data folders
    data_dir = os.path.abspath(os.path.expanduser(str(cfg["data_dir"])))
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data folder not found: {data_dir} (expected {data_dir}/{cfg['train_split']}/<class>/"
                                f"<image> and {data_dir}/{cfg['val_split']}/<class>/<image>)")
    train_dir = os.path.join(data_dir, cfg["train_split"])
    val_dir = os.path.join(data_dir, cfg["val_split"])
    classes = check_image_folder(train_dir, "training folder")
    val_classes = check_image_folder(val_dir, "validation folder")
    if val_classes != classes:
        raise ValueError(f"class folders differ between {train_dir} ({len(classes)}) and {val_dir} "
                         f"({len(val_classes)}): {sorted(set(classes) ^ set(val_classes))[:5]}")
    num_classes = cfg.get("num_classes") or len(classes)
    if num_classes != len(classes):
        raise ValueError(f"num_classes={num_classes} but {train_dir} has {len(classes)} class folders")

    # ---- model, EMA, optimizer, AMP
    model = build_model(cfg, num_classes)
    if cfg.get("grad_checkpointing"):
        model.set_grad_checkpointing(True)
    model.to(device)
    if cfg.get("channels_last"):
        model.to(memory_format=torch.channels_last)
    data_config = resolve_data_config({k: cfg[k] for k in ("img_size", "crop_pct", "interpolation", "mean", "std")
                                       if cfg.get(k) is not None}, model=model, verbose=False)
    global_batch = int(cfg["batch_size"]) * world_size
    lr = resolve_lr(cfg, global_batch)
    optimizer = create_optimizer_v2(model, opt=cfg["opt"], lr=lr, weight_decay=cfg["weight_decay"],
                                    momentum=cfg["momentum"],
                                    **({"eps": cfg["opt_eps"], "betas": tuple(cfg["opt_betas"])}
                                       if cfg["opt"].lower().startswith("adam") else {}))
    amp = cfg.get("amp")
    if amp and amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of fp16, bf16 or null, got {amp!r}")
    amp_dtype = AMP_DTYPES.get(amp) if amp else None
    loss_scaler = NativeScaler(device=device.type) if amp_dtype == torch.float16 else None
    model_ema = None
    if cfg.get("model_ema"):
        model_ema = ModelEmaV3(model, decay=cfg["model_ema_decay"], use_warmup=bool(cfg.get("model_ema_warmup")))

    # ---- resume (before DDP wrapping)
    output = os.path.abspath(os.path.expanduser(str(cfg["output"])))
    if resume == "auto":
        candidate = os.path.join(output, LAST_CHECKPOINT)
        resume = candidate if os.path.isfile(candidate) else None
    start_epoch = 0
    if resume:
        start_epoch = _resume(resume, model, optimizer, loss_scaler, model_ema)
        if is_main:
            _logger.info(f"resumed from {resume}: continuing at epoch {start_epoch}")

    if distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    run_model = compile_model(model, cfg.get("torchcompile"), cfg.get("torchcompile_mode"))

    # ---- loaders
    use_prefetcher = device.type == "cuda"
    dataset_train = create_dataset("", root=train_dir, split="train", search_split=False, is_training=True)
    dataset_eval = create_dataset("", root=val_dir, split="validation", search_split=False)
    mixup_active = (cfg.get("mixup") or 0) > 0 or (cfg.get("cutmix") or 0) > 0
    mixup_fn = collate_fn = None
    if mixup_active:
        mixup_args = dict(mixup_alpha=cfg["mixup"], cutmix_alpha=cfg["cutmix"], prob=cfg["mixup_prob"],
                          switch_prob=cfg["mixup_switch_prob"], mode=cfg["mixup_mode"],
                          label_smoothing=cfg["smoothing"], num_classes=num_classes)
        if use_prefetcher:
            collate_fn = FastCollateMixup(**mixup_args)
        else:
            mixup_fn = Mixup(**mixup_args)
    workers = int(cfg["workers"])
    common = dict(mean=data_config["mean"], std=data_config["std"], num_workers=workers, distributed=distributed,
                  pin_memory=bool(cfg["pin_memory"]) and device.type == "cuda", device=device,
                  use_prefetcher=use_prefetcher)
    loader_train = create_loader(
        dataset_train, input_size=data_config["input_size"], batch_size=int(cfg["batch_size"]), is_training=True,
        re_prob=cfg["reprob"], re_mode=cfg["remode"], re_count=cfg["recount"], scale=cfg["scale"],
        ratio=cfg["ratio"], hflip=cfg["hflip"], color_jitter=cfg["color_jitter"], auto_augment=cfg["aa"],
        interpolation=data_config["interpolation"], collate_fn=collate_fn, **common)
    loader_eval = create_loader(
        dataset_eval, input_size=data_config["input_size"],
        batch_size=int(cfg.get("validation_batch_size") or cfg["batch_size"]), is_training=False,
        interpolation=data_config["interpolation"], crop_pct=data_config["crop_pct"], **common)
    class_to_idx = dataset_train.reader.class_to_idx  # timm's (natural-sort) label order
    if getattr(dataset_eval.reader, "class_to_idx", class_to_idx) != class_to_idx:
        raise ValueError(f"{train_dir} and {val_dir} map class folders to different labels")
    classes = sorted(class_to_idx, key=class_to_idx.get)
    if len(loader_train) == 0:
        raise ValueError(f"{train_dir} has fewer images ({len(dataset_train)}) than one batch per process "
                         f"({cfg['batch_size']})")

    if mixup_active:
        train_loss_fn = SoftTargetCrossEntropy()  # smoothing is applied by mixup
    elif cfg.get("smoothing"):
        train_loss_fn = LabelSmoothingCrossEntropy(smoothing=cfg["smoothing"])
    else:
        train_loss_fn = nn.CrossEntropyLoss()
    train_loss_fn = train_loss_fn.to(device)

    # ---- schedule
    updates_per_epoch = len(loader_train)
    step_on_epochs = not cfg.get("sched_on_updates", True)
    lr_scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=cfg["sched"], num_epochs=int(cfg["epochs"]), warmup_epochs=cfg["warmup_epochs"],
        warmup_lr=cfg["warmup_lr"], min_lr=cfg["min_lr"], cooldown_epochs=cfg["cooldown_epochs"],
        step_on_epochs=step_on_epochs, updates_per_epoch=updates_per_epoch)
    if start_epoch > 0:
        if step_on_epochs:
            lr_scheduler.step(start_epoch)
        else:
            lr_scheduler.step_update(start_epoch * updates_per_epoch)

    # ---- checkpoints and logs (rank 0)
    saver = writer = None
    summary_csv = os.path.join(output, "summary.csv")
    if is_main:
        os.makedirs(output, exist_ok=True)
        extra = {"arch": cfg["model"], "config": dict(cfg, lr=lr), "num_classes": num_classes,
                 "class_names": list(classes)}
        saver = TrainCheckpointSaver(model=model, optimizer=optimizer, model_ema=model_ema, amp_scaler=loss_scaler,
                                     checkpoint_dir=output, recovery_dir=output, decreasing=False,
                                     max_history=int(cfg["checkpoint_hist"]), extra=extra)
        if resume and os.path.dirname(os.path.abspath(resume)) == output:
            saver.load_state_dict_from_checkpoint(resume)
        with open(os.path.join(output, "config.yaml"), "w") as f:
            import yaml
            yaml.safe_dump(dict(cfg, lr=lr, num_classes=num_classes, world_size=world_size), f, sort_keys=True)
        if cfg.get("tensorboard"):
            try:
                from torch.utils.tensorboard import SummaryWriter
                writer = SummaryWriter(os.path.join(output, "tb"))
            except ImportError:
                _logger.info("tensorboard not installed: logging to summary.csv only")
        _logger.info(f"model {cfg['model']} ({sum(p.numel() for p in model.parameters()):,} params), "
                     f"{num_classes} classes, {len(dataset_train)} train / {len(dataset_eval)} val images, "
                     f"input {data_config['input_size']}, {world_size} process(es) x batch {cfg['batch_size']}, "
                     f"lr {lr:.3e}, epochs {start_epoch}..{num_epochs - 1}, device {device}, amp {amp or 'off'}")

    progress = bool(cfg.get("progress")) and is_main
    best_metric, best_epoch, eval_metrics, ema_metrics = None, None, {}, {}
    for epoch in range(start_epoch, num_epochs):
        # data order and augmentation depend on the epoch only (identical after a resume)
        _seed_everything(int(cfg["seed"]) + 1000 * epoch + rank)
        if distributed and hasattr(loader_train.sampler, "set_epoch"):
            loader_train.sampler.set_epoch(epoch)
        if mixup_active and cfg.get("mixup_off_epoch") and epoch >= cfg["mixup_off_epoch"]:
            if mixup_fn is not None:
                mixup_fn.mixup_enabled = False
            elif hasattr(loader_train, "mixup_enabled"):
                loader_train.mixup_enabled = False
        train_metrics = train_one_epoch(
            epoch, run_model, loader_train, optimizer, train_loss_fn, lr_scheduler, device, amp_dtype, loss_scaler,
            model_ema, mixup_fn, cfg.get("clip_grad"), cfg.get("clip_mode", "norm"), bool(cfg.get("channels_last")),
            world_size, progress, int(cfg.get("log_interval") or 0))
        if distributed:
            distribute_bn(model, world_size, reduce=True)
        eval_metrics = evaluate(run_model, loader_eval, device, amp_dtype, world_size, progress, f"val {epoch}",
                                bool(cfg.get("channels_last")))
        if model_ema is not None:
            ema_metrics = evaluate(model_ema.module, loader_eval, device, amp_dtype, world_size, progress,
                                   f"val-ema {epoch}", bool(cfg.get("channels_last")))
        metric = eval_metrics[cfg.get("eval_metric", "top1")]
        lr_scheduler.step(epoch + 1, metric)
        if is_main:
            row = {k: v for k, v in eval_metrics.items() if k != "count"}
            row.update({f"ema_{k}": v for k, v in ema_metrics.items() if k != "count"})
            update_summary(epoch, {k: v for k, v in train_metrics.items()}, row, summary_csv,
                           lr=train_metrics["lr"], write_header=not os.path.isfile(summary_csv))
            if writer is not None:
                for k, v in list(train_metrics.items()):
                    writer.add_scalar(f"train/{k}", v, epoch)
                for k, v in row.items():
                    writer.add_scalar(f"val/{k}", v, epoch)
            best_metric, best_epoch = saver.save_checkpoint(epoch, metric=metric)
            ema_text = f", EMA top-1 {ema_metrics['top1']:.2f}" if ema_metrics else ""
            _logger.info(f"epoch {epoch}/{num_epochs - 1}: train loss {train_metrics['loss']:.4f}, "
                         f"val loss {eval_metrics['loss']:.4f}, top-1 {eval_metrics['top1']:.2f}, "
                         f"top-5 {eval_metrics['top5']:.2f}{ema_text} ({train_metrics['time_s']:.1f}s)")
    if writer is not None:
        writer.close()
    summary = {"output": output, "start_epoch": start_epoch, "epochs": num_epochs, "best_metric": best_metric,
               "best_epoch": best_epoch, "eval": eval_metrics, "eval_ema": ema_metrics, "rank": rank,
               "world_size": world_size, "lr": lr,
               "checkpoint": os.path.join(output, LAST_CHECKPOINT)}
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _resume(path: str, model: nn.Module, optimizer, loss_scaler, model_ema) -> int:
    from timm.models import resume_checkpoint

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint to resume from not found: {path}")
    start_epoch = resume_checkpoint(model, path, optimizer=optimizer, loss_scaler=loss_scaler, log_info=False,
                                    weights_only=True)
    if model_ema is not None:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if "state_dict_ema" not in checkpoint:
            raise KeyError(f"{path} has no EMA weights ('state_dict_ema') but model_ema is on")
        model_ema.module.load_state_dict(checkpoint["state_dict_ema"])
    return int(start_epoch or 0)
