"""Registers the CUDA kernels (``vmamba_zoo/ops/csrc/selective_scan``) as the ``cuda`` backend of the selective
scan and of the fused SS2D scan (``ss2d_scan_fwd`` / ``_bwd``), and of the LayerNorm forward (``layer_norm_fwd``,
chosen by name only until it has been timed on a GPU).

Priority 20, above ``triton`` (10) and ``reference`` (0): auto mode picks it for CUDA tensors of float32,
float16 or bfloat16 with d_state up to 256 (the fused SS2D scan: d_state 1, dt_rank up to 64), provided the
extension is there or can be built.

Where the compiled code comes from, in order:

1. ahead of time: ``VMAMBA_ZOO_BUILD_CUDA=1 pip install --no-build-isolation -e .`` builds the module
   ``vmamba_zoo._C_selective_scan`` (see setup.py);
2. just in time, on the first CUDA call: ``torch.utils.cpp_extension.load`` (needs nvcc; with ninja, else
   setuptools' build_ext, one file at a time) builds it
   into ``~/.cache/vmamba_zoo/torch_extensions/<torch version>_<CUDA version>_<arch list>_<source hash>``
   (``VMAMBA_ZOO_CUDA_CACHE`` overrides the parent folder), once per machine; ``VMAMBA_ZOO_CUDA_JIT=0`` turns
   this off. Architectures: ``TORCH_CUDA_ARCH_LIST`` if set, else ``8.0;8.6;9.0+PTX``.

If neither works the backend says why once and steps aside (auto mode then uses triton or the reference):
a failed build is a warning with the compiler's error lines, never an exception in a model's forward.
A failed build leaves ``build_failed.txt`` in its cache folder so later processes do not retry for minutes;
delete the folder to try again.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import sysconfig
import threading
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch

from .backends import cast, dense, register_backend

__all__ = ["CUDA_PRIORITY", "DEFAULT_ARCH_LIST", "MAX_D_STATE", "arch_list", "cache_dir", "cache_key",
           "extension_status", "layer_norm_fwd", "load_extension", "selective_scan_bwd", "selective_scan_fwd",
           "selective_scan_fwd_states", "ss2d_scan_bwd", "ss2d_scan_fwd"]

logger = logging.getLogger(__name__)

CUDA_PRIORITY = 20
DEFAULT_ARCH_LIST = "8.0;8.6;9.0+PTX"
MAX_D_STATE = 256  # kMaxDState in selective_scan.h
PREBUILT_MODULE = "vmamba_zoo._C_selective_scan"
JIT_NAME = "vmamba_zoo_selective_scan"
OPS_NAMESPACE = "vmamba_zoo_cuda"
SOURCE_DIR = Path(__file__).resolve().parent / "csrc" / "selective_scan"
COMPILING_MESSAGE = "compiling the vmamba_zoo CUDA selective scan (first use, ~1-2 min)..."
FAILURE_FILE = "build_failed.txt"
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------- build helpers
def source_files() -> list[Path]:
    """The sources compiled into the extension (.cpp host code + .cu kernels)."""
    return sorted(p for p in SOURCE_DIR.iterdir() if p.suffix in (".cpp", ".cu"))


def sources_hash() -> str:
    """Hash of every file in the source folder (headers included): a changed kernel means a new build."""
    digest = hashlib.sha256()
    for path in sorted(p for p in SOURCE_DIR.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def arch_list(environ: Optional[dict] = None) -> str:
    """The architectures to build for: TORCH_CUDA_ARCH_LIST if set, else sm_80, sm_86, sm_90 (+PTX for newer)."""
    environ = os.environ if environ is None else environ
    return environ.get("TORCH_CUDA_ARCH_LIST", "").strip() or DEFAULT_ARCH_LIST


def _arch_tag(archs: str) -> str:
    # "8.0;8.6;9.0+PTX" -> "sm80-86-90ptx" (file-name safe, order kept)
    parts = [a for a in re.split(r"[;\s,]+", archs) if a]
    tags = []
    for part in parts:
        ptx = part.upper().endswith("+PTX")
        base = part[:-4] if ptx else part
        tags.append(re.sub(r"[^0-9a-zA-Z]", "", base) + ("ptx" if ptx else ""))
    return "sm" + "-".join(tags)


def cache_key(torch_version: Optional[str] = None, cuda_version: Optional[str] = None,
              archs: Optional[str] = None, source_hash: Optional[str] = None) -> str:
    """Name of the build folder: torch version, CUDA version, architectures, source hash, and a hash of
    VMAMBA_ZOO_CUDA_NVCC_FLAGS when set (other flags make another build, never a stale one)."""
    torch_version = torch.__version__ if torch_version is None else torch_version
    cuda_version = torch.version.cuda if cuda_version is None else cuda_version
    archs = arch_list() if archs is None else archs
    source_hash = sources_hash() if source_hash is None else source_hash
    raw = f"torch{torch_version}_cu{cuda_version or 'none'}_{_arch_tag(archs)}_{source_hash}"
    if extra_nvcc_flags():
        raw += "_flags" + hashlib.sha256(extra_nvcc_flags().encode()).hexdigest()[:8]
    return re.sub(r"[^0-9A-Za-z._-]", "_", raw)


def cache_root() -> Path:
    root = os.environ.get("VMAMBA_ZOO_CUDA_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "vmamba_zoo" / "torch_extensions"


def cache_dir(**key_parts) -> Path:
    return cache_root() / cache_key(**key_parts)


def extra_nvcc_flags() -> str:
    """VMAMBA_ZOO_CUDA_NVCC_FLAGS: more nvcc flags for the build (e.g. -allow-unsupported-compiler, or the
    tuning macros of the kernels), split on spaces; part of the build's cache key."""
    return os.environ.get("VMAMBA_ZOO_CUDA_NVCC_FLAGS", "").strip()


