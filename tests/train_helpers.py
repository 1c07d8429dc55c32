"""Running ``train.py`` in fresh processes, as users do, and reading what a run left behind."""

import csv
import subprocess
import sys
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "train.py")
CPU_QUICK = str(REPO / "configs" / "cpu_quick.yaml")


def run_train(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, TRAIN, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result


def tiny_args(root: Path, *extra: str, config: str = CPU_QUICK) -> list[str]:
    """cpu_quick.yaml sized down to the 24-image tiny folder (3 batches of 8 an epoch)."""
    return [
        "--config",
        config,
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


def config_with(path: Path, every_n_train_steps: int | None = None, keep_every_step=False) -> str:
    """cpu_quick.yaml with ``last`` written every ``every_n_train_steps`` steps, and with
    ``keep_every_step`` a third checkpoint callback that keeps ``step=N.ckpt`` for every step."""
    config = yaml.safe_load(open(CPU_QUICK))
    callbacks = config["trainer"]["callbacks"]
    if every_n_train_steps is not None:
        callbacks[0]["init_args"]["every_n_train_steps"] = every_n_train_steps
    if keep_every_step:
        callbacks.append(
            {
                "class_path": "infonce.trainer.checkpoint.RunCheckpoint",
                "init_args": {
                    "dirpath": str(path.parent / "every_step"),
                    "filename": "{step}",
                    "save_top_k": -1,
                    "every_n_train_steps": 1,
                },
            }
        )
    path.write_text(yaml.safe_dump(config))
    return str(path)


def losses_by_step(run_dir: Path) -> dict[int, float]:
    """train/loss per step over every log version of a run (each command writes a version);
    a later version supersedes an earlier one from its first step on."""
    losses = {}
    for path in sorted(run_dir.glob("logs/version_*/metrics.csv"), key=_version):
        rows = [r for r in csv.DictReader(open(path)) if r.get("train/loss")]
        if rows:
            first = int(rows[0]["step"])
            losses = {s: v for s, v in losses.items() if s < first}
            losses.update({int(r["step"]): float(r["train/loss"]) for r in rows})
    return losses


def knn_top1_values(run_dir: Path) -> list[float]:
    """Every val/knn_top1 of a run, in log-version then step order."""
    values = []
    for path in sorted(run_dir.glob("logs/version_*/metrics.csv"), key=_version):
        rows = csv.DictReader(open(path))
        values += [float(r["val/knn_top1"]) for r in rows if r.get("val/knn_top1")]
    return values


def _version(path: Path) -> int:
    return int(path.parent.name.split("_")[1])


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def assert_same_training_state(a: dict, b: dict) -> None:
    """Bitwise: step, every tensor of the state dict, SGD's momentum buffers, data position."""
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, tensor in a["state_dict"].items():  # queue, pointer, both encoders
        assert torch.equal(tensor, b["state_dict"][key]), key
    momentum_a = a["optimizer_states"][0]["state"]
    momentum_b = b["optimizer_states"][0]["state"]
    assert momentum_a.keys() == momentum_b.keys()
    for i in momentum_a:
        assert torch.equal(momentum_a[i]["momentum_buffer"], momentum_b[i]["momentum_buffer"])
    assert a["ImageDataModule"] == b["ImageDataModule"]
