#!/usr/bin/env bash
# The plain selective scan's GPU checks in one device call: this checkout's build against an earlier tree's
# (benchmarks/cuda_scan_variants.py: errors against float64, kernels timed as % of copy, the training pair with saved
# states, and the one-channel-a-lane backward from them), Nsight Compute of both builds' forward and backward
# (benchmarks/scan_ncu.sh) and of the lanes backward, and the CUDA backend's GPU
# tests on this checkout's build (reused from the variants' cache), after benchmarks/gpu_error_probe.py. About 7 minutes
# on a fresh machine.
#   here:   rm -rf build/scan_prev && mkdir -p build/scan_prev && git archive REV vmamba_zoo | tar -x -C build/scan_prev
#   device: bash benchmarks/scan_gpu_check.sh $OUT [--no-ncu]   (carry: build/scan_prev; --no-ncu: about 4 minutes)
set -u
out=${1:?outdir}
ncu=${2:-}
export MAX_JOBS=16
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
date -u | tee -a "$out/device.txt"
timeout 260 python benchmarks/cuda_scan_variants.py --only shipped prev 2>&1 | tee "$out/cuda_scan_variants.txt"
if [ "$ncu" != --no-ncu ]; then
  timeout 120 bash benchmarks/scan_ncu.sh "$out" shipped prev=build/scan_prev
  # the one-channel-a-lane backward (session 23) from saved states: its own file
  VMAMBA_ZOO_CUDA_BWD_KERNEL=lanes VMAMBA_ZOO_CUDA_NVCC_FLAGS= TORCH_CUDA_ARCH_LIST=9.0 \
    VMAMBA_ZOO_CUDA_CACHE=$PWD/build/fwd_variants/shipped timeout 60 \
    ncu --clock-control none --kernel-name regex:selective_scan_bwd_lanes --launch-skip 2 --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats \
    --section InstructionStats --section MemoryWorkloadAnalysis python benchmarks/scan_ncu.py \
    > "$out/ncu_scan_bwd_lanes.txt" 2>&1
fi
# the lanes kernels against the chunked ones at 1/8 and the full batch (their weak side: few warps at small batches)
VMAMBA_ZOO_CUDA_NVCC_FLAGS= TORCH_CUDA_ARCH_LIST=9.0 VMAMBA_ZOO_CUDA_CACHE=$PWD/build/fwd_variants/shipped \
  timeout 90 bash -c 'python benchmarks/scan_lanes_kernels.py 0.125; python benchmarks/scan_lanes_kernels.py 1' \
  2>&1 | tee -a "$out/cuda_scan_variants.txt"
# bad shapes raise, not crash (session 23's fix), then the GPU suite (its whole log: a crash shows in full)
export VMAMBA_ZOO_CUDA_NVCC_FLAGS= TORCH_CUDA_ARCH_LIST=9.0 VMAMBA_ZOO_CUDA_CACHE=$PWD/build/fwd_variants/shipped
timeout 60 python benchmarks/gpu_error_probe.py 2>&1 | tee "$out/gpu_tests.txt"
timeout 240 python -X faulthandler -m pytest -m gpu -q -p no:cacheprovider tests/gpu/test_cuda_backend.py \
  tests/gpu/test_gpu_backends.py >> "$out/gpu_tests.txt" 2>&1
tail -5 "$out/gpu_tests.txt"