def compile_flags() -> tuple[list[str], list[str]]:
    """(host flags, nvcc flags) for both the JIT and the setup.py builds. No fast math: the kernels use
    accurate expf/log1pf, so fp32 results match the float64 reference to ~1e-6."""
    threads = str(min(4, os.cpu_count() or 1))  # nvcc compiles the architectures of one file in parallel
    extra = extra_nvcc_flags().split()
    return ["-O3"], ["-O3", "--threads", threads, "-lineinfo", *extra]  # torch adds the C++ standard it needs


def _cuda_home() -> Optional[str]:
    """CUDA toolkit root for the build. torch guesses it from the nvcc on PATH; when that guess has no
    toolkit libraries (e.g. /usr/local/bin/nvcc is a wrapper script, torch then picks /usr/local and
    linking fails with 'cannot find -lcudart'), fall back to /usr/local/cuda."""
    from torch.utils import cpp_extension
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), cpp_extension.CUDA_HOME, "/usr/local/cuda"]
    for home in candidates:
        if home and (Path(home) / "bin" / "nvcc").exists() and (Path(home) / "include" / "cuda_runtime.h").exists():
            return home
    return None


def buildable() -> tuple[bool, str]:
    """Can this machine build the extension just in time? (reason when not)"""
    if os.environ.get("VMAMBA_ZOO_CUDA_JIT", "1") == "0":
        return False, "just-in-time builds are off (VMAMBA_ZOO_CUDA_JIT=0)"
    if torch.version.cuda is None:
        return False, "this torch is a CPU build"
    if _cuda_home() is None:
        return False, "no CUDA toolkit (nvcc) found: set CUDA_HOME"
    return True, ""  # (without ninja the build goes through setuptools: slower, same result)


def summarize_build_error(text: str, max_lines: int = 12) -> str:
    """The compiler's error lines (or the output's tail) from a failed build's message."""
    lines = []
    for line in str(text).splitlines():
        line = line.rstrip()
        if line.startswith("Error building extension"):  # torch glues the first build command onto it
            line = line.split(":", 1)[0]
        if line.strip() and not re.match(r"\s*\[\d+/\d+\] ", line):  # ninja's command echoes
            lines.append(line)
    errors = [line for line in lines if re.search(r"\berror\b|error:|undefined reference|fatal", line, re.I)]
    chosen = errors[:max_lines] if errors else lines[-max_lines:]
    return "\n".join("    " + line[:300] for line in chosen)


# ----------------------------------------------------------------------------------------- loading
class _ExtensionState:
    def __init__(self):
        self.lock = threading.Lock()
        self.loaded: Optional[bool] = None  # None: not tried yet
        self.origin = ""  # "prebuilt <path>", "jit <dir>", or why it is unavailable
        self.devices: dict = {}  # device index -> kernels runnable there


_STATE = _ExtensionState()


def _ops_registered() -> bool:
    try:
        getattr(torch.ops, OPS_NAMESPACE).selective_scan_fwd  # noqa: B018
        return True
    except (AttributeError, RuntimeError):
        return False


