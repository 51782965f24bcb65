#!/usr/bin/env bash
# The plain selective scan's GPU checks in one device call: this checkout's build against an earlier tree's
# (benchmarks/cuda_scan_variants.py: errors against float64, kernels timed as % of copy, the training pair with saved
# states), Nsight Compute of both builds' forward and backward (benchmarks/scan_ncu.sh), and the CUDA backend's GPU
# tests on this checkout's build (reused from the variants' cache). About 6 minutes on a fresh machine.
#   here:   rm -rf build/scan_prev && mkdir -p build/scan_prev && git archive REV vmamba_zoo | tar -x -C build/scan_prev
#   device: bash benchmarks/scan_gpu_check.sh $OUT [--no-ncu]   (carry: build/scan_prev; --no-ncu: about 4 minutes)
set -u
out=${1:?outdir}
ncu=${2:-}
export MAX_JOBS=16
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
date -u | tee -a "$out/device.txt"
timeout 260 python benchmarks/cuda_scan_variants.py --only shipped prev 2>&1 | tee "$out/cuda_scan_variants.txt"
[ "$ncu" = --no-ncu ] || timeout 120 bash benchmarks/scan_ncu.sh "$out" shipped prev=build/scan_prev
VMAMBA_ZOO_CUDA_NVCC_FLAGS= TORCH_CUDA_ARCH_LIST=9.0 VMAMBA_ZOO_CUDA_CACHE=$PWD/build/fwd_variants/shipped \
  timeout 150 python -m pytest -m gpu -q tests/gpu/test_cuda_backend.py tests/gpu/test_gpu_backends.py 2>&1 |
  tail -8 | tee "$out/gpu_tests.txt"
