#!/usr/bin/env bash
# Nsight Compute view of the fused SS2D CUDA kernels (stall reasons, occupancy, throughput) plus ptxas's register
# and spill counts. bash benchmarks/ss2d_ncu.sh OUTDIR [stage ...]   (on a CUDA machine, from the repository root)
# SS2D_NCU_SOURCE=1 adds, per kernel and stage, the SASS listing with each instruction's executions and stall samples
# (ncu_*_source.csv): where in the step loop the warps wait.
set -u
out=${1:?outdir}; shift
stages=${*:-0 2}
export PYTHONPATH=. VMAMBA_ZOO_CUDA_CACHE=${VMAMBA_ZOO_CUDA_CACHE:-$PWD/build/cuda_cache}
python -c "import vmamba_zoo.ops.cuda_backend as c; print(c.load_extension(), c.extension_status())"
inc=$(python -c "from torch.utils.cpp_extension import include_paths; print(' '.join('-I'+p for p in include_paths()))")
src=vmamba_zoo/ops/csrc/selective_scan
nvcc -c $src/ss2d.cu -o /tmp/ss2d.o -std=c++20 -O3 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC \
  --expt-relaxed-constexpr -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
  -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ -I$src $inc -Xptxas -v 2>&1 |
  grep -A3 "Compiling entry.*Half" | grep -v "^--" > "$out/ptxas.txt"
sections="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats
  --section SchedulerStats --section MemoryWorkloadAnalysis --section InstructionStats"
for s in $stages; do
  for k in bwd fwd; do
    ncu --clock-control none --kernel-name regex:ss2d_${k} --launch-skip 1 --launch-count 1 $sections \
      python benchmarks/ss2d_ncu.py "$s" > "$out/ncu_${k}_stage$s.txt" 2>&1
    if [ "${SS2D_NCU_SOURCE:-0}" = 1 ]; then
      ncu --clock-control none --kernel-name regex:ss2d_${k} --launch-skip 1 --launch-count 1 \
        --section SourceCounters --section WarpStateStats --page source --csv --print-source sass \
        python benchmarks/ss2d_ncu.py "$s" > "$out/ncu_${k}_stage${s}_source.csv" 2>&1
    fi
  done
done
