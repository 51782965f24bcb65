"""pytest plugin for running timm's own tests/test_models.py against vmamba_zoo's models.

Loaded by tests/test_timm_suite.py as ``-p timm_suite_plugin`` with this folder on PYTHONPATH. A plugin
named with ``-p`` is imported before collection, so importing vmamba_zoo here registers our models
with timm before test_models.py calls ``list_models()`` at import time to build its parameters.
(This file is not a test module: its name does not start with ``test_``.)

timm's forward_intermediates / features-getter / prune_intermediate_layers tests only parametrize
over models of a hard-coded list of timm's own modules (``FEAT_INTER_FILTERS``). VMamba implements
that API too, so unless ``VMAMBA_TIMM_SUITE_FEAT_INTER=0`` the ``list_models`` that test_models.py
imports also returns our models whenever it is asked for models of that module list. Only this
pytest process is affected.
"""
import os

import timm

import vmamba_zoo  # noqa: F401  (registers vmamba_* and test_vmamba with timm)

OUR_MODULE = "vmamba"  # timm's registry files our models under their defining module's name
_FEAT_INTER_MARKER = "swin_transformer"  # a module that is in timm's FEAT_INTER_FILTERS list

_timm_list_models = timm.list_models


def _list_models_with_vmamba(filter="", module="", *args, **kwargs):
    modules = [module] if isinstance(module, str) else list(module)
    if _FEAT_INTER_MARKER in modules and OUR_MODULE not in modules:
        module = modules + [OUR_MODULE]
    return _timm_list_models(filter, module, *args, **kwargs)


if os.environ.get("VMAMBA_TIMM_SUITE_FEAT_INTER", "1") != "0":
    timm.list_models = _list_models_with_vmamba  # test_models.py does `from timm import list_models`


def pytest_configure(config):
    # timm's tests carry @pytest.mark.timeout (pytest-timeout, not installed here): declare the mark
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit (pytest-timeout)")
