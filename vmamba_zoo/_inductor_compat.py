"""A workaround for an inductor bug that breaks ``torch.compile`` of the models with dynamic shapes.

The bug (torch 2.11 to 2.14 at least; pytorch/pytorch#185510). When a graph
output is a view (in training: a tensor saved for the backward, e.g. a convolution's input), inductor orders its
strides with ``ir.get_stride_order(strides)`` without the graph's ShapeEnv (torch/_inductor/graph.py, the output
branch of ``GraphLowering.run_node``), so ``get_fill_order`` sorts the sympy expressions with Python's ``<``.
SymPy cannot decide e.g. ``8*s0*s1 < 8`` alone (it does not know that s0*s1 >= 1), and compilation fails with
``TypeError: cannot determine truth value of Relational``. VMamba hits this on purpose-built views: blocks keep
tokens (batch, H*W, C) and convolutions take them as channels-last NCHW views (``mixers.to_image``), no copy;
autograd saves that view for the convolution's backward, strides (C*H*W, 1, C*W, C). With dynamic=True, or on
the automatic dynamic recompile at a second input size, every training compile failed.

The patch: ``get_fill_order`` unchanged, except that where the plain sort raises that TypeError while a graph is
being lowered, it sorts again with that graph's ShapeEnv (``argsort_sym``, what ``get_fill_order`` already does
when its caller passes one, and what the upstream fix does). Orders that sort today are untouched, so nothing
changes for graphs that compile without it. ``VMAMBA_ZOO_INDUCTOR_PATCH=0`` leaves inductor untouched.

Enough on the CPU. On CUDA (torch 2.11) a dynamic VMamba graph then fails in inductor's ``tiling_utils``
(tests/gpu/test_gpu_compiled_model.py, strict xfail), so compile there with ``dynamic=False``.
"""
from __future__ import annotations

import functools
import os

__all__ = ["install"]

_INSTALLED = False


def install() -> bool:
    """Wrap ``torch._inductor.ir.get_fill_order`` once; False when this torch lacks the pieces (then nothing)."""
    global _INSTALLED
    if _INSTALLED:
        return True
    if os.environ.get("VMAMBA_ZOO_INDUCTOR_PATCH", "1") == "0":
        return False
    try:
        from torch._inductor import ir
        from torch._inductor.utils import argsort_sym
        from torch._inductor.virtualized import V
    except Exception:  # noqa: BLE001 (an inductor without these names: leave it alone)
        return False
    original = getattr(ir, "get_fill_order", None)
    if original is None or getattr(original, "_vmamba_zoo_patched", False):
        _INSTALLED = original is not None
        return _INSTALLED

    @functools.wraps(original)
    def get_fill_order(seq, shape_env=None):
        try:
            return original(seq, shape_env)
        except TypeError:
            # only the case the bug is: no ShapeEnv given, symbolic strides, a graph being lowered
            if shape_env is not None or not V.graph or getattr(V.graph, "sizevars", None) is None:
                raise
            return argsort_sym(V.graph.sizevars.shape_env, seq)

    get_fill_order._vmamba_zoo_patched = True
    ir.get_fill_order = get_fill_order
    _INSTALLED = True
    return True
