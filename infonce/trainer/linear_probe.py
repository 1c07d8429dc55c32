"""Linear evaluation: a frozen pretrained backbone and a trained linear classifier on top."""

import math
import os
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from infonce._files import atomic_torch_save
from infonce.distributed import gather_rows, single_process_gather
from infonce.trainer.export import build_from_architecture, read_backbone
from infonce.trainer.resume import check_resumed_hyperparameters


class PretrainedNotFoundError(FileNotFoundError):
    """The probe has no backbone: no ``pretrained`` file and no probe checkpoint to load."""


class LinearProbe(L.LightningModule):
    """Train a linear classifier on the frozen backbone of a MoCo checkpoint; log test top-1.

    The backbone stays in eval mode (its BatchNorm statistics are frozen) and gets no
    gradients. Its features pass through a BatchNorm without affine parameters before the
    linear layer (as MAE's linear probe), which makes one learning rate work across backbones.

    The backbone is read with :func:`infonce.trainer.export.read_backbone`
    (``weights_only=True``) and its architecture (any backbone
    :func:`~infonce.trainer.backbones.build_backbone` builds: its name or ``class_path``,
    ``cifar_stem``, ``backbone_kwargs``) is recorded in the probe's hyperparameters, so a probe
    checkpoint holds everything it needs: it loads
    (``LinearProbe.load_from_checkpoint``, ``--ckpt_path``) also after the MoCo checkpoint was
    moved or deleted.

    Args:
        pretrained: a MoCo checkpoint (e.g. ``runs/moco_cifar10/checkpoints/last.ckpt``) or a
            backbone exported by ``python -m infonce.trainer.export``.
        num_classes: classes of the dataset (checked against the data module at setup).
        lr, weight_decay, sgd_momentum: SGD with a cosine decay over the run.
        logits_file: if set, ``test`` also saves the test split's logits and labels there,
            ``torch.save({"logits": (N, C) float32, "labels": (N,) int64})`` gathered from
            every rank, for ``python -m infonce.plot reliability`` or
            :class:`infonce.TemperatureScaler`.
        architecture: set by the probe itself (recorded from ``pretrained``); leave it unset.

    Logged: ``train/loss``, ``train/acc``, ``val/top1`` and ``test/top1`` in percent.
    """

    RESUME_FIXED = ("num_classes", "architecture")

    def __init__(
        self,
        pretrained: str,
        num_classes: int = 10,
        lr: float = 0.1,
        weight_decay: float = 0.0,
        sgd_momentum: float = 0.9,
        logits_file: str | None = None,
        architecture: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.backbone: nn.Module | None = None
        self.classifier: nn.Module | None = None
        self._counts: Tensor | None = None  # (correct, seen) of this evaluation, this rank
        self._test_outputs: list[tuple[Tensor, Tensor]] = []  # (logits, labels) for logits_file
        if os.path.isfile(pretrained):
            backbone, info = read_backbone(pretrained)
            self._attach(backbone, info["architecture"], info["feature_dim"])
        elif architecture is not None:  # weights come from the probe's own checkpoint
            self._attach(*self._blank(architecture))
        # else: only a probe checkpoint can provide the backbone (see on_load_checkpoint)

    @staticmethod
    def _blank(architecture: dict[str, Any]) -> tuple[nn.Module, dict[str, Any], int]:
        backbone, width = build_from_architecture(architecture)
        return backbone, architecture, width

    def _attach(self, backbone: nn.Module, architecture: dict[str, Any], width: int) -> None:
        self.backbone = backbone.eval().requires_grad_(False)
        self.classifier = nn.Sequential(
            nn.BatchNorm1d(width, affine=False), nn.Linear(width, self.hparams.num_classes)
        )
        self.hparams["architecture"] = dict(architecture)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("hyper_parameters", {})
        if self.backbone is None and saved.get("architecture") is not None:
            self._attach(*self._blank(saved["architecture"]))
        what = f"the probe checkpoint of step {checkpoint.get('global_step', '?')}"
        check_resumed_hyperparameters(self.hparams, saved, self.RESUME_FIXED, what)

    def on_train_start(self) -> None:
        """This run's lr, SGD momentum and weight decay win over a resumed optimizer state."""
        for group in self.optimizers().param_groups:
            group["momentum"] = self.hparams.sgd_momentum
            group["weight_decay"] = self.hparams.weight_decay
        scheduler = self.lr_schedulers()
        scheduler.base_lrs = [self.hparams.lr] * len(scheduler.base_lrs)

    def _require_backbone(self) -> None:
        """After a checkpoint was (or was not) restored: the backbone must be there by now."""
        if self.backbone is None:
            raise PretrainedNotFoundError(
                f"pretrained checkpoint not found: {self.hparams.pretrained} (set "
                "--model.pretrained to a MoCo checkpoint or an exported backbone)"
            )

    def on_validation_start(self) -> None:
        self._require_backbone()

    def on_test_start(self) -> None:
        self._require_backbone()

    def on_predict_start(self) -> None:
        self._require_backbone()

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        expected = getattr(datamodule, "num_classes", None)
        if expected is not None and expected != self.hparams.num_classes:
            raise ValueError(
                f"num_classes is {self.hparams.num_classes} but the dataset has {expected} classes"
            )

    def on_train_epoch_start(self) -> None:
        self.backbone.eval()

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, num_classes) for images (B, 3, H, W)."""
        with torch.no_grad():
            features = self.backbone(x)  # (B, width)
        return self.classifier(features)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(1) == y).float().mean() * 100.0, prog_bar=True)
        return loss

    # Top-1 as (correct, seen) counts summed over ranks at the end: each rank evaluates its own
    # shard of the test split (every image once), so the figure equals one process's.
    def _evaluate(self, batch) -> Tensor:
        x, y = batch
        logits = self(x)  # (B, num_classes)
        counts = torch.stack([(logits.argmax(1) == y).sum(), torch.tensor(len(y), device=y.device)])
        self._counts = counts if self._counts is None else self._counts + counts
        return logits

    def _log_top1(self, split: str) -> None:
        # every rank reduces (a rank that saw no batch adds zeros), or the collective hangs
        counts = self._counts if self._counts is not None else torch.zeros(2, device=self.device)
        self._counts = None
        correct, seen = self.trainer.strategy.reduce(counts.double(), reduce_op="sum")
        if seen == 0:
            return
        top1 = 100.0 * correct / seen  # the same on every rank: "max" keeps it exact
        self.log(f"{split}/top1", top1.float(), prog_bar=True, sync_dist=True, reduce_fx="max")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_top1("val")

    def test_step(self, batch, batch_idx: int) -> None:
        logits = self._evaluate(batch)
        if self.hparams.logits_file:
            self._test_outputs.append((logits.float(), batch[1]))

    def on_test_epoch_end(self) -> None:
        self._log_top1("test")
        if self.hparams.logits_file:
            self._save_test_logits(self.hparams.logits_file)

    def _save_test_logits(self, path: str) -> None:
        """Every rank's test logits and labels (collectives: all ranks come here), saved once."""
        outputs, self._test_outputs = self._test_outputs, []
        logits = torch.empty(0, self.hparams.num_classes, device=self.device)  # (0, C)
        labels = torch.empty(0, dtype=torch.long, device=self.device)  # a rank without a batch
        if outputs:
            logits = torch.cat([batch_logits for batch_logits, _ in outputs])  # (n, C)
            labels = torch.cat([batch_labels for _, batch_labels in outputs])  # (n,)
        gather = self.all_gather if self.trainer.world_size > 1 else single_process_gather
        logits, labels = gather_rows(logits, gather), gather_rows(labels, gather)
        if self.trainer.is_global_zero:  # atomically: a reader never sees half a file
            atomic_torch_save({"logits": logits.cpu(), "labels": labels.cpu()}, path)

    def configure_optimizers(self):
        self._require_backbone()
        hp = self.hparams
        optimizer = torch.optim.SGD(
            self.classifier.parameters(),
            lr=hp.lr,
            momentum=hp.sgd_momentum,
            weight_decay=hp.weight_decay,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / total)))
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
