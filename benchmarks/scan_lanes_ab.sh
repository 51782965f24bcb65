#!/usr/bin/env bash
# The d_state-16 forward (benchmarks/scan_lanes_kernels.py) of an earlier tree against this checkout, in one call,
# alternating A B A B so that drift shows; then the CUDA backend's GPU tests on this checkout's build.
#   here:   rm -rf build/scan_prev && mkdir -p build/scan_prev && git archive REV vmamba_zoo | tar -x -C build/scan_prev
#   device: bash benchmarks/scan_lanes_ab.sh $OUT [scan_lanes_kernels.py args, default: --bf16 1 2 4]   (carry: build/scan_prev)
set -u
out=${1:?outdir}
shift
args=${*:---bf16 1 2 4}
[ -d build/scan_prev/vmamba_zoo ] || { echo "scan_lanes_ab.sh: carry build/scan_prev (see the header)" >&2; exit 2; }
export MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 VMAMBA_ZOO_CUDA_NVCC_FLAGS=
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
date -u | tee -a "$out/device.txt"
for round in 1 2; do
  for tree in prev this; do
    root=$PWD; [ $tree = prev ] && root=$PWD/build/scan_prev
    echo "== round $round, $tree tree ($root)" | tee -a "$out/scan_lanes_ab.txt"
    PYTHONPATH=$root VMAMBA_ZOO_CUDA_CACHE=$PWD/build/ab_cache_$tree timeout 240 \
      python benchmarks/scan_lanes_kernels.py $args 2>&1 | tee -a "$out/scan_lanes_ab.txt"
  done
done
PYTHONPATH=$PWD VMAMBA_ZOO_CUDA_CACHE=$PWD/build/ab_cache_this timeout 200 python -m pytest -m gpu -q -p no:cacheprovider \
  tests/gpu/test_cuda_backend.py > "$out/gpu_tests.txt" 2>&1
tail -3 "$out/gpu_tests.txt"