def _load_prebuilt() -> bool:
    spec = importlib.util.find_spec(PREBUILT_MODULE)
    if spec is None or not spec.origin:
        return False
    torch.ops.load_library(spec.origin)
    _STATE.origin = f"prebuilt {spec.origin}"
    return True


def _ninja_available() -> bool:
    from torch.utils.cpp_extension import is_ninja_available
    return is_ninja_available()


def _built_library(build_dir: Path) -> Optional[Path]:
    """The library an earlier build left in build_dir (ninja's name, or setuptools' with the ABI suffix)."""
    for name in (f"{JIT_NAME}.so", f"{JIT_NAME}{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"):
        if (build_dir / name).exists():
            return build_dir / name
    return None


# Without ninja (torch's load() needs it) the sources are compiled by setuptools' build_ext, one file after
# another, in a child process (the compiler's output is captured for the error summary).
_SETUPTOOLS_BUILD = """
import json, os, sys
from setuptools import Distribution
from torch.utils.cpp_extension import BuildExtension, CUDAExtension
name, build_dir, include_dir, host_flags, nvcc_flags, sources = json.loads(sys.argv[1])
extension = CUDAExtension(name, sources, include_dirs=[include_dir],
                          extra_compile_args={"cxx": host_flags, "nvcc": nvcc_flags})
dist = Distribution({"name": name, "ext_modules": [extension], "script_name": "setup.py",
                     "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=False)},
                     "script_args": ["build_ext", "--build-lib", build_dir,
                                     "--build-temp", os.path.join(build_dir, "build_temp")]})
dist.parse_command_line()
dist.run_commands()
"""


def _build_with_setuptools(build_dir: Path, host_flags: list[str], nvcc_flags: list[str]) -> Path:
    from torch.utils.file_baton import FileBaton
    baton = FileBaton(str(build_dir / "setuptools_build.lock"))  # another process may be building the same
    if baton.try_acquire():
        try:
            if _built_library(build_dir) is None:
                args = [JIT_NAME, str(build_dir), str(SOURCE_DIR), host_flags, nvcc_flags,
                        [str(p) for p in source_files()]]
                result = subprocess.run([sys.executable, "-c", _SETUPTOOLS_BUILD, json.dumps(args)],
                                        capture_output=True, text=True)
                if result.returncode != 0:
                    raise RuntimeError(f"setuptools build_ext failed:\n{result.stdout[-20000:]}\n"
                                       f"{result.stderr[-20000:]}")
        finally:
            baton.release()
    else:
        baton.wait()
    library = _built_library(build_dir)
    if library is None:
        raise RuntimeError("the build finished without leaving a library in " + str(build_dir))
    return library


@contextlib.contextmanager
def _build_environment():
    """TORCH_CUDA_ARCH_LIST (torch reads it to choose -gencode flags) and the CUDA toolkit, for the build only."""
    from torch.utils import cpp_extension
    cuda_home = _cuda_home()
    saved = {k: os.environ.get(k) for k in ("TORCH_CUDA_ARCH_LIST", "CUDA_HOME")}
    saved_home = cpp_extension.CUDA_HOME
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list()
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home
        cpp_extension.CUDA_HOME = cuda_home
    try:
        yield
    finally:
        cpp_extension.CUDA_HOME = saved_home
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _build_jit() -> bool:
    from torch.utils import cpp_extension
    build_dir = cache_dir()
    failure = build_dir / FAILURE_FILE
    if failure.exists():
        raise _BuildFailed(f"an earlier build failed (delete {build_dir} to retry):\n{failure.read_text()}")
    build_dir.mkdir(parents=True, exist_ok=True)
    use_ninja = _ninja_available()
    if _built_library(build_dir) is None:
        print(COMPILING_MESSAGE + ("" if use_ninja else " (no ninja: one file at a time, slower)"),
              file=sys.stderr, flush=True)
        logger.info("%s (into %s)", COMPILING_MESSAGE, build_dir)
    host_flags, nvcc_flags = compile_flags()
    try:
        with _build_environment():
            if use_ninja:
                cpp_extension.load(name=JIT_NAME, sources=[str(p) for p in source_files()],
                                   extra_include_paths=[str(SOURCE_DIR)], extra_cflags=host_flags,
                                   extra_cuda_cflags=nvcc_flags, build_directory=str(build_dir),
                                   is_python_module=False, verbose=False)
            else:
                torch.ops.load_library(str(_build_with_setuptools(build_dir, host_flags, nvcc_flags)))
    except Exception as exc:  # the compiler's output is in the message
        summary = summarize_build_error(exc)
        try:
            failure.write_text(summary + "\n")
        except OSError:
            pass
        raise _BuildFailed(f"building it failed:\n{summary}") from exc
    _STATE.origin = f"jit {build_dir}" + ("" if use_ninja else " (setuptools, no ninja)")
    return True


