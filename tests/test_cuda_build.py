"""The CUDA selective scan on a machine without a GPU: its sources compile with the installed nvcc, and the
Python side (backend registration, build cache keys, fallbacks) behaves.

With nvcc and a CUDA build of torch the whole extension is built just in time for one architecture (sm_80)
and loaded (its kernels cannot run here, but the ops must register); with a CPU-only torch the .cu files
are compiled alone (nvcc -c). Both are cached under ~/.cache/vmamba_zoo by source hash, so a rerun is
instant. Without nvcc the compile test is skipped, or fails when VMAMBA_ZOO_REQUIRE_NVCC=1 (as .ci/run sets).
The .cu files are also compiled with CUDA 12.4 (scripts/fetch_cuda12.sh unpacks Debian's toolkit) for sm_80 and
sm_90.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from vmamba_zoo.ops import backends, cuda_backend, selective_scan
from vmamba_zoo.ops import reference

REPO = Path(__file__).resolve().parents[1]
COMPILE_ARCH = "8.0"


def _nvcc():
    home = cuda_backend._cuda_home()
    if home:
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _no_compiler(why: str, hint: str) -> None:
    """A compiler this machine lacks: the test fails under VMAMBA_ZOO_REQUIRE_NVCC=1 (as .ci/run sets), else skips."""
    if os.environ.get("VMAMBA_ZOO_REQUIRE_NVCC") == "1":
        pytest.fail(f"{why} but VMAMBA_ZOO_REQUIRE_NVCC=1 ({hint})")
    pytest.skip(f"{why}: the CUDA sources were not compiled with it (set VMAMBA_ZOO_REQUIRE_NVCC=1 to fail)")


@pytest.fixture
def nvcc():
    path = _nvcc()
    if path is None:
        _no_compiler("nvcc not found", "set CUDA_HOME or put nvcc on PATH")
    return path


# ------------------------------------------------------------------------------------------ compile
def _compile_objects(nvcc: str, archs: tuple[str, ...] = (COMPILE_ARCH,)) -> Path:
    """nvcc -c every .cu for the given architectures, two files at a time (the device code alone, where no full
    extension build is possible). Returns the folder of the objects, cached by nvcc version, archs and sources."""
    from torch.utils.cpp_extension import include_paths
    digest = hashlib.sha256(subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.encode())
    digest.update(",".join(archs).encode())
    for path in sorted(cuda_backend.SOURCE_DIR.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    out = Path.home() / ".cache" / "vmamba_zoo" / "cuda_compile_check" / digest.hexdigest()[:16]
    out.mkdir(parents=True, exist_ok=True)
    gencodes = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in (arch.replace(".", "") for arch in archs)]

    def compile_one(source: Path) -> None:
        obj = out / (source.stem + ".o")
        if obj.exists():
            return
        cmd = [nvcc, "-c", str(source), "-o", str(obj) + ".tmp", "-std=c++20", "-O3", *gencodes,
               "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr",
               "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
               "-D__CUDA_NO_HALF2_OPERATORS__", f"-I{cuda_backend.SOURCE_DIR}"]
        cmd += [f"-I{p}" for p in include_paths()]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, f"{nvcc} failed on {source.name}:\n{result.stderr[-4000:]}"
        os.replace(str(obj) + ".tmp", obj)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(compile_one, [p for p in cuda_backend.source_files() if p.suffix == ".cu"]))
    return out


_BUILD_SCRIPT = textwrap.dedent("""
    import torch, warnings
    warnings.simplefilter("error", RuntimeWarning)  # a failed build is a test failure here, not a fallback
    from vmamba_zoo.ops import cuda_backend
    (cuda_backend.cache_dir() / cuda_backend.FAILURE_FILE).unlink(missing_ok=True)  # always a fresh attempt
    ok = cuda_backend.load_extension()
    print("STATUS", ok, cuda_backend.extension_status())
    ops = torch.ops.vmamba_zoo_cuda
    print("OPS", ops.selective_scan_fwd, ops.selective_scan_bwd, ops.kernels_available, ops.ss2d_fwd, ops.ss2d_bwd,
          ops.ss2d_projected, ops.layer_norm_fwd, ops.layer_norm_eager)
    u = torch.zeros(1, 2, 3)
    try:  # registered for CUDA only: a CPU call must be refused by the dispatcher, not crash
        ops.selective_scan_fwd(u, u, torch.zeros(2, 1), torch.zeros(1, 1, 1, 3), torch.zeros(1, 1, 1, 3),
                               None, None, None, True, True)
        print("CPU CALL ACCEPTED")
    except (RuntimeError, NotImplementedError) as exc:
        print("CPU CALL REFUSED", str(exc).splitlines()[0][:200])
