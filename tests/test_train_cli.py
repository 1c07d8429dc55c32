"""``train.py`` end to end, in fresh processes, as users run it: fit, validate, resume, kill."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "train.py")
CPU_QUICK = str(REPO / "configs" / "cpu_quick.yaml")

pytestmark = pytest.mark.slow


def run_train(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, TRAIN, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result


def tiny_args(root: Path, *extra: str) -> list[str]:
    """cpu_quick.yaml sized down to the 24-image tiny folder (3 batches of 8 an epoch)."""
    return [
        "--config",
        CPU_QUICK,
        "--data.dataset",
        "folder",
        "--data.root",
        str(root),
        "--data.batch_size",
        "8",
        "--data.eval_batch_size",
        "24",
        "--model.queue_size",
        "64",
        "--model.bn_splits",
        "4",
        "--trainer.log_every_n_steps",
        "1",
        *extra,
    ]


def config_with_checkpoints_every(steps: int, path: Path) -> str:
    """cpu_quick.yaml with the ``last`` checkpoint written every ``steps`` steps."""
    config = yaml.safe_load(open(CPU_QUICK))
    config["trainer"]["callbacks"][0]["init_args"]["every_n_train_steps"] = steps
    path.write_text(yaml.safe_dump(config))
    return str(path)


def losses_by_step(run_dir: Path) -> dict[int, float]:
    """train/loss per step over every log version of a run (a resume writes a new version)."""
    losses = {}
    for path in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        for row in csv.DictReader(open(path)):
            if row.get("train/loss"):
                losses[int(row["step"])] = float(row["train/loss"])
    return losses


def test_fit_runs_the_documented_smoke_command_then_validate_prints_knn(tiny_folder, tmp_path):
    run_train(
        [
            "fit",
            *tiny_args(
                tiny_folder,
                "--seed_everything",
                "7",
                "--trainer.deterministic",
                "true",
                "--trainer.max_steps",
                "16",
            ),
        ],
        cwd=tmp_path,
    )
    last = tmp_path / "runs/cpu_quick/checkpoints/last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 16
    assert int(ckpt["state_dict"]["queue.filled"]) == 64
    result = run_train(["validate", *tiny_args(tiny_folder, "--ckpt_path", str(last))], tmp_path)
    assert "val/knn_top1" in result.stdout


def test_resume_mid_epoch_continues_exactly(tiny_folder, tmp_path):
    """2N steps in one run == N steps, a new process resuming from ``last``, N more steps."""
    config = config_with_checkpoints_every(4, tmp_path / "every4.yaml")
    common = [
        "--config",
        config,
        *tiny_args(tiny_folder)[2:],
        "--data.num_workers",
        "2",
        "--trainer.deterministic",
        "true",
        "--trainer.max_epochs",
        "4",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir(), resumed.mkdir()
    run_train(["fit", *common, "--trainer.max_steps", "8"], cwd=straight)
    run_train(["fit", *common, "--trainer.max_steps", "4"], cwd=resumed)  # stops mid-epoch 1
    run_train(["fit", *common, "--trainer.max_steps", "8", "--ckpt_path", "last"], cwd=resumed)

    expected = losses_by_step(straight / "runs/cpu_quick")
    got = losses_by_step(resumed / "runs/cpu_quick")
    assert sorted(expected) == list(range(8))
    assert got == expected  # bit-identical per-step losses

    a = torch.load(straight / "runs/cpu_quick/checkpoints/last.ckpt", weights_only=True)
    b = torch.load(resumed / "runs/cpu_quick/checkpoints/last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    for key, tensor in a["state_dict"].items():  # queue, pointer, both encoders
        assert torch.equal(tensor, b["state_dict"][key]), key
    momentum_a = a["optimizer_states"][0]["state"]
    momentum_b = b["optimizer_states"][0]["state"]
    assert all(
        torch.equal(momentum_a[i]["momentum_buffer"], momentum_b[i]["momentum_buffer"])
        for i in momentum_a
    )


def test_run_killed_mid_epoch_resumes_from_last_and_finishes(tiny_folder, tmp_path):
    config = config_with_checkpoints_every(2, tmp_path / "every2.yaml")
    args = [
        "fit",
        "--config",
        config,
        *tiny_args(tiny_folder)[2:],
        "--data.num_workers",
        "0",
        "--trainer.max_epochs",
        "-1",
        "--trainer.max_steps",
        "40",
    ]
    last = tmp_path / "runs/cpu_quick/checkpoints/last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, TRAIN, *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)  # a few more steps, maybe inside the next save
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert 0 < killed_at < 40
    # the kill may have landed inside a save: last.ckpt is still whole (it loaded above)
    run_train([*args, "--ckpt_path", "last"], cwd=tmp_path)
    assert torch.load(last, weights_only=True)["global_step"] == 40


def test_typo_in_a_config_key_is_an_error(tiny_folder, tmp_path):
    result = run_train(
        ["fit", *tiny_args(tiny_folder), "--model.temprature", "0.1"], tmp_path, check=False
    )
    assert result.returncode != 0
    assert "temprature" in result.stderr
    bad = yaml.safe_load(open(CPU_QUICK))
    bad["data"]["batchsize"] = 8
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(bad))
    result = run_train(["fit", "--config", str(tmp_path / "typo.yaml")], tmp_path, check=False)
    assert result.returncode != 0 and "batchsize" in result.stderr


def test_missing_data_is_one_clear_message_without_traceback(tmp_path):
    result = run_train(
        ["fit", "--config", CPU_QUICK, "--data.root", str(tmp_path / "nowhere")],
        tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"{tmp_path / 'nowhere'}/cifar-10-batches-py/data_batch_1" in result.stderr
    assert "--data.root" in result.stderr and "download" in result.stderr


def test_print_config_emits_the_full_schema(tmp_path):
    result = run_train(["fit", "--config", CPU_QUICK, "--print_config"], tmp_path)
    config = yaml.safe_load(result.stdout)
    assert config["model"]["class_path"] == "infonce.moco.MoCo"
    assert config["model"]["init_args"]["temperature"] == 0.1
    assert config["data"]["batch_size"] == 256


def test_linear_probe_trains_on_a_moco_checkpoint_and_reports_test_top1(tiny_folder, tmp_path):
    run_train(["fit", *tiny_args(tiny_folder, "--trainer.max_steps", "3")], cwd=tmp_path)
    pretrained = tmp_path / "runs/cpu_quick/checkpoints/last.ckpt"
    probe = [
        "--config",
        str(REPO / "configs/linear_probe.yaml"),
        "--model.pretrained",
        str(pretrained),
        "--model.num_classes",
        "3",
        "--data.dataset",
        "folder",
        "--data.root",
        str(tiny_folder),
        "--data.batch_size",
        "8",
        "--data.num_workers",
        "0",
        "--trainer.max_epochs",
        "2",
        "--trainer.accelerator",
        "cpu",
    ]
    run_train(["fit", *probe], cwd=tmp_path)
    result = run_train(["test", *probe, "--ckpt_path", "last"], cwd=tmp_path)
    assert "test/top1" in result.stdout
    wrong = run_train(
        ["fit", *probe[:4], "--model.num_classes", "10", *probe[6:]], tmp_path, check=False
    )
    assert (
        wrong.returncode != 0 and "num_classes is 10 but the dataset has 3 classes" in wrong.stderr
    )