class _BuildFailed(RuntimeError):
    pass


def _try_load() -> bool:
    """One attempt: already registered, else the prebuilt module, else a just-in-time build."""
    if _ops_registered():  # loaded already (e.g. by a test) in this process
        _STATE.origin = _STATE.origin or "already registered"
        return True
    prebuilt_problem = ""
    try:
        if _load_prebuilt():
            return True
    except Exception as exc:  # e.g. built against another torch: a fresh build may still work
        prebuilt_problem = f"the prebuilt {PREBUILT_MODULE} does not load ({type(exc).__name__}: {exc}); "
        logger.warning("vmamba_zoo: %s", prebuilt_problem)
    can_build, why_not = buildable()
    if not can_build:
        _STATE.origin = f"{prebuilt_problem}not built, and cannot be built here: {why_not}"
        logger.info("vmamba_zoo: CUDA selective scan unavailable (%s); using triton/reference", _STATE.origin)
        return False
    return _build_jit()


def load_extension() -> bool:
    """Make ``torch.ops.vmamba_zoo_cuda`` available (prebuilt module, else a just-in-time build); False when
    it cannot be had. Tried once per process, the outcome cached. Never raises: a failure is one warning."""
    if _STATE.loaded is not None:
        return _STATE.loaded
    with _STATE.lock:
        if _STATE.loaded is None:
            try:
                ok = _try_load()
            except _BuildFailed as exc:
                ok, _STATE.origin = False, str(exc)
                warnings.warn(f"vmamba_zoo: the CUDA selective scan is unavailable, {exc}\n"
                              f"falling back to the triton/reference backends", RuntimeWarning, stacklevel=3)
            except Exception as exc:  # anything else (an ABI mismatch ...): never break the caller
                ok, _STATE.origin = False, f"loading it failed: {type(exc).__name__}: {exc}"
                warnings.warn(f"vmamba_zoo: the CUDA selective scan is unavailable ({_STATE.origin}); "
                              f"falling back to the triton/reference backends", RuntimeWarning, stacklevel=3)
            _STATE.loaded = ok and _ops_registered()
        return _STATE.loaded


def extension_status() -> str:
    """Where the extension came from, or why it is unavailable ('' before the first attempt)."""
    return _STATE.origin


def _device_ok(device: torch.device) -> bool:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _STATE.devices:
        try:
            ok = bool(getattr(torch.ops, OPS_NAMESPACE).kernels_available(index))
        except Exception as exc:  # never break the caller: report and step aside
            logger.warning("vmamba_zoo: checking the CUDA selective scan on device %s failed: %s", index, exc)
            ok = False
        if not ok:
            warnings.warn(f"vmamba_zoo: the CUDA selective scan was not built for {torch.cuda.get_device_name(index)} "
                          f"(compute capability {'.'.join(map(str, torch.cuda.get_device_capability(index)))}; "
                          f"built for {extension_status()}): set TORCH_CUDA_ARCH_LIST and rebuild. "
                          f"Falling back to the triton/reference backends", RuntimeWarning, stacklevel=3)
        _STATE.devices[index] = ok
    return _STATE.devices[index]


# ----------------------------------------------------------------------------------------- backend
_DEVICE_TYPE = "cuda"  # the tests' CPU emulation of the kernels switches this to "cpu"


def _inputs_supported(tensors: Sequence[torch.Tensor]) -> bool:
    """(u, delta, A, B, C) for the forward, (dout, u, delta, A, B, C) for the backward: all on one CUDA
    device, no float64 (the kernels keep the state in float32), d_state within the kernels' limit."""
    if not tensors or any(t.device.type != _DEVICE_TYPE for t in tensors):
        return False
    if len({t.device for t in tensors}) != 1:
        return False
    if any(t.dtype not in _SUPPORTED_DTYPES for t in tensors):
        return False
    A = tensors[-3]
    return A.dim() == 2 and 1 <= A.shape[1] <= MAX_D_STATE


