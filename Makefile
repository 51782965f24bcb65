# One venv, kept outside the clone so CI and later runs reuse it (override: make VENV=/path test).
VENV ?= $(HOME)/.cache/vmamba_zoo/venv
PY := $(VENV)/bin/python
export VENV

.PHONY: setup demo test test-fast clean-venv

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(PY) tools/demo.py

test: setup
	@bash scripts/fetch_timm_tests.sh $(PY)
	$(PY) -m pytest -q -p no:cacheprovider -m "not gpu" tests

# everything but timm's own suite (quick local loop)
test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not gpu" tests --ignore=tests/test_timm_suite.py

clean-venv:
	rm -rf $(VENV)
