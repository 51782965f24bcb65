#!/usr/bin/env bash
# Fetch timm's own test suite (tests/ of timm's PyPI sdist) for the timm version INSTALLED in a python,
# so tests/test_timm_suite.py can run timm's tests/test_models.py against vmamba_zoo's models.
#
#   scripts/fetch_timm_tests.sh [PYTHON]
#     PYTHON            interpreter whose timm version to match ($1, else env PYTHON, else python3)
#     TIMM_TESTS_CACHE  cache root (default ~/.cache/vmamba_zoo/timm-tests, outside the repo)
#
# Unpacks into $TIMM_TESTS_CACHE/<version>/ (tests/, pyproject.toml with timm's pytest config, LICENSE);
# timm's own source from the sdist is removed so only the installed timm can be imported.
# Does nothing when that folder is already complete. Prints the folder as the last line of stdout;
# progress and errors go to stderr. Needs network access to PyPI on the first run only.
set -euo pipefail
PY="${1:-${PYTHON:-python3}}"
version="$("$PY" -c 'from importlib.metadata import version; print(version("timm"))')" || {
  echo "fetch_timm_tests: timm is not installed for $PY" >&2; exit 2; }
root="${TIMM_TESTS_CACHE:-$HOME/.cache/vmamba_zoo/timm-tests}"
dest="$root/$version"
if [ -f "$dest/tests/test_models.py" ] && [ -f "$dest/pyproject.toml" ]; then
  echo "$dest"; exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch_timm_tests: downloading the timm==$version sdist from PyPI" >&2
# pip builds the sdist's metadata (fetching timm's build backend into an isolated env) before saving it
"$PY" -m pip download -q --no-deps --no-binary :all: -d "$tmp" "timm==$version" >&2 || {
  echo "fetch_timm_tests: could not download the timm==$version sdist from PyPI (no network, or a" \
       "version that is not published there)" >&2; exit 1; }
archive="$(ls "$tmp"/timm-"$version".tar.gz 2>/dev/null || true)"
[ -n "$archive" ] || { echo "fetch_timm_tests: no timm-$version.tar.gz in the download" >&2; exit 1; }
tar -xzf "$archive" -C "$tmp"
src="$tmp/timm-$version"
[ -f "$src/tests/test_models.py" ] || { echo "fetch_timm_tests: the sdist has no tests/test_models.py" >&2; exit 1; }
rm -rf "$src/timm"  # keep the installed timm the only one importable from the tests' rootdir

mkdir -p "$root"
rm -rf "$dest"
mv "$src" "$dest.partial.$$"
mv -T "$dest.partial.$$" "$dest"  # complete or absent, never half-written
echo "fetch_timm_tests: timm $version tests in $dest" >&2
echo "$dest"