def supports(tensors: Sequence[torch.Tensor]) -> bool:
    # cheap checks first: a CPU call never triggers a build
    return _inputs_supported(tensors) and load_extension() and _device_ok(tensors[0].device)


def _common_dtype(*tensors: Optional[torch.Tensor]) -> torch.dtype:
    dtypes = {t.dtype for t in tensors if t is not None}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output):
    """The backend function (same signature as the reference's). Activations of mixed dtypes run in
    float32 (exact: the kernels compute in float32 anyway); parameters are float32."""
    act = _common_dtype(u, delta, B, C, z)
    y = getattr(torch.ops, OPS_NAMESPACE).selective_scan_fwd(
        dense(u, act), dense(delta, act), dense(A, torch.float32), dense(B, act), dense(C, act),
        dense(D, torch.float32), dense(z, act), dense(delta_bias, torch.float32), bool(delta_softplus),
        bool(fp32_output))
    return y if fp32_output else cast(y, u.dtype)


def selective_scan_fwd_states(u, delta, A, B, C, D, z, delta_bias, delta_softplus, fp32_output):
    """The forward and the states at its 256-position chunk starts (float32), which the backward reads instead of
    recomputing them: the kernels' own chunks, so this costs one store per chunk and state row."""
    act = _common_dtype(u, delta, B, C, z)
    y, states = getattr(torch.ops, OPS_NAMESPACE).selective_scan_fwd_states(
        dense(u, act), dense(delta, act), dense(A, torch.float32), dense(B, act), dense(C, act),
        dense(D, torch.float32), dense(z, act), dense(delta_bias, torch.float32), bool(delta_softplus),
        bool(fp32_output))
    return (y if fp32_output else cast(y, u.dtype)), states


def selective_scan_bwd(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, saved_states=None):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias), each in its input's dtype; None for absent
    optional inputs. ``saved_states``: selective_scan_fwd_states's, which spare the kernel a pass over u, delta
    and B."""
    act = _common_dtype(u, delta, B, C, z)
    dout = dense(dout) if dout.dtype in (torch.float32, act) else dense(dout, torch.float32)
    grads = getattr(torch.ops, OPS_NAMESPACE).selective_scan_bwd(
        dout, dense(u, act), dense(delta, act), dense(A, torch.float32), dense(B, act), dense(C, act),
        dense(D, torch.float32), dense(z, act), dense(delta_bias, torch.float32), bool(delta_softplus),
        dense(saved_states, torch.float32))
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    return tuple(None if t is None else cast(g, t.dtype) for g, t in zip(grads, inputs))


# ----------------------------------------------------------------------------------------- fused SS2D
SS2D_MAX_RANK = 64  # kSS2DMaxRank in ss2d.h; the kernels are built for d_state 1 (VMamba v2)


def ss2d_supports(tensors: Sequence[torch.Tensor]) -> bool:
    """(x, dts, Bs, Cs) for the forward, (dy, x, dts, Bs, Cs) for the backward: on one CUDA device, no float64,
    d_state 1, dt_rank up to 64."""
    dts, Bs = tensors[-3], tensors[-2]
    if any(t.device.type != _DEVICE_TYPE for t in tensors) or len({t.device for t in tensors}) != 1:
        return False
    if any(t.dtype not in _SUPPORTED_DTYPES for t in tensors):
        return False
    if Bs.dim() != 4 or Bs.shape[2] != 1 or dts.dim() != 4 or not 1 <= dts.shape[2] <= SS2D_MAX_RANK:
        return False
    return load_extension() and _device_ok(tensors[0].device)


def _channels_last(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t if channels_last else t.permute(0, 2, 3, 1)


def _ss2d_args(x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, channels_last):
    """The kernels' inputs: a channels-last image, activations in one dtype, parameters float32."""
    act = _common_dtype(x, dts, Bs, Cs)
    f32 = torch.float32
    return (dense(_channels_last(x, channels_last), act), dense(dts, act), dense(dt_weight, f32), dense(dt_bias, f32),
            dense(A, f32), dense(Bs, act), dense(Cs, act), dense(Ds, f32))


def ss2d_scan_fwd(x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last, save_states=False):
    """The fused SS2D scan (same signature as the reference's); a channels-first image is run channels-last."""
    out, states = getattr(torch.ops, OPS_NAMESPACE).ss2d_fwd(
        *_ss2d_args(x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, channels_last), directions, bool(save_states))
    return (out if channels_last else out.permute(0, 3, 1, 2).contiguous()), states


