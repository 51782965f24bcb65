#!/usr/bin/env bash
# Nsight Compute view (stall reasons, issue, throughput) of the plain selective-scan forward and backward at
# VMamba-T's stage-0 shape, for builds that benchmarks/cuda_scan_variants.py made (its cache: build/fwd_variants/NAME):
#   bash benchmarks/scan_ncu.sh OUTDIR NAME[=SOURCE_ROOT] ...    e.g. shipped base=build/scan_base
set -u
out=${1:?outdir}; shift
sections="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats
  --section SchedulerStats --section InstructionStats --section MemoryWorkloadAnalysis"
for spec in "$@"; do
  name=${spec%%=*}
  root=.
  [[ $spec == *=* ]] && root=${spec#*=}
  for pass in fwd bwd; do
    PYTHONPATH=$root VMAMBA_ZOO_CUDA_NVCC_FLAGS= TORCH_CUDA_ARCH_LIST=9.0 \
      VMAMBA_ZOO_CUDA_CACHE=$PWD/build/fwd_variants/$name \
      ncu --clock-control none --kernel-name regex:selective_scan_$pass --launch-skip 2 --launch-count 1 $sections \
      python benchmarks/scan_ncu.py > "$out/ncu_scan_${pass}_${name// /_}.txt" 2>&1
  done
done
