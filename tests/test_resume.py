"""Any stop of ``train.py`` resumes exactly: N steps + a new process with ``--ckpt_path`` equals
one straight run, bitwise, whatever wrote the checkpoint (max_steps, validation, a signal)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_helpers import (
    TRAIN,
    assert_same_training_state,
    config_with,
    load,
    losses_by_step,
    run_train,
    tiny_args,
)

pytestmark = pytest.mark.slow

STEPS = 24  # 8 epochs of 3 batches, about a second
# validation after the 2nd batch of every epoch: the "best" checkpoint is written mid-epoch
MID_EPOCH_VALIDATION = (
    "--trainer.val_check_interval",
    "2",
    "--trainer.check_val_every_n_epoch",
    "1",
)


def common(folder, config, *extra):
    return [
        *tiny_args(folder, config=config),
        "--trainer.deterministic",
        "true",
        "--trainer.max_epochs",
        "8",
        *extra,
    ]


@pytest.fixture(scope="module")
def straight(tiny_folder, tmp_path_factory):
    """One uninterrupted run of 24 steps that keeps a checkpoint of every step."""
    cwd = tmp_path_factory.mktemp("straight")
    config = config_with(cwd / "keep.yaml", keep_every_step=True)
    args = common(tiny_folder, config, *MID_EPOCH_VALIDATION, "--trainer.max_steps", str(STEPS))
    run_train(["fit", *args], cwd=cwd)
    return cwd


def state_at(straight, step: int) -> dict:
    return load(straight / "every_step" / f"step={step}.ckpt")


@pytest.mark.parametrize("first", [4, 3], ids=["mid-epoch", "epoch-boundary"])
def test_extending_a_run_stopped_by_max_steps_continues_exactly(
    tiny_folder, tmp_path, straight, first
):
    """N steps (the end of a run: last.ckpt written although 50 does not divide N), then the
    same command with --ckpt_path last and a larger max_steps == a straight run."""
    config = config_with(tmp_path / "plain.yaml")
    args = common(tiny_folder, config, *MID_EPOCH_VALIDATION)
    run_train(["fit", *args, "--trainer.max_steps", str(first)], cwd=tmp_path)
    last = tmp_path / "runs/cpu_quick/checkpoints/last.ckpt"
    assert_same_training_state(load(last), state_at(straight, first))
    run_train(
        ["fit", *args, "--trainer.max_steps", str(2 * first), "--ckpt_path", "last"], tmp_path
    )
    assert_same_training_state(load(last), state_at(straight, 2 * first))
    expected = losses_by_step(straight / "runs/cpu_quick")
    got = losses_by_step(tmp_path / "runs/cpu_quick")
    assert got == {s: v for s, v in expected.items() if s < 2 * first}


def test_resuming_from_the_best_checkpoint_written_during_validation_is_exact(
    tiny_folder, tmp_path, straight
):
    (best,) = (straight / "runs/cpu_quick/checkpoints").glob("best-*.ckpt")
    ckpt = load(best)
    assert 0 < ckpt["global_step"] < STEPS and ckpt["global_step"] % 3 != 0  # mid-epoch
    assert ckpt["ImageDataModule"]["batches_done"] == 2  # the data position is recorded
    config = config_with(tmp_path / "plain.yaml")
    args = common(tiny_folder, config, *MID_EPOCH_VALIDATION, "--trainer.max_steps", str(STEPS))
    run_train(["fit", *args, "--ckpt_path", str(best)], cwd=tmp_path)
    last = tmp_path / "runs/cpu_quick/checkpoints/last.ckpt"
    assert_same_training_state(load(last), state_at(straight, STEPS))


def test_a_checkpoint_written_by_end_of_epoch_validation_resumes_exactly(tiny_folder, tmp_path):
    config = config_with(tmp_path / "plain.yaml")
    args = common(tiny_folder, config, "--trainer.check_val_every_n_epoch", "1")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir(), resumed.mkdir()
    run_train(["fit", *args, "--trainer.max_steps", "6"], cwd=straight)
    (best,) = (straight / "runs/cpu_quick/checkpoints").glob("best-*.ckpt")
    assert load(best)["global_step"] == 3  # written by the validation after epoch 0
    run_train(["fit", *args, "--trainer.max_steps", "6", "--ckpt_path", str(best)], resumed)
    assert_same_training_state(
        load(resumed / "runs/cpu_quick/checkpoints/last.ckpt"),
        load(straight / "runs/cpu_quick/checkpoints/last.ckpt"),
    )
    expected = losses_by_step(straight / "runs/cpu_quick")
    assert losses_by_step(resumed / "runs/cpu_quick") == {s: expected[s] for s in (3, 4, 5)}


def start_train(args: list[str], cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, TRAIN, *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(path, proc, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be stopped"


def interrupt_a_run(tiny_folder, tmp_path, signum) -> tuple[list[str], Path, int, str]:
    """Start a 24-step run saving every 2 steps, send ``signum`` once the first checkpoint
    exists; return its arguments, last.ckpt, exit status and stderr."""
    config = config_with(tmp_path / "every2.yaml", every_n_train_steps=2)
    args = ["fit", *common(tiny_folder, config, "--trainer.max_steps", str(STEPS))]
    last = tmp_path / "runs/cpu_quick/checkpoints/last.ckpt"
    proc = start_train(args, tmp_path)
    try:
        wait_for(last, proc)
        send = os.killpg if signum == signal.SIGKILL else os.kill  # SIGKILL: the whole group
        send(proc.pid, signum)  # SIGKILL maybe inside the next save
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return args, last, proc.returncode, stderr


def test_sigkill_mid_run_then_resume_from_last_equals_the_straight_run(
    tiny_folder, tmp_path, straight
):
    args, last, _, _ = interrupt_a_run(tiny_folder, tmp_path, signal.SIGKILL)
    killed_at = load(last)["global_step"]  # last.ckpt is whole: it loads
    assert 0 < killed_at < STEPS
    run_train([*args, "--ckpt_path", "last"], cwd=tmp_path)
    assert_same_training_state(load(last), state_at(straight, STEPS))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_saves_the_step_reached_exits_nonzero_and_resumes_exactly(
    tiny_folder, tmp_path, straight, signum
):
    args, last, returncode, stderr = interrupt_a_run(tiny_folder, tmp_path, signum)
    assert returncode == 128 + signum, stderr[-2000:]
    stopped_at = load(last)["global_step"]
    assert f"stopped by {signal.Signals(signum).name} after step {stopped_at}" in stderr
    logged = max(losses_by_step(tmp_path / "runs/cpu_quick"))  # steps are logged from 0
    assert stopped_at == logged + 1 < STEPS  # the checkpoint holds the step reached
    run_train([*args, "--ckpt_path", "last"], cwd=tmp_path)
    assert_same_training_state(load(last), state_at(straight, STEPS))


def test_run_ended_by_max_epochs_saves_its_final_step(tiny_folder, tmp_path):
    config = config_with(tmp_path / "every4.yaml", every_n_train_steps=4)
    args = [*tiny_args(tiny_folder, config=config), "--trainer.max_epochs", "2"]
    run_train(["fit", *args], cwd=tmp_path)
    ckpt = load(tmp_path / "runs/cpu_quick/checkpoints/last.ckpt")
    assert ckpt["global_step"] == 6  # not 4, the last multiple of the interval
    assert torch.isfinite(ckpt["state_dict"]["queue.queue"]).all()


def test_a_learned_temperature_resumes_exactly_with_its_optimizer_state(tiny_folder, tmp_path):
    config = config_with(tmp_path / "plain.yaml")
    args = common(tiny_folder, config, "--model.learnable_temperature", "true",
                  "--trainer.check_val_every_n_epoch", "1")  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir(), resumed.mkdir()
    run_train(["fit", *args, "--trainer.max_steps", "8"], cwd=straight)
    run_train(["fit", *args, "--trainer.max_steps", "4"], cwd=resumed)
    run_train(["fit", *args, "--trainer.max_steps", "8", "--ckpt_path", "last"], cwd=resumed)
    a, b = (load(d / "runs/cpu_quick/checkpoints/last.ckpt") for d in (straight, resumed))
    assert_same_training_state(a, b)
    assert a["state_dict"]["temperature.log_scale"] != torch.log(torch.tensor(1 / 0.1))  # moved
    groups = [g["name"] for g in a["optimizer_states"][0]["param_groups"]]
    assert groups == ["encoder", "temperature", "probe"]  # T and the probe: no weight decay


@pytest.mark.parametrize("method", ["simclr", "moco_v3", "supcon"])
def test_every_method_stopped_mid_epoch_then_resumed_equals_its_straight_run(
    method, tiny_folder, tmp_path
):
    """Each method's CPU config through train.py: 4 steps (mid-epoch, ended by max_steps),
    then the same command with a larger max_steps and --ckpt_path last == 8 straight steps."""
    args = tiny_args(tiny_folder, "--trainer.deterministic", "true",
                     "--trainer.max_epochs", "4", method=method)  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir(), resumed.mkdir()
    run_train(["fit", *args, "--trainer.max_steps", "8"], cwd=straight)
    run_train(["fit", *args, "--trainer.max_steps", "4"], cwd=resumed)
    run_train(["fit", *args, "--trainer.max_steps", "8", "--ckpt_path", "last"], cwd=resumed)
    folder = f"runs/{method}_cpu_quick"
    a, b = (load(d / folder / "checkpoints/last.ckpt") for d in (straight, resumed))
    assert a["global_step"] == 8
    assert_same_training_state(a, b)
    assert losses_by_step(resumed / folder) == losses_by_step(straight / folder)
