"""tools/train.py and vmamba_zoo.train: configs, one process, two processes through torchrun (gloo on the
CPU), and a resume after killing the process."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from vmamba_zoo.train import load_config, parse_set_items
from vmamba_zoo.train.engine import resolve_lr

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "classification"
TRAIN = REPO / "tools" / "train.py"


def make_folder_dataset(root: Path, classes=3, train_per_class=16, val_per_class=6, size=32, seed=0) -> Path:
    """ImageNet layout, one colour per class plus noise."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(classes, 3))
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(colours[c] + rng.normal(0, 30, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("folder_data"))


def _env(threads: int = 2) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _tiny_args(data_dir: Path, output: Path, epochs: int) -> list:
    return [str(CONFIGS / "vmamba_tiny.yaml"), "--data-dir", str(data_dir), "--output", str(output),
            "--model", "test_vmamba", "--img-size", "32", "--batch-size", "8", "--epochs", str(epochs),
            "--workers", "0", "--device", "cpu", "--no-progress",
            "--set", "warmup_epochs=1", "lr=1.0e-3", "validation_batch_size=32", "amp=null", "crop_pct=1.0"]


def _summary_rows(output: Path):
    with open(output / "summary.csv") as f:
        return list(csv.DictReader(f))


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------ config
def test_size_configs_inherit_the_paper_recipe():
    expected_dp = {"vmamba_tiny": 0.2, "vmamba_small": 0.3, "vmamba_base": 0.6}
    for name, dp in expected_dp.items():
        cfg = load_config(CONFIGS / f"{name}.yaml")
        assert cfg["model"] == name and cfg["drop_path_rate"] == dp
        assert (cfg["epochs"], cfg["opt"], cfg["lr_base"], cfg["lr_base_size"], cfg["weight_decay"]) == \
            (300, "adamw", 1e-3, 1024, 0.05)
        assert (cfg["sched"], cfg["warmup_epochs"], cfg["aa"]) == ("cosine", 20, "rand-m9-mstd0.5-inc1")
        assert (cfg["mixup"], cfg["cutmix"], cfg["smoothing"], cfg["reprob"]) == (0.8, 1.0, 0.1, 0.25)
        assert cfg["model_ema"] is True
    # lr scales linearly with the global batch: 8 GPUs x 128 = 1024 -> 1e-3
    assert resolve_lr(load_config(CONFIGS / "vmamba_tiny.yaml"), 1024) == pytest.approx(1e-3)
    assert resolve_lr(load_config(CONFIGS / "vmamba_tiny.yaml"), 256) == pytest.approx(2.5e-4)
    assert resolve_lr(load_config(CONFIGS / "vmamba_tiny.yaml", {"lr": 5e-4}), 256) == pytest.approx(5e-4)


def test_overrides_and_errors(tmp_path):
    cfg = load_config(CONFIGS / "vmamba_small.yaml",
                      parse_set_items(["lr=2e-3", "amp=fp16", "model_kwargs.ssm_ratio=1.0", "aa=null"]))
    assert cfg["lr"] == 2e-3 and cfg["amp"] == "fp16" and cfg["model_kwargs"] == {"ssm_ratio": 1.0}
    assert cfg["aa"] is None and cfg["drop_path_rate"] == 0.3
    with pytest.raises(KeyError, match="lr_bsae"):
        load_config(CONFIGS / "vmamba_tiny.yaml", {"lr_bsae": 1})
    with pytest.raises(FileNotFoundError, match="no_such.yaml"):
        load_config(tmp_path / "no_such.yaml")
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\nepochs: 3\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_cli_flags_override_yaml(capsys):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import importlib
        train_tool = importlib.import_module("train")
    finally:
        sys.path.pop(0)
    rc = train_tool.main([str(CONFIGS / "vmamba_base.yaml"), "--epochs", "7", "--amp", "none", "--print-config",
                          "--set", "drop_path_rate=0.5"])
    out = capsys.readouterr().out
    assert rc == 0
    assert '"epochs": 7' in out and '"amp": null' in out and '"drop_path_rate": 0.5' in out
    assert '"model": "vmamba_base"' in out


# ------------------------------------------------------------------------------------------ training
def test_train_one_process_amp_grad_checkpointing(data_dir, tmp_path):
    out = tmp_path / "run"
    args = _tiny_args(data_dir, out, epochs=2) + ["amp=bf16", "grad_checkpointing=true", "clip_grad=1.0"]
    proc = subprocess.run([sys.executable, str(TRAIN)] + args, capture_output=True, text=True, env=_env(),
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done: epochs 0..1" in proc.stdout
    rows = _summary_rows(out)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"train_loss", "eval_top1", "eval_top5", "eval_ema_top1", "lr"} <= set(rows[0])
    assert all(np.isfinite(float(r["train_loss"])) for r in rows)
    ckpt = _load(out / "last.pth.tar")  # weights_only=True must work: plain data only
    assert ckpt["epoch"] == 1 and ckpt["arch"] == "test_vmamba" and ckpt["num_classes"] == 3
    assert ckpt["class_names"] == ["class_0", "class_1", "class_2"]
    assert ckpt["config"]["amp"] == "bf16" and ckpt["config"]["grad_checkpointing"] is True
    assert ckpt["state_dict"]["head.fc.weight"].shape == (3, 128)
    assert set(ckpt["state_dict_ema"]) == set(ckpt["state_dict"])
    # EMA differs from the trained weights
    assert not torch.equal(ckpt["state_dict_ema"]["head.fc.weight"], ckpt["state_dict"]["head.fc.weight"])
    # 48 images / batch 8 = 6 steps per epoch, 2 epochs
    steps = {int(s["step"]) for s in ckpt["optimizer"]["state"].values()}
    assert steps == {12}
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["world_size"] == 1 and saved["num_classes"] == 3


def test_train_compiled(data_dir, tmp_path):
    """--torchcompile: the steps run compiled (dynamo captures the whole model, custom ops included, and autograd
    runs through them; aot_eager keeps CI from compiling C++), while EMA, checkpoints and summaries are the eager
    model's: no '_orig_mod.' in the saved keys."""
    out = tmp_path / "run"
    args = _tiny_args(data_dir, out, epochs=1) + ["model_ema=true"]
    proc = subprocess.run([sys.executable, str(TRAIN)] + args + ["--torchcompile", "aot_eager"], capture_output=True,
                          text=True, env=dict(_env(), TORCH_LOGS="recompiles"), cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done: epochs 0..0" in proc.stdout
    assert "Recompiling function forward" in proc.stderr  # train mode, then eval mode: both ran compiled
    ckpt = _load(out / "last.pth.tar")
    assert ckpt["config"]["torchcompile"] == "aot_eager"
    assert not [k for k in ckpt["state_dict"] if "_orig_mod" in k]
    assert set(ckpt["state_dict_ema"]) == set(ckpt["state_dict"])
    assert np.isfinite(float(_summary_rows(out)[0]["train_loss"]))


@pytest.mark.parametrize("backend, mode, message", [("inductor", "fastest", "torchcompile_mode must be one of"),
                                                    ("no_such_backend", None, "unknown torchcompile backend"),
                                                    (None, "reduce-overhead", "needs torchcompile")])
def test_compile_options_are_checked(backend, mode, message):
    from vmamba_zoo.train.engine import compile_model
    with pytest.raises(ValueError, match=message):
        compile_model(torch.nn.Linear(2, 2), backend, mode)


def test_train_two_processes_torchrun_gloo(data_dir, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(TRAIN)]
    proc = subprocess.run(cmd + _tiny_args(data_dir, out, epochs=1) + ["lr=null", "lr_base=1.0e-3",
                                                                         "lr_base_size=16"],
                          capture_output=True, text=True, env=_env(threads=1), cwd=REPO, timeout=300)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["world_size"] == 2
    assert saved["lr"] == pytest.approx(1e-3)  # lr_base x (2 processes x 8) / 16
    assert [int(r["epoch"]) for r in _summary_rows(out)] == [0]
    ckpt = _load(out / "last.pth.tar")
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])  # saved unwrapped
    # each process sees half of the 48 images: 24 / 8 = 3 steps
    assert {int(s["step"]) for s in ckpt["optimizer"]["state"].values()} == {3}
    assert proc.stdout.count("done: epochs 0..0") == 1  # rank 0 reports


