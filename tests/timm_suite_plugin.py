"""pytest plugin for running timm's own tests/test_models.py against vmamba_zoo's models.

Loaded with ``-p timm_suite_plugin`` (this folder on PYTHONPATH) by tests/test_timm_suite.py. A plugin
module named with ``-p`` is imported before collection, so importing vmamba_zoo here registers our
models with timm before test_models.py calls ``list_models()`` at import time to build its parameters.
Not a test module itself (its name does not start with ``test_``).
"""
import vmamba_zoo  # noqa: F401  (registers vmamba_* / test_vmamba with timm)
