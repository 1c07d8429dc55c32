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

``queue_size: K`` adds a MoCo-style memory (not in solo-learn's recipe): a momentum encoder
(EMA ``m``) encodes the second view of each image, and the last K of those keys, with their
labels, are candidates of every anchor beside the batch (``supcon(..., queue=)``): more
positives of each class and more negatives per step than the batch holds. Every rank enqueues
the keys of all ranks, so the queues stay equal; the queue and its labels are in checkpoints.
"""

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from infonce._checks import (
    check_bool,
    check_choice,
    check_int,
    check_temperature,
    check_unit_interval,
)
from infonce.contrastive import supcon
from infonce.memory_queue import MemoryQueue
from infonce.momentum import momentum_update
from infonce.trainer.base import ContrastiveMethod
from infonce.trainer.heads import projection_head
from infonce.trainer.schedules import MOMENTUM_SCHEDULES, LRSchedule

__all__ = ["SupCon"]


class SupCon(ContrastiveMethod):
    """SupCon over the two views of every image of the batch.

    Args:
        hidden_dim: the projector's hidden width.
        feature_dim: the projector's output.
        temperature: ``T``.
        gather_distributed: contrast against the embeddings and labels of every rank.
        queue_size: K labelled keys of earlier batches as extra candidates (0: none, the
            recipe's), see the module.
        momentum: ``m`` of the momentum encoder that makes the queued keys (with a queue).
        momentum_schedule: ``constant``, or ``cosine`` from ``m`` to 1 over training.
        **kwargs: :class:`~infonce.trainer.base.ContrastiveMethod`'s arguments.

    Logged: ``train/loss``, ``train/lr``, ``train/images_per_s`` and the evaluation; with a
    queue also ``train/momentum`` and ``train/queue_filled``.
    """

    RESUME_FIXED = (*ContrastiveMethod.RESUME_FIXED, "hidden_dim", "feature_dim", "queue_size")
    CHECKPOINT_DEFAULTS = {**ContrastiveMethod.CHECKPOINT_DEFAULTS, "queue_size": 0}

    def __init__(
        self,
        backbone: str | dict = "resnet18",
        hidden_dim: int = 2048,
        feature_dim: int = 256,
        temperature: float = 0.2,
        gather_distributed: bool = True,
        queue_size: int = 0,
        momentum: float = 0.99,
        momentum_schedule: Literal["constant", "cosine"] = "constant",
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
        check_int(queue_size, "queue_size", minimum=0)
        check_unit_interval(momentum, "momentum")
        check_choice(momentum_schedule, "momentum_schedule", MOMENTUM_SCHEDULES)
        net, self.backbone_width = self.build_backbone()
        head = projection_head(self.backbone_width, feature_dim, "mlp", hidden_dim)
        self.encoder = nn.Sequential(net, head)  # (B, 3, H, W) -> (B, F) -> (B, D)
        self.momentum_encoder, self.queue = None, None
        if queue_size:
            self.momentum_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
            self.queue = MemoryQueue(queue_size, feature_dim, labelled=True)  # (K, D), (K,)
        self.finish_networks(*(m for m in (self.encoder, self.momentum_encoder) if m is not None))
        self._pending: list[tuple[Tensor, Tensor]] = []  # this step's (keys, labels) to enqueue

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        (x1, x2), labels = self.views(batch)
        buffers = self.buffer_snapshot()  # a skipped step must not leave its BN statistics
        features = self.encoder[0](x1)  # (B, F)
        z = torch.stack([self.encoder[1](features), self.encoder(x2)], dim=1)  # (B, 2, D)
        hp = self.hparams
        queued = self.queue.keys_and_labels() if self.queue is not None else (None, None)
        temperature = self.scheduled_temperature(hp.temperature)
        loss = supcon(z, labels, temperature, gather_distributed=hp.gather_distributed,
                      queue=queued[0], queue_labels=queued[1])  # fmt: skip
        loss = self.checked(loss, batch_idx, buffers)
        if loss is None:
            return None  # skipped: nothing enqueued
        self.log_temperature(temperature)
        if self.queue is not None:
            with torch.no_grad():
                keys = F.normalize(self.momentum_encoder(x2), dim=1)  # (B, D)
            self._pending.append((keys, labels))
            self.log_number("train/momentum", self.current_momentum())
            self.log("train/queue_filled", self.queue.filled.float())
        self.log("train/loss", loss, prog_bar=self.bar_shown())
        self.log_number("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss + self.probe_loss(features, labels)

    def after_optimizer_step(self) -> None:
        """With a queue: enqueue this step's keys and labels, gathered from every rank (so all
        queues stay equal), then move the momentum encoder."""
        if self.queue is None:
            return
        keys = torch.cat([k for k, _ in self._pending])  # (B * micro-batches, D)
        labels = torch.cat([y for _, y in self._pending])  # (B * micro-batches,)
        self._pending = []
        if self.world() > 1:  # (R * B, D), (R * B,) in the same order on every rank
            keys, labels = (self.all_gather(t).flatten(0, 1) for t in (keys, labels))
        self.queue.enqueue(keys, labels.long())
        momentum_update(self.encoder, self.momentum_encoder, self.current_momentum())