def test_resume_after_kill(data_dir, tmp_path):
    out = tmp_path / "resume"
    epochs = 6
    args = [sys.executable, str(TRAIN)] + _tiny_args(data_dir, out, epochs=epochs)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=REPO,
                            start_new_session=True)
    last = out / "last.pth.tar"
    deadline = time.time() + 240
    try:
        while not last.exists():
            assert proc.poll() is None, f"training exited early: {proc.stdout.read()[-3000:]}"
            assert time.time() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _load(last)["epoch"]  # complete file (atomic replace), whichever epoch it holds
    assert killed_at < epochs - 1, "the run finished before it was killed; the test needs a longer run"

    resumed = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"continuing at epoch {killed_at + 1}" in resumed.stderr + resumed.stdout
    assert f"done: epochs {killed_at + 1}..{epochs - 1}" in resumed.stdout
    final = _load(last)
    assert final["epoch"] == epochs - 1
    # optimizer state carried over: Adam's step count is that of an uninterrupted run (6 steps per epoch)
    assert {int(s["step"]) for s in final["optimizer"]["state"].values()} == {6 * epochs}
    epochs_logged = [int(r["epoch"]) for r in _summary_rows(out)]
    assert sorted(set(epochs_logged)) == list(range(epochs))
    # the schedule continues: the last epoch's lr is the cosine's end, as in an uninterrupted run
    rows = {int(r["epoch"]): float(r["lr"]) for r in _summary_rows(out)}
    assert rows[epochs - 1] < rows[killed_at + 1] <= 1e-3

    # resuming a finished run does nothing more
    again = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert _load(last)["epoch"] == epochs - 1


def test_missing_data_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "no_such_dataset"
    proc = subprocess.run([sys.executable, str(TRAIN)] + _tiny_args(missing, tmp_path / "o", epochs=1),
                          capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert f"data folder not found: {missing}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_val_split_is_a_clear_error(tmp_path):
    root = make_folder_dataset(tmp_path / "d", classes=2, train_per_class=2, val_per_class=1)
    import shutil
    shutil.rmtree(root / "val")
    from vmamba_zoo.train import train
    cfg = load_config(CONFIGS / "vmamba_tiny.yaml", {"data_dir": str(root), "model": "test_vmamba",
                                                     "output": str(tmp_path / "o")})
    with pytest.raises(FileNotFoundError, match=f"validation folder not found: {root / 'val'}"):
        train(cfg)
