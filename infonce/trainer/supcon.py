"""Supervised contrastive learning (Khosla et al., 2020): the other images of the class are
positives too. Labels come from the dataset.

Defaults: solo-learn's CIFAR recipe (``scripts/pretrain/cifar/supcon.yaml`` of
vturrisi/solo-learn): ResNet-18 with the CIFAR stem, projector Linear(512, 2048) - ReLU -
Linear(2048, 256), T = 0.2, SGD lr 0.4 for a batch of 256, momentum 0.9, weight decay 1e-5,
10 warm-up epochs then a cosine, the online probe at lr 0.1, the ``solo_symmetric`` views
(strong colour jitter and Gaussian blur), 1,000 epochs, SyncBatchNorm over the GPUs
(``trainer.sync_batchnorm``). Published: 93.82% online-linear top-1 on CIFAR-10.
Where this differs: the warm-up starts from 0 (solo-learn: 3e-5); the loss is Khosla et al.'s
``L_out`` without the reference code's ``T / base_temperature`` factor (solo-learn has none).

Under DDP every rank's embeddings and labels are gathered (``gather_distributed``): R processes
of B images train as one process of R x B.
"""

import torch
from torch import Tensor, nn

from infonce._checks import check_bool, check_int, check_temperature
from infonce.contrastive import supcon
from infonce.trainer.base import ContrastiveMethod
from infonce.trainer.heads import projection_head
from infonce.trainer.schedules import LRSchedule

__all__ = ["SupCon"]


class SupCon(ContrastiveMethod):
    """SupCon over the two views of every image of the batch.

    Args:
        hidden_dim: the projector's hidden width.
        feature_dim: the projector's output.
        temperature: ``T``.
        gather_distributed: contrast against the embeddings and labels of every rank.
        **kwargs: :class:`~infonce.trainer.base.ContrastiveMethod`'s arguments.

    Logged: ``train/loss``, ``train/lr``, ``train/images_per_s`` and the evaluation.
    """

    RESUME_FIXED = (*ContrastiveMethod.RESUME_FIXED, "hidden_dim", "feature_dim")

    def __init__(
        self,
        backbone: str | dict = "resnet18",
        hidden_dim: int = 2048,
        feature_dim: int = 256,
        temperature: float = 0.2,
        gather_distributed: bool = True,
        lr: float = 0.4,
        weight_decay: float = 1e-5,
        warmup_epochs: float = 10.0,
        lr_schedule: LRSchedule = "cosine",
        **kwargs,
    ):
        super().__init__(backbone=backbone, lr=lr, weight_decay=weight_decay,
                         warmup_epochs=warmup_epochs, lr_schedule=lr_schedule,
                         **kwargs)  # fmt: skip
        check_temperature(temperature)
        check_bool(gather_distributed, "gather_distributed")
        for name in ("hidden_dim", "feature_dim"):
            check_int(locals()[name], name)
        net, self.backbone_width = self.build_backbone()
        head = projection_head(self.backbone_width, feature_dim, "mlp", hidden_dim)
        self.encoder = nn.Sequential(net, head)  # (B, 3, H, W) -> (B, F) -> (B, D)
        self.finish_networks(self.encoder)

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        (x1, x2), labels = self.views(batch)
        buffers = self.buffer_snapshot()  # a skipped step must not leave its BN statistics
        features = self.encoder[0](x1)  # (B, F)
        z = torch.stack([self.encoder[1](features), self.encoder(x2)], dim=1)  # (B, 2, D)
        hp = self.hparams
        loss = supcon(z, labels, hp.temperature, gather_distributed=hp.gather_distributed)
        loss = self.checked(loss, batch_idx, buffers)
        if loss is None:
            return None
        self.log("train/loss", loss, prog_bar=self.bar_shown())
        self.log_number("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss + self.probe_loss(features, labels)
