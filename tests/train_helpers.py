"""Helpers shared by the trainer's tests: tiny in-process runs (a convnet MoCo on the tiny
image folder), ``train.py`` in fresh processes as users run it, and reading what a run left."""

import csv
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch
import yaml

from infonce.trainer.data.datamodule import ImageDataModule
from infonce.trainer.moco import MoCo

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "train.py")
CPU_QUICK = str(REPO / "configs" / "cpu_quick.yaml")


def tiny_moco(**overrides) -> MoCo:
    """A MoCo small enough for the tiny folder: convnet, 4 BN splits, K = 64."""
    args = dict(backbone="convnet", bn_splits=4, queue_size=64, temperature=0.1, momentum=0.9)
    return MoCo(**(args | overrides))


def tiny_data(root, **overrides) -> ImageDataModule:
    """The tiny folder in batches of 8, without worker processes."""
    args = dict(dataset="folder", root=str(root), batch_size=8, eval_batch_size=16, num_workers=0)
    return ImageDataModule(**(args | overrides))


def trainer(**overrides) -> L.Trainer:
    """A quiet CPU trainer: no logger, checkpoints, bar, summary or validation unless asked."""
    args = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    return L.Trainer(**(args | overrides))


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
