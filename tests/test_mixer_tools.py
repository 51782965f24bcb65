"""tools/flops.py and tools/throughput.py on every token-mixer variant (every registered vmamba_tiny* model), on
the CPU at 64x64 / 32x32: the numbers a user compares mixers by come out of the tools for each of them."""
import timm
import torch

import vmamba_zoo  # noqa: F401
from _tooling import load_tool as _tool
from vmamba_zoo.analysis.flops import count_params

VARIANTS = timm.list_models("vmamba_tiny*")  # vmamba_tiny (ss2d) and vmamba_tiny_<mixer>


def _rows(out: str, first_column: str):
    """{model: [cells]} of a tool's table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_column))
    return {cells[0]: cells[1:] for cells in (line.split() for line in lines[start + 2:])
            if cells and cells[0] in VARIANTS}


def test_every_mixer_has_a_variant():
    assert {"vmamba_tiny", "vmamba_tiny_attn", "vmamba_tiny_mamba", "vmamba_tiny_lstm",
            "vmamba_tiny_xlstm"} <= set(VARIANTS)


def test_flops_tool_on_every_mixer_variant(capsys):
    tables = {}
    for method in ("fvcore", "torch"):
        assert _tool("flops")(["--models", *VARIANTS, "--img-size", "64", "--method", method]) == 0
        tables[method] = _rows(capsys.readouterr().out, "model")
    assert set(tables["fvcore"]) == set(VARIANTS)
    assert tables["fvcore"] == tables["torch"]  # both counters, every mixer
    for name, (params, gmacs) in tables["fvcore"].items():
        with torch.device("meta"):
            assert params == f"{count_params(timm.create_model(name)) / 1e6:.2f}"
        assert 0.3 < float(gmacs) < 0.5, (name, gmacs)  # ~ 4.8-5.7 GMACs at 224, / (224/64)^2


def test_throughput_tool_on_every_mixer_variant(capsys):
    rc = _tool("throughput")(["--models", *VARIANTS, "--img-size", "32", "--batch-size", "1", "--warmup", "0",
                              "--iters", "1", "--device", "cpu"])
    assert rc == 0
    rows = _rows(capsys.readouterr().out, "model")
    assert set(rows) == set(VARIANTS)
    for name, cells in rows.items():  # size, then img/s, ratio, peak MiB per mode (infer, train)
        assert cells[0] == "32" and float(cells[1]) > 0 and float(cells[4]) > 0, (name, cells)
