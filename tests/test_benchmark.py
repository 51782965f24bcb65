"""tools/benchmark.py's library parts that run without a GPU: the table arithmetic, the anchor-setting train
step, and the clear refusals (timings themselves are GPU work: benchmarks/, never asserted here)."""
import pytest
import timm
import torch

from vmamba_zoo.analysis import benchmark as bench
from vmamba_zoo.analysis.throughput import measure_throughput

from _tooling import load_tool


def _row(size, model, variant, infer, train, gib, memory_kind=None):
    return {"size": size, "model": model, "variant": variant, "infer": infer, "train": train, "train_gib": gib,
            "compile_s": None, "device": "cuda", "memory_kind": memory_kind}


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_model_table_ratios_to_swin_and_original():
    rows = [_row("tiny", "vmamba_tiny", "eager", 4000.0, 1100.0, 9.0),
            _row("tiny", "vmamba_tiny", "cuda graph", 5000.0, None, None),
            _row("tiny", "vmamba_tiny", "compile, CUDA graphs", 10000.0, 3300.0, 8.0, "pools reserved"),
            _row("tiny", "swin_tiny_patch4_window7_224", "eager", 5000.0, 2200.0, 8.8),
            _row("tiny", "swin_tiny_patch4_window7_224", "compile, CUDA graphs", 8000.0, 3000.0, 8.5)]
    table = bench.model_table(rows).splitlines()
    ours = _cells(next(line for line in table if "vmamba_tiny | eager" in line))
    assert ours[5:] == ["0.80", "0.50", "-", "-", f"{4000 / 3098:.2f}", f"{1100 / 1172:.2f}"]
    graph = _cells(next(line for line in table if "| cuda graph" in line))
    assert graph[3] == "-" and graph[6] == "-"  # no training column for graphs, nor a ratio of it
    compiled = _cells(next(line for line in table if "vmamba_tiny | compile, CUDA graphs" in line))
    assert compiled[5:9] == ["2.00", "1.50", "1.25", "1.10"]  # to eager Swin, then to Swin's same variant
    swin = _cells(next(line for line in table if line.startswith("| swin") and "eager" in line))
    assert swin[-2:] == ["-", "-"]  # the original's ratio only for our models
    assert len(table[1].split("|")) - 2 == len(ours)  # header separator matches the rows
    assert "not measured in this process" in table[-1]
    assert table[-2] == "train GiB: pools reserved"  # how the memory column was measured


def test_unknown_suite_size_is_named():
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        bench.model_benchmarks(["huge"])


def test_scaler_train_step_takes_no_optimizer_step():
    model = timm.create_model("test_vmamba")
    before = [p.detach().clone() for p in model.parameters()]
    out = measure_throughput(model, batch_size=2, img_size=32, train=True, warmup=0, iters=1, train_step="scaler")
    assert out["mode"] == "train" and out["img_per_s"] > 0
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    measure_throughput(model, batch_size=2, img_size=32, train=True, warmup=0, iters=1, train_step="sgd")
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


@pytest.mark.parametrize("kwargs, message", [(dict(cuda_graph=True), "cuda_graph is for inference on a CUDA"),
                                             (dict(train_step="adam"), "train_step must be"),
                                             (dict(compile_mode="reduce-overhead"), "needs a CUDA device, got cpu"),
                                             (dict(compile_mode="default", compile_options={"a": 1}), "not both")])
def test_bad_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure_throughput(timm.create_model("test_vmamba"), 1, 32, device="cpu", iters=1, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_tool_needs_cuda(capsys):
    assert load_tool("benchmark")([]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def test_profile_categories_classify_kernel_names():
    import re
    name_of = {k: next((c for c, p in bench._CATEGORIES if re.search(p, k)), "other") for k in
               ["_ss2d_fwd_kernel", "void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float>",
                "sm90_xmma_gemm_f16f16_f16f32", "void at::native::elementwise_kernel<128, 2>(copy)"]}
    assert list(name_of.values()) == ["selective scan / ss2d (ours)", "layer norm", "matmul (gemm)",
                                      "layout / copy / cast"]


def test_compile_options_reach_torch_compile(monkeypatch):
    """measure_throughput hands its inductor options to torch.compile (the "compile, no layout opt" variant)."""
    seen = []

    def fake_compile(model, **kwargs):
        seen.append(kwargs)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    measure_throughput(timm.create_model("test_vmamba"), batch_size=1, img_size=32, device="cpu", warmup=0, iters=1,
                       compile=True, compile_options={"layout_optimization": False})
    assert seen == [{"options": {"layout_optimization": False}}]
    measure_throughput(timm.create_model("test_vmamba"), batch_size=1, img_size=32, device="cpu", warmup=0, iters=1,
                       compile_mode="max-autotune-no-cudagraphs")
    assert seen[1:] == [{"mode": "max-autotune-no-cudagraphs"}]  # a mode compiles without being told to


def test_compile_variants_of_the_suite(monkeypatch):
    """--compile-cuda-graphs adds "compile, CUDA graphs" (mode reduce-overhead) to ours; --compile-baselines gives
    Swin and ConvNeXt the compile variants as well, never the eager-only ones."""
    calls = []

    def fake_measure(model, train=False, **kwargs):
        calls.append((type(model).__name__, train, kwargs.get("compile", False), kwargs.get("compile_mode"),
                      kwargs.get("cuda_graph", False)))
        return {"img_per_s": 1.0, "peak_memory": 2 ** 30, "compile_seconds": None, "device": "cuda", "memory_kind": "m"}

    monkeypatch.setattr(bench, "measure_throughput", fake_measure)
    monkeypatch.setattr(timm, "create_model", lambda name, **kw: type(name.split("_")[0], (torch.nn.Module,), {})())
    rows = bench.model_benchmarks(["tiny"], compile=True, compile_cuda_graphs=True, cuda_graph=True, log=lambda m: None)
    assert [(r["model"].split("_")[0], r["variant"]) for r in rows] == [
        ("vmamba", "eager"), ("vmamba", "compile"), ("vmamba", "compile, CUDA graphs"), ("vmamba", "cuda graph"),
        ("swin", "eager"), ("convnext", "eager")]
    assert ("vmamba", True, False, "reduce-overhead", False) in calls
    rows = bench.model_benchmarks(["tiny"], compile=True, compile_cuda_graphs=True, compile_baselines=True,
                                  log=lambda m: None)
    assert [r["variant"] for r in rows if r["model"].startswith("swin")] == ["eager", "compile", "compile, CUDA graphs"]


def test_environment_sets_and_restores(monkeypatch):
    """Benchmarks compare kernel variants by their environment knobs: set inside, restored (or removed) after,
    also when the block raises."""
    import os
    monkeypatch.setenv("VMAMBA_ZOO_TEST_KEPT", "before")
    monkeypatch.delenv("VMAMBA_ZOO_TEST_NEW", raising=False)
    with pytest.raises(RuntimeError):
        with bench.environment({"VMAMBA_ZOO_TEST_KEPT": "inside", "VMAMBA_ZOO_TEST_NEW": "1"}):
            assert os.environ["VMAMBA_ZOO_TEST_KEPT"] == "inside" and os.environ["VMAMBA_ZOO_TEST_NEW"] == "1"
            raise RuntimeError("boom")
    assert os.environ["VMAMBA_ZOO_TEST_KEPT"] == "before"
    assert "VMAMBA_ZOO_TEST_NEW" not in os.environ
