"""Backend dispatch for the custom ops.

Every op (``selective_scan_fwd``, ``cross_scan`` ...) has one or more implementations
("backends"): ``reference`` (pure PyTorch, any device) always exists; the kernel work adds
``triton`` and ``cuda`` by calling :func:`register_backend`. The custom op's implementation asks
:func:`resolve` for a function at call time, so ``torch.compile`` sees one opaque op whatever
backend runs underneath.

Choice order: the op's ``backend`` argument, then ``VMAMBA_ZOO_<OP>_BACKEND``, then
``VMAMBA_ZOO_BACKEND``, then ``auto`` (highest-priority backend that supports the inputs).
A requested backend that cannot run the inputs falls back to ``auto`` with one warning.
"""
from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import torch

__all__ = ["register_backend", "resolve", "available_backends", "BackendSpec", "lazy_backend", "autocast_dtype",
           "plain_eager", "cast", "dense", "requested_backend"]


@dataclass(frozen=True)
class BackendSpec:
    name: str
    fn: Callable
    priority: int  # higher wins in auto mode
    supports: Callable[[Sequence[torch.Tensor]], bool]  # can this backend run these inputs?
    auto_supports: Callable[[Sequence[torch.Tensor]], bool]  # ... and should auto mode pick it for them?


_REGISTRY: Dict[str, Dict[str, BackendSpec]] = {}
# each op's specs, highest priority first (auto mode's order), sorted once per registry dict
_BY_PRIORITY: Dict[str, tuple] = {}
_WARNED: set = set()


def _always(_tensors) -> bool:
    return True


def register_backend(op: str, name: str, fn: Callable, *, priority: int = 0,
                     supports: Callable[[Sequence[torch.Tensor]], bool] = _always,
                     auto_supports: Optional[Callable[[Sequence[torch.Tensor]], bool]] = None) -> None:
    """Register ``fn`` as backend ``name`` of ``op`` (replaces an earlier one of that name).

    ``auto_supports`` (default: ``supports``) narrows what auto mode picks it for, e.g. a Triton kernel
    that runs on the CPU only in the (slow) interpreter, when asked for by name.
    """
    _REGISTRY.setdefault(op, {})[name] = BackendSpec(name, fn, priority, supports, auto_supports or supports)
    _BY_PRIORITY.clear()


def _by_priority(op: str, specs: Dict[str, BackendSpec]) -> list:
    cached = _BY_PRIORITY.get(op)
    if cached is None or cached[0] is not specs:  # first use, or the registry was replaced (tests restore it)
        cached = _BY_PRIORITY[op] = (specs, sorted(specs.values(), key=lambda s: -s.priority))
    return cached[1]


def available_backends(op: str) -> list[str]:
    return sorted(_REGISTRY.get(op, {}), key=lambda n: -_REGISTRY[op][n].priority)


def requested_backend(op: str, backend: str) -> str:
    """The backend asked for: ``backend`` unless "auto", then the environment variables, else "auto"."""
    if backend and backend != "auto":
        return backend
    env_op = os.environ.get(f"VMAMBA_ZOO_{op.upper()}_BACKEND", "")
    return env_op or os.environ.get("VMAMBA_ZOO_BACKEND", "") or "auto"


def resolve(op: str, backend: str, tensors: Sequence[torch.Tensor]) -> Callable:
    """Return the implementation of ``op`` to run on ``tensors``."""
    specs = _REGISTRY.get(op)
    if not specs:
        raise RuntimeError(f"no backend registered for op {op!r}")
    want = requested_backend(op, backend)
    if want != "auto":
        spec = specs.get(want)
        if spec is None and not any(want in other for other in _REGISTRY.values()):
            raise ValueError(f"unknown backend {want!r} for op {op!r}; available: {available_backends(op)}")
        if spec is not None and spec.supports(tensors):
            return spec.fn
        # a backend one op lacks (e.g. a model-wide "cuda" while only the scan has a CUDA kernel), or one
        # that cannot run these inputs: fall back, saying so once
        key = (op, want, tuple(t.device.type for t in tensors))
        if key not in _WARNED:
            _WARNED.add(key)
            reason = (f"has no implementation of {op}" if spec is None else
                      f"cannot run {op} on these inputs (devices {sorted({t.device.type for t in tensors})}, "
                      f"dtypes {sorted({str(t.dtype) for t in tensors})})")
            warnings.warn(f"vmamba_zoo: backend {want!r} {reason}; falling back to auto selection",
                          RuntimeWarning, stacklevel=3)
    for spec in _by_priority(op, specs):
        if spec.auto_supports(tensors):
            return spec.fn
    raise RuntimeError(f"no backend of {op!r} supports these inputs")


def lazy_backend(module: str, name: str) -> Callable:
    """``module.name``, imported on its first call: registering a kernel backend does not import triton (or
    compile anything) when vmamba_zoo is imported."""
    imported = []  # the module, once imported (an import per call is host time on every launch); the function is
    # looked up at each call, so patching the module's attribute takes effect

    def call(*args, **kwargs):
        if not imported:
            imported.append(importlib.import_module(module))
        return getattr(imported[0], name)(*args, **kwargs)
    call.__name__ = name
    return call


# device types with an autocast mode (torch.amp.is_autocast_available would say so, but torch 2.11's dynamo
# cannot trace it, which broke torch.compile(fullgraph=True) of the models on the GPU machine)
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "hpu", "mps")


def autocast_dtype(x: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype autocast would compute in on ``x``'s device, or None when autocast is off there."""
    device_type = x.device.type
    if device_type in _AUTOCAST_DEVICES and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def plain_eager(tensors: Sequence[Optional[torch.Tensor]]) -> bool:
    """Whether an op on ``tensors`` runs in plain eager mode: not under torch.compile / export or a jit trace, no
    dispatch mode active (FLOP counters, fake tensors, make_fx), no functorch transform, plain tensors only.

    There an op may call its backends through a ``torch.autograd.Function`` instead of its custom op: same
    functions, same numbers, without the custom op's Python dispatch (about 0.14-0.17 ms of host time per forward
    and backward on the CI machine), which adds up in eager training steps that the host, not the GPU, bounds
    (eager VMamba-T training 1122 -> 1279 img/s on nvidia-h200: benchmarks/eager_dispatch_h200_2026-12-06.txt).
    Everywhere else the custom op runs, so compilers, tracers and FLOP counters see one opaque op."""
    return (not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and torch._C._len_torch_dispatch_stack() == 0
            and torch._C._functorch.peek_interpreter_stack() is None
            and all(t is None or type(t) in _PLAIN_TENSORS for t in tensors))


# The backends' input conversions, each a no-op on what the models pass. Checking dtype and layout in Python first
# skips a dispatcher round trip per tensor (``t.to(t.dtype)`` and ``.contiguous()`` on a contiguous tensor are
# still aten calls, a few microseconds of host time each: dozens per block in an eager training step).
def cast(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """``t.to(dtype)``, without the call when ``t`` is None or already ``dtype``."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


def dense(t: Optional[torch.Tensor], dtype: Optional[torch.dtype] = None) -> Optional[torch.Tensor]:
    """``t.to(dtype).contiguous()`` (dtype None: t's), without the calls where they would change nothing."""
    if t is None:
        return None
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    return t if t.is_contiguous() else t.contiguous()
