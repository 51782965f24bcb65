"""setup.py: only for the optional ahead-of-time build of the CUDA selective scan; metadata is in setup.cfg.

    pip install -e .                                                       # pure Python (CUDA kernel built on first use)
    VMAMBA_ZOO_BUILD_CUDA=1 pip install --no-build-isolation -e .          # + vmamba_zoo._C_selective_scan now

The build needs torch (hence --no-build-isolation), nvcc and ninja; TORCH_CUDA_ARCH_LIST picks the
architectures (default 8.0;8.6;9.0+PTX, as the just-in-time build).
"""
import os
from pathlib import Path

from setuptools import setup

ext_modules, cmdclass = [], {}
if os.environ.get("VMAMBA_ZOO_BUILD_CUDA", "0") == "1":
    try:
        import torch  # noqa: F401
        from torch.utils.cpp_extension import BuildExtension, CUDAExtension
    except ImportError as exc:
        raise SystemExit("VMAMBA_ZOO_BUILD_CUDA=1 needs torch in the build environment: "
                         "pip install --no-build-isolation -e .") from exc
    here = Path(__file__).resolve().parent
    sources_dir = Path("vmamba_zoo") / "ops" / "csrc" / "selective_scan"
    sources = sorted(str(p.relative_to(here)) for p in (here / sources_dir).iterdir() if p.suffix in (".cpp", ".cu"))
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;8.6;9.0+PTX")  # same default as vmamba_zoo/ops/cuda_backend.py
    threads = str(min(4, os.cpu_count() or 1))
    extra = os.environ.get("VMAMBA_ZOO_CUDA_NVCC_FLAGS", "").split()  # as the just-in-time build
    ext_modules = [CUDAExtension(
        "vmamba_zoo._C_selective_scan", sources,
        include_dirs=[str(here / sources_dir)],
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--threads", threads, "-lineinfo", *extra]})]
    cmdclass = {"build_ext": BuildExtension}

# the kernel sources ship with the package: the just-in-time build compiles them from there
setup(package_data={"vmamba_zoo.ops": ["csrc/selective_scan/*.h", "csrc/selective_scan/*.cuh",
                                       "csrc/selective_scan/*.cu", "csrc/selective_scan/*.cpp"]},
      ext_modules=ext_modules, cmdclass=cmdclass)
