#!/usr/bin/env bash
# SASS of one fused-SS2D kernel build, and the instruction mix of an address range of it (no GPU needed).
#   bash benchmarks/ss2d_sass.sh fwd|bwd [SRC_ROOT]          -> /tmp/ss2d_sass/<kind>.sass, branches listed
#   bash benchmarks/ss2d_sass.sh count FILE.sass FROM TO     -> instruction mix of [FROM, TO] (hex, no 0x)
# fwd = ss2d_fwd_directions_kernel<Half, 1, 8>, bwd = ss2d_bwd_states_kernel<Half, 1, 8>, for sm_90. SRC_ROOT: a
# tree holding vmamba_zoo/ (default: this checkout), e.g. `git archive ea5b501 vmamba_zoo | tar -x -C /tmp/old`.
# cuobjdump comes with triton's wheel when the CUDA toolkit has none.
set -euo pipefail
OUT=/tmp/ss2d_sass
mkdir -p "$OUT"
if [ "$1" = count ]; then
  awk "/\/\*$3\*\//,/\/\*$4\*\//" "$2" | grep -o "^\s*/\*[0-9a-f]*\*/\s*[^ ;]*\s*[A-Z0-9_.]*" |
    awk '{op=$2; if (op ~ /^@/) op=$3; split(op,a,"."); print a[1]}' | sort | uniq -c | sort -rn |
    awk '{t+=$1; printf "%s:%s ", $2,$1} END {print "\nTOTAL", t}'
  exit 0
fi
ROOT=${2:-$(cd "$(dirname "$0")/.." && pwd)}
SRC=$ROOT/vmamba_zoo/ops/csrc/selective_scan
PY=$(command -v python)
TORCH_INC=$($PY -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'include'))")
CUOBJDUMP=$(command -v cuobjdump || $PY -c "import triton, os; print(os.path.join(os.path.dirname(triton.__file__), 'backends/nvidia/bin/cuobjdump'))")
case $1 in
  fwd) KERNEL=ss2d_fwd_directions_kernel ;;
  bwd) KERNEL=ss2d_bwd_states_kernel ;;
  *) echo "fwd, bwd or count" >&2; exit 2 ;;
esac
cat > "$OUT/$1.cu" <<CU
#include "ss2d_kernel.cuh"
namespace vmamba_zoo_cuda {
void* keep() { return reinterpret_cast<void*>(&${KERNEL}<c10::Half, 1, 8>); }
}
CU
nvcc -O3 -std=c++17 -arch=sm_90 -cubin -I"$SRC" -I"$TORCH_INC" -I"$TORCH_INC/torch/csrc/api/include" \
  -o "$OUT/$1.cubin" "$OUT/$1.cu" -Xptxas -v 2>&1 | grep -i "registers\|spill" | tail -2
"$CUOBJDUMP" -sass "$OUT/$1.cubin" | grep -v "^\s*/\* 0x" | sed 's@/\* 0x[0-9a-f]* \*/@@' > "$OUT/$1.sass"
echo "$OUT/$1.sass; its branches:"
grep "BRA\|EXIT" "$OUT/$1.sass"