def ss2d_scan_bwd(dy, x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, directions, channels_last, states=None):
    """Gradients (dx, ddts, ddt_weight, ddt_bias, dA, dBs, dCs, dDs), each in its input's dtype and layout; from
    the forward's saved states when given (no forward re-walk), else re-walking the forward."""
    dy = dense(_channels_last(dy, channels_last), torch.float32)
    states = dy.new_empty(0) if states is None or states.numel() == 0 else dense(states, torch.float32)
    grads = getattr(torch.ops, OPS_NAMESPACE).ss2d_bwd(
        dy, *_ss2d_args(x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds, channels_last), states, directions)
    dx = grads[0] if channels_last else grads[0].permute(0, 3, 1, 2)
    inputs = (x, dts, dt_weight, dt_bias, A, Bs, Cs, Ds)
    return (cast(dx, x.dtype),) + tuple(cast(g, t.dtype) for g, t in zip(grads[1:], inputs[1:]))


# Auto mode's use of the fused CUDA kernels. The backward beats the Triton fused backward and the unfused
# composition at every stage (nvidia-h200, 2026-11-22, benchmarks/ss2d_cuda_h200_2026-11-22.md). The forward by
# direction (one warp per tile, batch and direction, one walk, atomic adds) beats the Triton forward at every
# VMamba-T/-B stage (benchmarks/ss2d_cuda_variants_h200_2026-12-03.txt). Deterministic mode's forward (segments
# joined in shared memory, walked twice) only wins where one warp walks a whole sequence, below 64 steps.
SS2D_FWD_AUTO_MAX_LENGTH_DETERMINISTIC = 64  # 2 * 32 steps: ss2d_split gives a single segment below it


def ss2d_fwd_auto(tensors: Sequence[torch.Tensor]) -> bool:
    if not ss2d_supports(tensors):
        return False
    return (not torch.are_deterministic_algorithms_enabled()
            or tensors[1].shape[-1] < SS2D_FWD_AUTO_MAX_LENGTH_DETERMINISTIC)


# ----------------------------------------------------------------------------------------- LayerNorm forward
LAYER_NORM_MAX_COLUMNS = (1 << 31) - 1


def layer_norm_supports(tensors: Sequence[Optional[torch.Tensor]]) -> bool:
    """(x, weight?, bias?): x float32 / float16 / bfloat16 on one CUDA device, the parameters float32."""
    x = tensors[0]
    if any(t.device != x.device for t in tensors) or x.device.type != _DEVICE_TYPE:
        return False
    if x.dtype not in _SUPPORTED_DTYPES or any(t.dtype != torch.float32 for t in tensors[1:]):
        return False
    return 1 <= x.shape[-1] <= LAYER_NORM_MAX_COLUMNS and load_extension() and _device_ok(x.device)


def layer_norm_fwd(x, weight, bias, eps, out_dtype):
    """The CUDA LayerNorm forward (csrc/selective_scan/layer_norm.cu; same signature as the reference's)."""
    return getattr(torch.ops, OPS_NAMESPACE).layer_norm_fwd(x, weight, bias, float(eps), out_dtype)


def _never(_tensors) -> bool:
    return False


# not picked by the custom op in auto mode: under torch.compile (no host cost per launch) the Triton kernel is faster
# on the largest maps and torch's as fast on the rest. layer_norm's plain eager path picks it in auto mode instead
# (layer_norm._eager_forward_backend), where launching from C++ without a cast kernel wins.
register_backend("layer_norm_fwd", "cuda", layer_norm_fwd, priority=CUDA_PRIORITY, supports=layer_norm_supports,
                 auto_supports=_never)

for _op, _fn, _supports, _auto in (("selective_scan_fwd", selective_scan_fwd, supports, None),
                                   ("selective_scan_fwd_states", selective_scan_fwd_states, supports, None),
                                   ("selective_scan_bwd", selective_scan_bwd, supports, None),
                                   ("ss2d_scan_fwd", ss2d_scan_fwd, ss2d_supports, ss2d_fwd_auto),
                                   ("ss2d_scan_bwd", ss2d_scan_bwd, ss2d_supports, None)):
    register_backend(_op, "cuda", _fn, priority=CUDA_PRIORITY, supports=_supports, auto_supports=_auto)
