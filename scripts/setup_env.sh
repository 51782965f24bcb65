#!/usr/bin/env bash
# Create (or reuse) the project virtualenv and install everything vmamba_zoo needs,
# following ../shared/ENVIRONMENT.md. Idempotent: a second run only checks.
#   VENV       where the venv lives (default: ~/.cache/vmamba_zoo/venv, outside the clone)
#   WHEELS     folder with a prebuilt mmcv wheel (default: ../shared/wheels when present)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$HOME/.cache/vmamba_zoo/venv}"
WHEELS="${WHEELS:-$here/../shared/wheels}"
PY="${PYTHON:-python3}"
stamp="$VENV/.vmamba_zoo_env_v1"
req_hash=$(cat "$here/setup.cfg" "$0" | sha256sum | cut -c1-16)

# the shared venv may hold an editable install of another clone (CI clones anew): point it at this one
ensure_editable() {
  local where
  where=$(cd / && "$VENV/bin/python" -c "import vmamba_zoo, os; print(os.path.dirname(os.path.dirname(os.path.realpath(vmamba_zoo.__file__))))" 2>/dev/null || true)
  if [ "$where" != "$(realpath "$here")" ]; then
    echo "[setup] installing vmamba_zoo from $here (editable)"
    "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$here"
  fi
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$req_hash" ]; then
  ensure_editable  # environment already complete
  exit 0
fi

echo "[setup] creating/updating virtualenv at $VENV"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/pip" "$@"; }
pip install -q --upgrade pip
echo "[setup] torch 2.14.1 / torchvision 0.29.1"
pip install -q torch==2.14.1 torchvision==0.29.1
echo "[setup] timm, fvcore, mmengine, build tools"
pip install -q timm fvcore mmengine==0.10.7 'setuptools<81' wheel ninja safetensors pyyaml tqdm \
  pytest pytest-xdist matplotlib scikit-learn

if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops" 2>/dev/null; then
  cache="$HOME/.cache/vmamba_zoo/wheels"
  if ls "$WHEELS"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    echo "[setup] mmcv 2.1.0 from prebuilt wheel in $WHEELS"
    pip install -q --no-deps "$WHEELS"/mmcv-2.1.0-*.whl
  elif ls "$cache"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    echo "[setup] mmcv 2.1.0 from our earlier build in $cache"
    pip install -q --no-deps "$cache"/mmcv-2.1.0-*.whl
  else
    # PyPI has only the sdist; torch >= 2.10 headers need C++20, mmcv's setup.py asks for C++17.
    echo "[setup] building mmcv 2.1.0 with ops from its sdist (about 17 minutes on 2 cores; cached by pip afterwards)"
    tmp=$(mktemp -d)
    pip download -q --no-deps --no-binary :all: -d "$tmp" mmcv==2.1.0
    tar -xzf "$tmp"/mmcv-2.1.0.tar.gz -C "$tmp"
    sed -i 's/-std=c++17/-std=c++20/g' "$tmp"/mmcv-2.1.0/setup.py
    mkdir -p "$cache"
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" pip wheel -q --no-build-isolation --no-deps \
      -w "$cache" "$tmp"/mmcv-2.1.0
    pip install -q --no-deps "$cache"/mmcv-2.1.0-*.whl
    rm -rf "$tmp"
  fi
  # mmcv's runtime deps (installed with --no-deps above)
  pip install -q addict packaging Pillow pyyaml yapf opencv-python
fi
echo "[setup] mmdet 3.3.0, mmsegmentation 1.2.2"
pip install -q mmdet==3.3.0 mmsegmentation==1.2.2 ftfy regex
ensure_editable
echo "$req_hash" > "$stamp"
echo "[setup] environment ready: $VENV"