""")


def test_cuda_sources_compile(nvcc, tmp_path):
    """The kernels compile under the installed CUDA (13 here, where CUB lost LaneId/CTA_SYNC) for sm_80;
    with a CUDA build of torch, the full just-in-time build also links and registers the ops."""
    can_build, why_not = cuda_backend.buildable()
    if torch.version.cuda is None or not can_build:
        _compile_objects(nvcc)  # at least the device code
        return
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=COMPILE_ARCH, MAX_JOBS=os.environ.get("MAX_JOBS", "2"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("VMAMBA_ZOO_CUDA_JIT", None)
    result = subprocess.run([sys.executable, "-c", _BUILD_SCRIPT], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=1200)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "STATUS True" in result.stdout, output[-6000:]
    for op in ("ss2d_projected", "layer_norm_fwd", "layer_norm_eager"):  # the eager paths' C++ nodes, the LayerNorm
        assert f"vmamba_zoo_cuda.{op}" in result.stdout, output[-3000:]
    assert "CPU CALL REFUSED" in result.stdout, output[-3000:]


def _fetch_cuda12() -> str:
    """nvcc of CUDA 12.4 from scripts/fetch_cuda12.sh (Debian's toolkit, unpacked under ~/.cache/vmamba_zoo)."""
    result = subprocess.run(["bash", str(REPO / "scripts" / "fetch_cuda12.sh")], capture_output=True, text=True,
                            timeout=1800)
    if result.returncode == 3:  # not a Debian-like machine: nothing to fetch with
        _no_compiler("no CUDA 12 nvcc could be fetched", result.stderr.strip())
    assert result.returncode == 0, f"scripts/fetch_cuda12.sh failed:\n{result.stderr[-3000:]}"
    return result.stdout.strip().splitlines()[-1]


def test_cuda_sources_compile_with_cuda12():
    """Issue #3: the kernels build with CUDA 12.x as well as 13.x. Every .cu compiles with CUDA 12.4's nvcc for
    sm_80 and sm_90, and each object holds both architectures' code for the scan, SS2D and LayerNorm kernels."""
    nvcc = _fetch_cuda12()
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    assert "release 12." in version, version
    out = _compile_objects(nvcc, archs=("8.0", "9.0"))
    cuobjdump = Path(nvcc).parents[3] / "bin" / "cuobjdump"
    expected = {"selective_scan_fwd": ["selective_scan_fwd_kernel", "selective_scan_fwd_lanes_kernel"],
                "selective_scan_bwd": ["selective_scan_bwd_kernel"], "ss2d": ["ss2d"], "layer_norm": ["layer_norm"]}
    for stem, kernels in expected.items():
        listing = subprocess.run([str(cuobjdump), "--dump-resource-usage", str(out / f"{stem}.o")],
                                 capture_output=True, text=True)
        assert listing.returncode == 0, listing.stderr
        for arch in ("sm_80", "sm_90"):
            section = listing.stdout.split(f"arch = {arch}")
            assert len(section) > 1, f"{stem}.o has no {arch} code:\n{listing.stdout[:2000]}"
            for kernel in kernels:
                assert kernel in section[1].split("arch = ")[0], f"{stem}.o lacks {kernel} for {arch}"


def test_sources_avoid_apis_removed_in_cuda13():
    """CUDA 13's CUB dropped LaneId / CTA_SYNC (the original VMamba kernel's build failure)."""
    for path in cuda_backend.SOURCE_DIR.iterdir():
        text = path.read_text()
        for removed in ("cub::LaneId", "cub::CTA_SYNC", "LaneId()", "CTA_SYNC()"):
            assert removed not in text, f"{path.name} uses {removed}"


# ------------------------------------------------------------------------------------------ registry
def _inputs(length=10, channels=4, groups=2, d_state=2):
    u = torch.randn(1, channels, length)
    return u, 0.5 * torch.randn_like(u), -torch.rand(channels, d_state), torch.randn(1, groups, d_state, length), \
        torch.randn(1, groups, d_state, length)


def test_cuda_backend_registered_above_triton():
    for op in ("selective_scan_fwd", "selective_scan_bwd"):
        names = backends.available_backends(op)
        assert "cuda" in names and names[-1] == "reference"
        assert names.index("cuda") == 0 or backends._REGISTRY[op][names[0]].priority > cuda_backend.CUDA_PRIORITY
        if "triton" in names:
            assert names.index("cuda") < names.index("triton")


def test_cpu_tensors_fall_back_with_one_warning(monkeypatch):
    """backend='cuda' on CPU tensors: one warning, then the reference result; no build is attempted."""
    monkeypatch.setattr(backends, "_WARNED", set())

    def no_build():
        raise AssertionError("a CPU call must not load or build the extension")
    monkeypatch.setattr(cuda_backend, "load_extension", no_build)
    u, delta, A, B, C = _inputs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y1 = selective_scan(u, delta, A, B, C, backend="cuda")
        y2 = selective_scan(u, delta, A, B, C, backend="cuda")
    messages = [str(w.message) for w in caught if "'cuda'" in str(w.message)]
    assert len(messages) == 1 and "falling back" in messages[0], messages
    want = selective_scan(u, delta, A, B, C, backend="reference")
    torch.testing.assert_close(y1, want)
    torch.testing.assert_close(y2, want)


def test_supports_rejects_cpu_float64_and_large_state(monkeypatch):
    monkeypatch.setattr(cuda_backend, "load_extension", lambda: True)
    u, delta, A, B, C = _inputs()
    assert not cuda_backend.supports((u, delta, A, B, C))  # CPU
    assert not cuda_backend._inputs_supported(())


# ------------------------------------------------------------------------------------------ helpers
def test_arch_list_default_and_env():
    assert cuda_backend.arch_list({}) == "8.0;8.6;9.0+PTX"
    assert cuda_backend.arch_list({"TORCH_CUDA_ARCH_LIST": ""}) == "8.0;8.6;9.0+PTX"
    assert cuda_backend.arch_list({"TORCH_CUDA_ARCH_LIST": "9.0"}) == "9.0"
    assert cuda_backend._arch_tag("8.0;8.6;9.0+PTX") == "sm80-86-90ptx"
    assert cuda_backend._arch_tag("7.5 8.0") == "sm75-80"


def test_cache_key_separates_torch_cuda_arch_and_sources(monkeypatch, tmp_path):
    key = cuda_backend.cache_key(torch_version="2.11.0+cu130", cuda_version="13.0", archs="9.0", source_hash="abc")
    assert key == "torch2.11.0_cu130_cu13.0_sm90_abc"
    others = [cuda_backend.cache_key(torch_version="2.12.0", cuda_version="13.0", archs="9.0", source_hash="abc"),
              cuda_backend.cache_key(torch_version="2.11.0+cu130", cuda_version="12.8", archs="9.0", source_hash="abc"),
              cuda_backend.cache_key(torch_version="2.11.0+cu130", cuda_version="13.0", archs="8.0", source_hash="abc"),
              cuda_backend.cache_key(torch_version="2.11.0+cu130", cuda_version="13.0", archs="9.0", source_hash="abd")]
    assert len({key, *others}) == 5
    assert all("/" not in k and " " not in k for k in others)
    monkeypatch.setenv("VMAMBA_ZOO_CUDA_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6")
    assert cuda_backend.cache_dir().parent == tmp_path and "_sm86_" in cuda_backend.cache_dir().name
    assert cuda_backend.sources_hash() in cuda_backend.cache_dir().name
    monkeypatch.delenv("VMAMBA_ZOO_CUDA_CACHE")
    assert cuda_backend.cache_dir().parent == Path.home() / ".cache" / "vmamba_zoo" / "torch_extensions"


def test_extra_nvcc_flags_reach_the_build_and_its_cache_key(monkeypatch):
    monkeypatch.delenv("VMAMBA_ZOO_CUDA_NVCC_FLAGS", raising=False)
    plain_key, (_, plain_flags) = cuda_backend.cache_key(), cuda_backend.compile_flags()
    monkeypatch.setenv("VMAMBA_ZOO_CUDA_NVCC_FLAGS", " -DVMAMBA_ZOO_CUDA_FWD_MIN_BLOCKS=4  -allow-unsupported-compiler ")
    _, flags = cuda_backend.compile_flags()
    assert flags == plain_flags + ["-DVMAMBA_ZOO_CUDA_FWD_MIN_BLOCKS=4", "-allow-unsupported-compiler"]
    assert cuda_backend.cache_key() != plain_key  # another build, never a stale one


def test_buildable_reasons(monkeypatch):
    monkeypatch.setenv("VMAMBA_ZOO_CUDA_JIT", "0")
    assert cuda_backend.buildable() == (False, "just-in-time builds are off (VMAMBA_ZOO_CUDA_JIT=0)")
    monkeypatch.delenv("VMAMBA_ZOO_CUDA_JIT")
    monkeypatch.setattr(torch.version, "cuda", None)
    assert cuda_backend.buildable() == (False, "this torch is a CPU build")


def test_summarize_build_error_keeps_compiler_errors():
    message = ("Error building extension 'vmamba_zoo_selective_scan': [1/3] /usr/local/cuda/bin/nvcc -c x.cu -I/a\n"
               "FAILED: selective_scan_fwd.cuda.o\n"
               "x.cu(12): error: identifier \"cub::LaneId\" is undefined\n"
               "1 error detected in the compilation of \"x.cu\".\n"
               "ninja: build stopped: subcommand failed.\n")
    summary = cuda_backend.summarize_build_error(message)
    assert 'error: identifier "cub::LaneId" is undefined' in summary
    assert "/usr/local/cuda/bin/nvcc -c" not in summary  # not the command line


# ------------------------------------------------------------------------------------------ build failure
@pytest.fixture
def failing_build(monkeypatch, tmp_path):
    """A just-in-time build whose compiler fails: fresh extension state, cache in tmp_path."""
    from torch.utils import cpp_extension
    calls = []

    def load(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("Error building extension 'vmamba_zoo_selective_scan': [1/3] nvcc -c ...\n"
                           "selective_scan_bwd.cu(40): error: expected a \";\"\n"
                           "ninja: build stopped: subcommand failed.")
    monkeypatch.setattr(cpp_extension, "load", load)
    monkeypatch.setattr(cuda_backend, "_STATE", cuda_backend._ExtensionState())
    monkeypatch.setattr(cuda_backend, "_ops_registered", lambda: False)
    monkeypatch.setattr(cuda_backend, "_load_prebuilt", lambda: False)
    monkeypatch.setattr(cuda_backend, "buildable", lambda: (True, ""))
    monkeypatch.setattr(cuda_backend, "_ninja_available", lambda: True)
    monkeypatch.setenv("VMAMBA_ZOO_CUDA_CACHE", str(tmp_path))
    return calls


def test_build_failure_warns_once_and_falls_back(failing_build, monkeypatch, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cuda_backend.load_extension() is False
        assert cuda_backend.load_extension() is False  # cached: no second build, no second warning
    assert len(failing_build) == 1
    assert cuda_backend.COMPILING_MESSAGE in capsys.readouterr().err
    build_warnings = [str(w.message) for w in caught if "CUDA selective scan is unavailable" in str(w.message)]
    assert len(build_warnings) == 1, build_warnings
    assert 'error: expected a ";"' in build_warnings[0] and "falling back" in build_warnings[0]
    # the failure is remembered on disk: the next process does not spend minutes on it again
    monkeypatch.setattr(cuda_backend, "_STATE", cuda_backend._ExtensionState())
    with pytest.warns(RuntimeWarning, match="an earlier build failed"):
        assert cuda_backend.load_extension() is False
    assert len(failing_build) == 1


def test_build_failure_never_breaks_a_forward(failing_build, monkeypatch):
    """Inputs the cuda backend would take, a build that fails: auto mode warns and runs the next backend."""
    monkeypatch.setattr(cuda_backend, "_inputs_supported", lambda tensors: True)
    u, delta, A, B, C = _inputs(length=17)
    with pytest.warns(RuntimeWarning, match="CUDA selective scan is unavailable"):
        y = selective_scan(u, delta, A, B, C, delta_softplus=True)
    torch.testing.assert_close(y, reference.selective_scan_fwd(u, delta, A, B, C, None, None, None, True, True))


def test_build_without_ninja_goes_through_setuptools(failing_build, monkeypatch):
    """No ninja (torch's load() needs it): setuptools' build_ext compiles instead; its failure is summarised too."""
    monkeypatch.setattr(cuda_backend, "_ninja_available", lambda: False)
    calls = []

    def setuptools_build(build_dir, host_flags, nvcc_flags):
        calls.append(build_dir)
        raise RuntimeError("setuptools build_ext failed:\nselective_scan.cpp:12:3: error: 'foo' was not declared")
    monkeypatch.setattr(cuda_backend, "_build_with_setuptools", setuptools_build)
    with pytest.warns(RuntimeWarning, match="'foo' was not declared"):
        assert cuda_backend.load_extension() is False
    assert len(calls) == 1 and failing_build == []


def test_built_library_names(tmp_path):
    import sysconfig
    assert cuda_backend._built_library(tmp_path) is None
    suffixed = tmp_path / f"{cuda_backend.JIT_NAME}{sysconfig.get_config_var('EXT_SUFFIX')}"
    suffixed.write_bytes(b"")
    assert cuda_backend._built_library(tmp_path) == suffixed
    (tmp_path / f"{cuda_backend.JIT_NAME}.so").write_bytes(b"")
    assert cuda_backend._built_library(tmp_path) == tmp_path / f"{cuda_backend.JIT_NAME}.so"
