#!/usr/bin/env bash
# The plain selective scan's GPU checks, in two device calls that each fit the 10-minute limit:
#   default:    benchmarks/cuda_scan_variants.py, this checkout's build against an earlier tree's (errors against
#               float64, kernels timed as % of copy, the training pair with saved states, the lanes forward);
#               benchmarks/scan_lanes_kernels.py from 1/8 to 4x the batch; benchmarks/gpu_error_probe.py; the CUDA
#               backend's GPU tests on this checkout's build. About 6-7 minutes on a fresh machine.
#   --ncu-only: Nsight Compute of both builds' forward and backward (benchmarks/scan_ncu.sh) and of the lanes forward
#               at d_state 16. About 4 minutes (it builds both trees).
#   --quick:    for a short budget: this checkout's build only (the lanes forward against the chunked one, the probe,
#               tests/gpu/test_cuda_backend.py, Nsight of the lanes forward at batch 32). About 4-5 minutes.
#   here:   rm -rf build/scan_prev && mkdir -p build/scan_prev && git archive REV vmamba_zoo | tar -x -C build/scan_prev
#   device: bash benchmarks/scan_gpu_check.sh $OUT [--ncu-only | --quick]   (carry: build/scan_prev; --quick needs none)
set -u
out=${1:?outdir}
mode=${2:-}
case "$mode" in
  "" | --ncu-only | --quick) ;;
  *) echo "scan_gpu_check.sh: unknown mode '$mode' (expected --ncu-only or --quick)" >&2; exit 2 ;;
esac
export MAX_JOBS=16
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # the benchmarks import vmamba_zoo from this checkout
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
date -u | tee -a "$out/device.txt"
shipped_env="VMAMBA_ZOO_CUDA_NVCC_FLAGS= TORCH_CUDA_ARCH_LIST=9.0 VMAMBA_ZOO_CUDA_CACHE=$PWD/build/fwd_variants/shipped"

# Nsight of the lanes forward at d_state 16 as auto runs it at the vanilla stage-0 shape (batch 32: lane_pairs), into
# $1: the sections (shared-memory bank conflicts in MemoryWorkloadAnalysis_Tables), then the stall reasons
ncu_lanes_forward() {
  local ncu="ncu --clock-control none --kernel-name regex:selective_scan_fwd_lanes --launch-skip 2 --launch-count 1"
  local sections="--section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats
    --section InstructionStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis"
  env $shipped_env SCAN_NCU_SHAPE=vanilla timeout 90 $ncu $sections --section MemoryWorkloadAnalysis_Tables \
    python benchmarks/scan_ncu.py > "$1" 2>&1
  # an Nsight without that table section profiles nothing: again without it
  grep -q Duration "$1" || env $shipped_env SCAN_NCU_SHAPE=vanilla timeout 90 $ncu $sections \
    python benchmarks/scan_ncu.py >> "$1" 2>&1
  env $shipped_env SCAN_NCU_SHAPE=vanilla timeout 60 $ncu \
    --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio" \
    python benchmarks/scan_ncu.py >> "$1" 2>&1
}

if [ "$mode" = --ncu-only ]; then
  builds=shipped
  [ -d build/scan_prev ] && builds="shipped prev=build/scan_prev"  # the earlier tree, where it was carried
  timeout 300 bash benchmarks/scan_ncu.sh "$out" $builds
  ncu_lanes_forward "$out/ncu_scan_fwd_lanes.txt"
  exit 0
fi

gpu_suites="tests/gpu/test_cuda_backend.py tests/gpu/test_gpu_backends.py"
if [ "$mode" = --quick ]; then
  gpu_suites=tests/gpu/test_cuda_backend.py
else
  variants=shipped
  [ -d build/scan_prev ] && variants="shipped prev"  # the earlier tree, where it was carried
  timeout 200 python benchmarks/cuda_scan_variants.py --only $variants 2>&1 | tee "$out/cuda_scan_variants.txt"
fi
# the lanes forward (d_state 16) against the chunked one and "auto" at 1/8 to 4x the batch (its weak side: few warps);
# with --quick this builds the extension first (60-90 s)
env $shipped_env timeout 200 python benchmarks/scan_lanes_kernels.py 2>&1 | tee "$out/scan_lanes_kernels.txt"
# bf16 from the shape's batch up, where auto runs the one-lane kernel (its bf16 build spilled until session 29)
env $shipped_env timeout 100 python benchmarks/scan_lanes_kernels.py --bf16 1 2 4 2>&1 | tee -a "$out/scan_lanes_kernels.txt"
# bad shapes raise, not crash (session 23's fix; six subprocesses that each load torch), then the GPU suite (its whole log: a crash shows in full)
env $shipped_env timeout 120 python benchmarks/gpu_error_probe.py 2>&1 | tee "$out/gpu_tests.txt"
env $shipped_env timeout 260 python -X faulthandler -m pytest -m gpu -q -p no:cacheprovider \
  $gpu_suites >> "$out/gpu_tests.txt" 2>&1
tail -5 "$out/gpu_tests.txt"
if [ "$mode" = --quick ]; then
  ncu_lanes_forward "$out/ncu_scan_fwd_lanes.txt"
  grep -E "Duration|L1/TEX Cache Throughput|Shared Load|Issued Warp" "$out/ncu_scan_fwd_lanes.txt"
fi
