"""Helpers shared by the trainer's tests: tiny in-process runs (a convnet MoCo on the tiny
image folder), ``train.py`` in fresh processes as users run it, and reading what a run left."""

import csv
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch
import yaml

from infonce.trainer.base import ContrastiveMethod
from infonce.trainer.data.datamodule import ImageDataModule
from infonce.trainer.moco import MoCo
from infonce.trainer.moco_v3 import MoCoV3
from infonce.trainer.simclr import SimCLR
from infonce.trainer.supcon import SupCon

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "train.py")
CPU_QUICK = str(REPO / "configs" / "cpu_quick.yaml")


def tiny_moco(**overrides) -> MoCo:
    """A MoCo small enough for the tiny folder: convnet, 4 BN splits, K = 64; the MLP head, an
    empty queue, a per-step cosine and kNN on backbone features, as cpu_quick.yaml."""
    args = dict(
        backbone="convnet",
        bn_splits=4,
        queue_size=64,
        temperature=0.1,
        momentum=0.9,
        head="mlp",
        queue_init="empty",
        lr_schedule="cosine",
        knn_feature="backbone",
    )
    return MoCo(**(args | overrides))


METHODS = ("moco", "simclr", "moco_v3", "supcon", "supcon_queue")
_TINY_HEADS = dict(backbone="convnet", bn_splits=4, hidden_dim=32, feature_dim=16)


def tiny_method(name: str, **overrides) -> ContrastiveMethod:
    """Every method of :data:`METHODS` sized for the tiny folder: the convnet, 4 BN splits,
    heads of width 32 to 16 (MoCo: :func:`tiny_moco`); otherwise each method's defaults.
    ``supcon_queue``: SupCon with a queue of 20 labelled keys (it wraps in the third step)."""
    if name == "moco":
        return tiny_moco(**overrides)
    if name == "supcon_queue":
        return SupCon(**(_TINY_HEADS | {"queue_size": 20} | overrides))
    cls = {"simclr": SimCLR, "moco_v3": MoCoV3, "supcon": SupCon}[name]
    return cls(**(_TINY_HEADS | overrides))


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


def tiny_args(
    root: Path, *extra: str, config: str | None = None, method: str = "moco"
) -> list[str]:
    """``method``'s CPU config (cpu_quick.yaml for MoCo, configs/<method>_cpu_quick.yaml
    otherwise, or ``config``) sized down to the 24-image tiny folder (3 batches of 8 an
    epoch): K = 64 for MoCo, heads of width 32 to 16 for the others, 4 BN splits."""
    if config is None:
        config = (
            CPU_QUICK if method == "moco" else str(REPO / "configs" / f"{method}_cpu_quick.yaml")
        )
    sized = ["--model.queue_size", "64"] if method == "moco" else [
        "--model.hidden_dim", "32", "--model.feature_dim", "16"
    ]  # fmt: skip
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
        *sized,
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
