"""MoCo v3 (Chen, Xie and He, 2021): no queue; each view's query, through a predictor, finds
the momentum encoder's key of the other view among the keys of the whole (global) batch.

One training step reads as facebookresearch/moco-v3's ``builder.py``: queries of both views
through the encoder and the predictor, keys of both views from the momentum encoder (no
gradient), the symmetric loss ``ctr(q1, k2) + ctr(q2, k1)`` with each term scaled by ``2T``,
then (after the optimizer step) the momentum encoder moves, its ``m`` rising to 1 on a cosine.

Defaults: solo-learn's CIFAR recipe (``scripts/pretrain/cifar/mocov3.yaml`` of
vturrisi/solo-learn): ResNet-18 with the CIFAR stem, projector and predictor MLPs of width 4,096
to 256 (BatchNorm, the projector's last without affine, as moco-v3), T = 0.2, m from 0.99 to 1,
LARS (lr 0.3 for a batch of 256, eta 0.02, clipped, biases and norms excluded), weight decay
1e-6, 10 warm-up epochs then a cosine, the online probe at lr 0.3, the ``solo_asymmetric``
views (the second view solarised with p = 0.2), 1,000 epochs, SyncBatchNorm over the GPUs
(``trainer.sync_batchnorm``). Published: 93.10% online-linear top-1 on CIFAR-10.
Where this differs: the warm-up starts from 0 (solo-learn: 3e-5).
"""

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from infonce._checks import check_choice, check_int, check_temperature, check_unit_interval
from infonce._numerics import compute_dtype
from infonce.momentum import momentum_update
from infonce.trainer.base import ContrastiveMethod
from infonce.trainer.heads import moco_v3_mlp
from infonce.trainer.schedules import MOMENTUM_SCHEDULES, LRSchedule

__all__ = ["MoCoV3", "moco_v3_loss"]


def moco_v3_loss(query: Tensor, keys: Tensor, rank: int, temperature: float) -> Tensor:
    """moco-v3's ``contrastive_loss``: ``2T * CE(q @ k.T / T, arange(N) + rank N)``.

    ``keys`` are the keys of every rank, rank by rank (gathered without gradient); query ``i``
    of this rank finds its key at row ``rank * N + i``. Logits in float32 (float64 for float64
    inputs) with autocast off.

    Shape:
        query (N, D), keys (R * N, D); output ().
    """
    N, dtype = query.shape[0], compute_dtype(query, keys)
    with torch.autocast(query.device.type, enabled=False):
        q = F.normalize(query.to(dtype), dim=1)
        k = F.normalize(keys.to(dtype), dim=1)
        logits = q @ k.T / temperature  # (N, R * N)
        labels = torch.arange(N, device=q.device) + rank * N  # (N,)
        return F.cross_entropy(logits, labels) * (2 * temperature)


class MoCoV3(ContrastiveMethod):
    """MoCo v3 with a projector, a predictor and a momentum encoder.

    Args:
        hidden_dim: the MLPs' hidden width.
        feature_dim: the projector's and predictor's output.
        projector_layers: Linear layers of the projector (moco-v3: 2 for ResNets, 3 for ViTs).
        temperature: ``T``.
        momentum: the EMA's ``m`` at the start; ``momentum_schedule: cosine`` raises it to 1.
        momentum_schedule: ``cosine`` (moco-v3's ``--moco-m-cos``) or ``constant``.
        **kwargs: :class:`~infonce.trainer.base.ContrastiveMethod`'s arguments.

    Logged: ``train/loss``, ``train/lr``, ``train/momentum``, ``train/images_per_s`` and the
    evaluation.
    """

    RESUME_FIXED = (*ContrastiveMethod.RESUME_FIXED, "hidden_dim", "feature_dim",
                    "projector_layers")  # fmt: skip

    def __init__(
        self,
        backbone: str | dict = "resnet18",
        hidden_dim: int = 4096,
        feature_dim: int = 256,
        projector_layers: int = 2,
        temperature: float = 0.2,
        momentum: float = 0.99,
        momentum_schedule: Literal["constant", "cosine"] = "cosine",
        optimizer: Literal["sgd", "lars", "adamw"] = "lars",
        lr: float = 0.3,
        weight_decay: float = 1e-6,
        warmup_epochs: float = 10.0,
        lr_schedule: LRSchedule = "cosine",
        probe_lr: float = 0.3,
        **kwargs,
    ):
        super().__init__(backbone=backbone, optimizer=optimizer, lr=lr,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                         lr_schedule=lr_schedule, probe_lr=probe_lr, **kwargs)  # fmt: skip
        check_temperature(temperature)
        check_unit_interval(momentum, "momentum")
        check_choice(momentum_schedule, "momentum_schedule", MOMENTUM_SCHEDULES)
        for name in ("hidden_dim", "feature_dim", "projector_layers"):
            check_int(locals()[name], name)
        net, self.backbone_width = self.build_backbone()
        projector = moco_v3_mlp(
            self.backbone_width, hidden_dim, feature_dim, projector_layers, True
        )
        self.encoder = nn.Sequential(net, projector)  # (B, 3, H, W) -> (B, F) -> (B, D)
        self.predictor = moco_v3_mlp(
            feature_dim, hidden_dim, feature_dim, 2, last_bn=False
        )  # (B, D)
        self.momentum_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.finish_networks(self.encoder, self.predictor, self.momentum_encoder)

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        (x1, x2), labels = self.views(batch)
        buffers = self.buffer_snapshot()  # a skipped step must not leave its BN statistics
        features = self.encoder[0](x1)  # (B, F)
        q1 = self.predictor(self.encoder[1](features))  # (B, D)
        q2 = self.predictor(self.encoder(x2))  # (B, D)
        with torch.no_grad():  # the targets
            k1, k2 = self.momentum_encoder(x1), self.momentum_encoder(x2)  # (B, D) each
        temperature = self.scheduled_temperature(self.hparams.temperature)
        loss = self.contrast(q1, k2, temperature) + self.contrast(q2, k1, temperature)
        loss = self.checked(loss, batch_idx, buffers)
        if loss is None:
            return None
        self.log_temperature(temperature)
        self.log("train/loss", loss, prog_bar=self.bar_shown())
        self.log_number("train/lr", self.optimizers().param_groups[0]["lr"])
        self.log_number("train/momentum", self.current_momentum())
        return loss + self.probe_loss(features, labels)

    def contrast(self, q: Tensor, k: Tensor, temperature: float) -> Tensor:
        """:func:`moco_v3_loss` against the keys of every rank (gathered, no gradient)."""
        keys = self.all_gather(k).flatten(0, 1) if self.world() > 1 else k  # (R * B, D)
        return moco_v3_loss(q, keys, self.global_rank, temperature)

    def after_optimizer_step(self) -> None:
        """The EMA of the momentum encoder, with the ``m`` of the next step (moco-v3 updates
        just before computing the keys, the same values)."""
        momentum_update(self.encoder, self.momentum_encoder, self.current_momentum())

    def parameter_groups(self) -> list[dict]:
        return [{"params": [*self.encoder.parameters(), *self.predictor.parameters()],
                 "name": "encoder"}]  # fmt: skip

    def diagnostic_embeddings(self, x1: Tensor, x2: Tensor):
        q = F.normalize(self.predictor(self.encoder(x1)).float(), dim=1)  # (n, D)
        k = F.normalize(self.momentum_encoder(x2).float(), dim=1)  # (n, D)
        return q, k, None, self.scheduled_temperature(self.hparams.temperature)
