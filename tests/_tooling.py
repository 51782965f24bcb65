"""Shared test helpers: the ``main(argv)`` of a script under tools/, imported from its file; the ops a block of code
dispatches."""
import importlib.util
from pathlib import Path

from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


class RecordOps(TorchDispatchMode):
    """Names of the ops dispatched while active (a dispatch mode, as FLOP counters and fake tensors are)."""

    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func))
        return func(*args, **(kwargs or {}))
