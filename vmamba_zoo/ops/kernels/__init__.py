"""Kernel backends (Triton; CUDA later). Imported lazily: see :mod:`vmamba_zoo.ops.triton_backend`."""
