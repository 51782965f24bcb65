"""Run the CUDA selective-scan kernels on the CPU through a thread-per-CUDA-thread emulation (see cuda_runtime.h).

``build()`` compiles emulate.cpp with the kernels' headers (g++, a few seconds; cached by source hash under
~/.cache/vmamba_zoo/cuda_emulation), ``forward`` / ``backward`` mirror selective_scan.cpp's host code
(allocation, the fixed-order sums of the partial results) around the emulated kernels.
``build_ops()`` builds the real host code (selective_scan.cpp, ss2d.cpp, ss2d_eager.cpp, layer_norm.cpp;
-DVMAMBA_ZOO_CUDA_EMULATION) with the emulated launchers as a torch extension: ``torch.ops.vmamba_zoo_cuda_emulated``
on CPU tensors (about a minute, cached).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import torch

HERE = Path(__file__).resolve().parent
KERNEL_DIR = HERE.parents[1] / "vmamba_zoo" / "ops" / "csrc" / "selective_scan"
KINDS = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def _sources(with_host_code: bool = False) -> list[Path]:
    suffixes = (".h", ".cuh", ".cpp") if with_host_code else (".h", ".cuh")
    return sorted([HERE / "cuda_runtime.h", HERE / "emulate.cpp"] +
                  [p for p in KERNEL_DIR.iterdir() if p.suffix in suffixes])


def _digest(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()[:16]


OPS_NAMESPACE = "vmamba_zoo_cuda_emulated"
HOST_SOURCES = ("selective_scan.cpp", "ss2d.cpp", "ss2d_eager.cpp", "layer_norm.cpp")  # the extension's host code


def build_ops() -> None:
    """Register torch.ops.vmamba_zoo_cuda_emulated (selective_scan.cpp + emulated kernels, CPU tensors)."""
    from torch.utils import cpp_extension
    try:
        getattr(torch.ops, OPS_NAMESPACE).selective_scan_fwd  # noqa: B018
        return  # loaded already in this process
    except (AttributeError, RuntimeError):
        pass
    build_dir = Path.home() / ".cache" / "vmamba_zoo" / "cuda_emulation" / ("ops_" + _digest(_sources(True)))
    build_dir.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(name="vmamba_zoo_selective_scan_emulated",
                       sources=[str(KERNEL_DIR / name) for name in HOST_SOURCES] + [str(HERE / "emulate.cpp")],
                       extra_include_paths=[str(HERE), str(KERNEL_DIR)],  # HERE first: its cuda_runtime.h
                       extra_cflags=["-O2", "-DVMAMBA_ZOO_CUDA_EMULATION", "-pthread"], extra_ldflags=["-pthread"],
                       build_directory=str(build_dir), is_python_module=False, verbose=False)


def compiler() -> Optional[str]:
    return shutil.which(os.environ.get("CXX", "g++"))


def build() -> ctypes.CDLL:
    from torch.utils.cpp_extension import include_paths
    out_dir = Path.home() / ".cache" / "vmamba_zoo" / "cuda_emulation" / _digest(_sources())
    library = out_dir / "emulate.so"
    if not library.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f"emulate.{os.getpid()}.so"
        cmd = [compiler(), "-std=c++20", "-O2", "-shared", "-fPIC", "-pthread", f"-I{HERE}", f"-I{KERNEL_DIR}"]
        cmd += [f"-isystem{p}" for p in include_paths()]
        cmd += [str(HERE / "emulate.cpp"), "-o", str(tmp)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"building the CUDA emulation failed:\n{result.stderr[-4000:]}")
        os.replace(tmp, library)
    lib = ctypes.CDLL(str(library))
    lib.emu_bwd_blocks_per_group.restype = ctypes.c_int
    lib.emu_chunks.restype = ctypes.c_int
    return lib


def _ptr(t: Optional[torch.Tensor]):
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


def _contig(t: Optional[torch.Tensor], dtype=None) -> Optional[torch.Tensor]:
    if t is None:
        return None
    return (t if dtype is None else t.to(dtype)).contiguous()


def forward(lib, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, fp32_output=True):
    u, delta, B, C, z = (_contig(t) for t in (u, delta, B, C, z))
    A, D, delta_bias = (_contig(t, torch.float32) for t in (A, D, delta_bias))
    batch, channels, length = u.shape
    out = torch.empty(u.shape, dtype=torch.float32 if fp32_output else u.dtype)
    rc = lib.emu_selective_scan_fwd(KINDS[u.dtype], int(fp32_output), batch, channels, length, A.shape[1],
                                    B.shape[1], int(delta_softplus), _ptr(u), _ptr(delta), _ptr(A), _ptr(B), _ptr(C),
                                    _ptr(D), _ptr(z), _ptr(delta_bias), _ptr(out))
    assert rc == 0
    return out


def backward(lib, dout, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias), None for absent optional inputs."""
    dout, u, delta, B, C, z = (_contig(t) for t in (dout, u, delta, B, C, z))
    A, D, delta_bias = (_contig(t, torch.float32) for t in (A, D, delta_bias))
    batch, channels, length = u.shape
    groups, d_state = B.shape[1], A.shape[1]
    blocks = lib.emu_bwd_blocks_per_group(channels // groups, d_state)
    n_chunks = lib.emu_chunks(length)
    f32 = dict(dtype=torch.float32)
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else None
    dA_part = torch.empty(batch, channels, d_state, **f32)
    # NaN-filled: a slice position the kernel fails to write shows up in the comparison
    dB_part = torch.full((batch, groups, blocks, d_state, length), float("nan"), **f32)
    dC_part = torch.full_like(dB_part, float("nan"))
    dD_part = torch.empty(batch, channels, **f32) if D is not None else None
    dbias_part = torch.empty(batch, channels, **f32) if delta_bias is not None else None
    states = torch.empty(batch, channels, n_chunks, d_state, **f32) if n_chunks > 1 else None
    rc = lib.emu_selective_scan_bwd(KINDS[u.dtype], int(dout.dtype == torch.float32), batch, channels, length,
                                    d_state, groups, int(delta_softplus), _ptr(dout), _ptr(u), _ptr(delta), _ptr(A),
                                    _ptr(B), _ptr(C), _ptr(D), _ptr(z), _ptr(delta_bias), _ptr(du), _ptr(ddelta),
                                    _ptr(dz), _ptr(dA_part), _ptr(dB_part), _ptr(dC_part), _ptr(dD_part),
                                    _ptr(dbias_part), _ptr(states))
    assert rc == 0
    dB = dB_part.sum(2).to(B.dtype)
    dC = dC_part.sum(2).to(C.dtype)
    return (du, ddelta, dA_part.sum(0), dB, dC, None if D is None else dD_part.sum(0), dz,
            None if delta_bias is None else dbias_part.sum(0))
