"""Shared by the scripts that compare builds of the CUDA extension (cuda_scan_variants.py, ss2d_cuda_builds.py):
one extension per process, so each build is made and measured in a child process of its own, which prints one
`RESULT <json>` line."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable


def build_env(flags: str, cache: Path, root: str = ".") -> dict:
    """The child's environment: extra nvcc flags (part of the cache key), sm_90 only, its own cache, `root` first
    on the path (a checkout or an older source tree)."""
    env = dict(os.environ, VMAMBA_ZOO_CUDA_NVCC_FLAGS=flags, TORCH_CUDA_ARCH_LIST="9.0",
               VMAMBA_ZOO_CUDA_CACHE=str(Path(cache).resolve()))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def child_result(script: str, child: str, env: dict, cwd: str | None = None) -> dict:
    """Run `script --child <child>` and return its RESULT, or {"error": the output's tail}."""
    proc = subprocess.run([sys.executable, str(Path(script).resolve()), "--child", child], env=env, cwd=cwd,
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (proc.stdout + proc.stderr)[-2000:]}


def build_all(names: list[str], run: Callable[[str, str], dict]) -> dict:
    """run(name, "build") for every name, four at a time (nvcc takes 4 threads a file: 16 cores)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(names, pool.map(lambda n: run(n, "build"), names)))


def print_result_line(result: dict) -> None:
    """In the child: the one line the parent reads."""
    print("RESULT " + json.dumps(result))


def parent_args(doc: str, default_cache: str, measure: Callable[[bool], dict]):
    """The command line of a build-comparison script. Run as a child (--child build|measure), it calls
    measure(build_only), prints the RESULT line and returns None; otherwise it returns the parent's arguments."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=("build", "measure"))
    parser.add_argument("--cache", default=default_cache)
    parser.add_argument("--only", nargs="*", help="build names (default: all)")
    args = parser.parse_args()
    if args.child:
        print_result_line(measure(args.child == "build"))
        return None
    return args
