#!/usr/bin/env bash
# Fetch a CUDA 12 compiler (Debian 13 "trixie"'s nvidia-cuda-toolkit, CUDA 12.4) into a cache outside the clone,
# so tests/test_cuda_build.py can check that the kernels still compile with CUDA 12 on a machine whose own nvcc
# is CUDA 13. Only downloads and unpacks .deb files (apt-get download + dpkg-deb): nothing is installed.
#
#   scripts/fetch_cuda12.sh
#     CUDA12_CACHE   cache root (default ~/.cache/vmamba_zoo/cuda12)
#
# Keeps nvcc, its front end and back end (cicc, cudafe++, ptxas, fatbinary, nvlink), libdevice and the CUDA headers
# (about 220 MB of the 1 GB download), with an nvcc.profile that points at the unpacked folder. Does nothing when
# that folder is already complete. Prints the nvcc path as the last line of stdout; progress and errors go to
# stderr. Needs apt-get and dpkg-deb (Debian or Ubuntu) and network access to deb.debian.org on the first run.
set -euo pipefail
root="${CUDA12_CACHE:-$HOME/.cache/vmamba_zoo/cuda12}"
nvcc="$root/toolkit/usr/lib/nvidia-cuda-toolkit/bin/nvcc"
stamp="$root/toolkit/.complete"
script_hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"  # an edited script unpacks anew
if [ -x "$nvcc" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$script_hash" ]; then
  echo "$nvcc"; exit 0
fi
for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "fetch_cuda12: $tool not found (this script needs a Debian or Ubuntu" \
    "machine)" >&2; exit 3; }
done

rm -rf "$root/toolkit" "$root/apt"
mkdir -p "$root/apt/lists/partial" "$root/apt/cache/archives/partial" "$root/apt/debs" "$root/toolkit"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg  # Debian's archive keys (package debian-archive-keyring)
signed_by=""; [ -f "$keyring" ] && signed_by="[signed-by=$keyring] "
echo "deb ${signed_by}http://deb.debian.org/debian trixie main non-free" > "$root/apt/sources.list"
# an apt of its own: this machine's sources, lists and installed packages are neither read nor changed
apt_opts=(-o "Dir::Etc::SourceList=$root/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$root/apt/lists" -o "Dir::Cache=$root/apt/cache"
          -o Debug::NoLocking=1 -o APT::Sandbox::User="$(id -un)" -o Acquire::Retries=3)
echo "fetch_cuda12: reading Debian trixie's package lists" >&2
apt-get "${apt_opts[@]}" -q update >&2 || {
  echo "fetch_cuda12: apt-get update of deb.debian.org trixie failed (no network, or Debian's archive keys missing:" \
       "apt-get install debian-archive-keyring)" >&2; exit 1; }
echo "fetch_cuda12: downloading nvidia-cuda-toolkit, nvidia-cuda-dev and libcu++-dev (about 1 GB)" >&2
(cd "$root/apt/debs" && apt-get "${apt_opts[@]}" -q download nvidia-cuda-toolkit nvidia-cuda-dev libcu++-dev >&2) || {
  echo "fetch_cuda12: apt-get download failed" >&2; exit 1; }

echo "fetch_cuda12: unpacking" >&2
dest="$root/toolkit"
dpkg-deb --fsys-tarfile "$root"/apt/debs/nvidia-cuda-toolkit_*.deb |
  tar -x -C "$dest" ./usr/lib/nvidia-cuda-toolkit ./usr/bin/cudafe++ ./usr/bin/ptxas ./usr/bin/fatbinary \
    ./usr/bin/nvlink ./usr/bin/bin2c ./usr/bin/cuobjdump
dpkg-deb --fsys-tarfile "$root"/apt/debs/nvidia-cuda-dev_*.deb | tar -x -C "$dest" ./usr/include
# cuda_fp16.h includes <nv/target>, which Debian ships in libcu++ (CCCL)
dpkg-deb --fsys-tarfile "$root"/apt/debs/libcu++-dev_*.deb | tar -x -C "$dest" ./usr/include
# Debian's profile is a link to /etc/nvcc.profile with absolute paths; this one is relative to nvcc itself
rm -f "$dest/usr/lib/nvidia-cuda-toolkit/bin/nvcc.profile"
cat > "$dest/usr/lib/nvidia-cuda-toolkit/bin/nvcc.profile" <<'EOF'
NVVMIR_LIBRARY_DIR = $(_HERE_)/../libdevice
PATH		+= $(_HERE_):$(_HERE_)/../../../bin:
INCLUDES	+= "-I$(_HERE_)/../../../include" $(_SPACE_)
EOF
version="$("$nvcc" --version | grep -o 'release [0-9.]*')" || {
  echo "fetch_cuda12: the unpacked nvcc does not run" >&2; exit 1; }
echo "fetch_cuda12: nvcc $version ($(cd "$root/apt/debs" && ls nvidia-cuda-toolkit_*.deb))" >&2
rm -rf "$root/apt"  # the 1 GB of .deb files
echo "$script_hash" > "$stamp"
echo "$nvcc"
