"""SimCLR (Chen et al., 2020): NT-Xent over the 2N views of a batch, no queue, no EMA.

Defaults: SimCLR in lightly's CIFAR-10 benchmark (``docs/source/getting_started/benchmarks/
cifar10_benchmark.py`` of lightly-ai/lightly, updated 27.03.2023): ResNet-18 with the CIFAR
stem, ``SimCLRProjectionHead(512, 512, 128)`` (:func:`~infonce.trainer.heads.simclr_projector`),
NT-Xent at T = 0.5, SGD lr 0.06 x batch / 128 (0.24 for its batch of 512), momentum 0.9,
weight decay 5e-4, torch's ``CosineAnnealingLR`` stepped once per epoch over 200 epochs, kNN
(k = 200, T = 0.1) on the backbone's features; its views are the ``simclr`` recipe
(``SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)``). Published: 84.8%
weighted-kNN top-1 (batch 512, 200 epochs; 84.7% at batch 128).

Under DDP the embeddings of every rank are gathered with their gradient
(``gather_distributed``, on by default; the benchmark's is off, which is the same on one
device), so R processes of B images train as one process of R x B.
"""

from typing import Literal

from torch import Tensor, nn

from infonce._checks import check_bool, check_int, check_temperature
from infonce.contrastive import nt_xent
from infonce.trainer.base import ContrastiveMethod
from infonce.trainer.heads import simclr_projector
from infonce.trainer.schedules import LRSchedule

__all__ = ["SimCLR"]


class SimCLR(ContrastiveMethod):
    """SimCLR: every view of the batch against the 2N - 2 views of the other images.

    Args:
        hidden_dim: the projector's hidden width.
        feature_dim: the projector's output.
        projector_layers: Linear layers of the projector (2 in SimCLR v1, 3 in v2).
        projector_bn: BatchNorm after each of the projector's Linear layers (lightly's
            ``batch_norm``); without it the Linear layers have biases.
        temperature: ``T`` of NT-Xent.
        decoupled: leave the positive out of the denominator (DCL, Yeh et al., 2022).
        gather_distributed: the negatives of every rank, gathered with their gradient.
        **kwargs: :class:`~infonce.trainer.base.ContrastiveMethod`'s arguments.

    Logged: ``train/loss``, ``train/lr``, ``train/images_per_s`` and the evaluation.
    """

    RESUME_FIXED = (*ContrastiveMethod.RESUME_FIXED, "hidden_dim", "feature_dim",
                    "projector_layers", "projector_bn")  # fmt: skip

    def __init__(
        self,
        backbone: str | dict = "resnet18",
        hidden_dim: int = 512,
        feature_dim: int = 128,
        projector_layers: int = 2,
        projector_bn: bool = True,
        temperature: float = 0.5,
        decoupled: bool = False,
        gather_distributed: bool = True,
        lr: float = 0.24,
        weight_decay: float = 5e-4,
        lr_schedule: LRSchedule = "cosine_annealing_per_epoch",
        knn_feature: Literal["backbone", "head"] = "backbone",
        **kwargs,
    ):
        super().__init__(backbone=backbone, lr=lr, weight_decay=weight_decay,
                         lr_schedule=lr_schedule, knn_feature=knn_feature, **kwargs)  # fmt: skip
        check_temperature(temperature)
        check_bool(projector_bn, "projector_bn")
        check_bool(decoupled, "decoupled")
        check_bool(gather_distributed, "gather_distributed")
        for name in ("hidden_dim", "feature_dim", "projector_layers"):
            check_int(locals()[name], name)
        net, self.backbone_width = self.build_backbone()
        projector = simclr_projector(
            self.backbone_width, hidden_dim, feature_dim, projector_layers, projector_bn
        )
        self.encoder = nn.Sequential(net, projector)  # (B, 3, H, W) -> (B, F) -> (B, D)
        self.finish_networks(self.encoder)

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        (x1, x2), labels = self.views(batch)
        buffers = self.buffer_snapshot()  # a skipped step must not leave its BN statistics
        features = self.encoder[0](x1)  # (B, F)
        z1, z2 = self.encoder[1](features), self.encoder(x2)  # (B, D) each
        hp = self.hparams
        temperature = self.scheduled_temperature(hp.temperature)
        loss = nt_xent(z1, z2, temperature, decoupled=hp.decoupled,
                       gather_distributed=hp.gather_distributed)  # fmt: skip
        loss = self.checked(loss, batch_idx, buffers)
        if loss is None:
            return None
        self.log_temperature(temperature)
        self.log("train/loss", loss, prog_bar=self.bar_shown())
        self.log_number("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss + self.probe_loss(features, labels)
