"""Linear evaluation: a frozen pretrained backbone and a trained linear classifier on top."""

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from infonce.backbones import build_backbone


def load_moco_backbone(checkpoint_path: str) -> tuple[nn.Module, int]:
    """The query encoder's backbone of a :class:`~infonce.moco.MoCo` checkpoint, and its width.

    The architecture is rebuilt from the hyperparameters stored in the checkpoint, with plain
    BatchNorm (``bn_splits=1``: same state-dict keys, and a frozen network never splits).

    Raises:
        FileNotFoundError: no file at ``checkpoint_path``.
        ValueError: the file is not a MoCo checkpoint.
    """
    try:
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"pretrained checkpoint not found: {checkpoint_path}") from None
    hparams = ckpt.get("hyper_parameters", {})
    if "backbone" not in hparams or "state_dict" not in ckpt:
        raise ValueError(
            f"{checkpoint_path} is not a MoCo checkpoint (no backbone hyperparameters)"
        )
    backbone, width = build_backbone(
        hparams["backbone"], bn_splits=1, cifar_stem=hparams.get("cifar_stem", True)
    )
    prefix = "encoder.0."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    backbone.load_state_dict(state)
    return backbone, width


class LinearProbe(L.LightningModule):
    """Train a linear classifier on the frozen backbone of a MoCo checkpoint; log test top-1.

    The backbone stays in eval mode (its BatchNorm statistics are frozen) and gets no
    gradients. Its features pass through a BatchNorm without affine parameters before the
    linear layer (as MAE's linear probe), which makes one learning rate work across backbones.

    Args:
        pretrained: path of a MoCo checkpoint (e.g. ``runs/moco_cifar10/checkpoints/last.ckpt``).
        num_classes: classes of the dataset (checked against the data module at setup).
        lr, weight_decay, sgd_momentum: SGD with a cosine decay over the run.

    Logged: ``train/loss``, ``train/acc``, ``val/top1`` and ``test/top1`` in percent.
    """

    def __init__(
        self,
        pretrained: str,
        num_classes: int = 10,
        lr: float = 0.1,
        weight_decay: float = 0.0,
        sgd_momentum: float = 0.9,
    ):
        super().__init__()
        self.save_hyperparameters()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.backbone, width = load_moco_backbone(pretrained)
        self.backbone.requires_grad_(False)
        self.classifier = nn.Sequential(
            nn.BatchNorm1d(width, affine=False), nn.Linear(width, num_classes)
        )

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

    def _evaluate(self, batch, split: str) -> None:
        x, y = batch
        top1 = (self(x).argmax(1) == y).float().mean() * 100.0
        self.log(f"{split}/top1", top1, prog_bar=True, sync_dist=True, batch_size=len(y))

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self):
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
