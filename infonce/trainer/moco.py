"""MoCo (He et al., 2020; v2: Chen et al., 2020): a queue of negatives and a momentum encoder.

One training step reads top to bottom: encode queries, encode keys with the momentum encoder
(the key batch shuffled across BatchNorm groups), InfoNCE against the queue, then, once per
optimizer step and after it, enqueue the keys and move the momentum encoder.

Defaults: facebookresearch/moco's CIFAR-10 demo (``colab/moco_cifar10_demo.ipynb``), setting by
setting (README, "The MoCo CIFAR-10 demo"): ResNet-18 with the CIFAR stem and a linear head to
128-d, SplitBatchNorm(8) with the key batch shuffled, K = 4,096 random unit vectors to start,
m = 0.99, T = 0.1, SGD lr 0.06 for a batch of 512, momentum 0.9, wd 5e-4, the demo's per-epoch
cosine; kNN on the head's output. Published: 82.6% weighted-kNN top-1 after 200 epochs
(85.3% with ``symmetric: true``). MoCo v2's MLP head is ``head: mlp``.
"""

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn

from infonce._checks import check_choice, check_int, check_temperature, check_unit_interval
from infonce.info_nce import info_nce_stats
from infonce.memory_queue import MemoryQueue
from infonce.momentum import momentum_update
from infonce.shuffle_bn import (
    BN_GUARDS,
    encode_shuffled,
    encode_shuffled_across_ranks,
    key_permutation,
)
from infonce.temperature import LearnableTemperature
from infonce.trainer.base import ContrastiveMethod
from infonce.trainer.heads import projection_head
from infonce.trainer.rng import KEY_SHUFFLE, QUEUE_INIT, derive_seed
from infonce.trainer.schedules import MOMENTUM_SCHEDULES, LRSchedule

__all__ = ["BNGuardError", "MoCo"]


class BNGuardError(ValueError):
    """The BatchNorm guard asked for cannot run on this setup."""


class MoCo(ContrastiveMethod):
    """Momentum Contrast with a queue of negatives and a momentum encoder.

    Args:
        bn_splits: SplitBatchNorm groups per device (the per-device batch must divide by it);
            8 in the demo, which emulates 8 GPUs on one.
        bn_guard: how a key is kept from sharing its query's BatchNorm statistics
            (:mod:`infonce.shuffle_bn`): ``split`` shuffles the key batch over the device's
            ``bn_splits`` groups; ``shuffle`` is MoCo's shuffling BN across devices;
            ``sync`` is SyncBatchNorm (GPUs, ``bn_splits: 1``), which is no guard.
        head: ``linear`` (MoCo v1, the demo) or ``mlp`` (v2).
        feature_dim: the head's output, the dimension of the queue.
        hidden_dim: the MLP head's hidden width (default: the backbone's).
        temperature: ``T`` of InfoNCE; with ``learnable_temperature`` its initial value.
        learnable_temperature: learn ``T`` (:class:`LearnableTemperature`, CLIP's log-scale,
            clamped to [0.01, 1] after each step, no weight decay), logged as
            ``train/temperature``.
        temperature_lr: the learned ``T``'s own learning rate (scheduled as ``lr``), as CLIP
            gives its logit scale; None: ``lr``. A smaller rate slows ``T`` down but does not
            stop InfoNCE from driving it to the clamp (README, "Choosing the temperature":
            at 1e-3 it still reached 0.01 at step ~220 of cpu_quick's 4,680).
        queue_size: ``K``.
        queue_init: ``random`` unit vectors, as MoCo's code, or ``empty`` (the first step's
            negatives are the other keys of the batch).
        momentum: ``m`` of the momentum encoder's EMA.
        momentum_schedule: ``constant``, or ``cosine`` from ``m`` to 1 over training (BYOL).
        symmetric: add the loss with the views swapped (loss_12 + loss_21, the demo's) and
            enqueue both views' keys.
        **kwargs: :class:`~infonce.trainer.base.ContrastiveMethod`'s arguments (among them
            ``temperature_schedule``, which replaces ``temperature`` when not ``constant``).

    Logged: ``train/loss``, ``train/acc`` ((K+1)-way top-1 of the positive), ``train/pos_logit``,
    ``train/neg_logit``, ``train/lr``, ``train/momentum``, ``train/queue_filled``,
    ``train/images_per_s``, ``train/temperature`` when learned or scheduled, and the evaluation.
    """

    RESUME_FIXED = (*ContrastiveMethod.RESUME_FIXED, "head", "feature_dim", "hidden_dim",
                    "queue_size", "learnable_temperature")  # fmt: skip
    CHECKPOINT_DEFAULTS = {**ContrastiveMethod.CHECKPOINT_DEFAULTS, "learnable_temperature": False}

    def __init__(
        self,
        backbone: str | dict = "resnet18",
        bn_splits: int = 8,
        bn_guard: Literal["split", "shuffle", "sync"] = "split",
        head: Literal["linear", "mlp"] = "linear",
        feature_dim: int = 128,
        hidden_dim: int | None = None,
        temperature: float = 0.1,
        learnable_temperature: bool = False,
        temperature_lr: float | None = None,
        queue_size: int = 4096,
        queue_init: Literal["empty", "random"] = "random",
        momentum: float = 0.99,
        momentum_schedule: Literal["constant", "cosine"] = "constant",
        symmetric: bool = False,
        lr: float = 0.06,
        weight_decay: float = 5e-4,
        lr_schedule: LRSchedule = "cosine_per_epoch",
        knn_feature: Literal["backbone", "head"] = "head",
        **kwargs,
    ):
        super().__init__(backbone=backbone, bn_splits=bn_splits, lr=lr, weight_decay=weight_decay,
                         lr_schedule=lr_schedule, knn_feature=knn_feature, **kwargs)  # fmt: skip
        check_temperature(temperature)
        check_unit_interval(momentum, "momentum")
        check_int(feature_dim, "feature_dim")
        check_int(queue_size, "queue_size")
        check_choice(bn_guard, "bn_guard", BN_GUARDS)
        check_choice(queue_init, "queue_init", ("empty", "random"))
        check_choice(momentum_schedule, "momentum_schedule", MOMENTUM_SCHEDULES)
        if bn_guard == "sync" and bn_splits != 1:
            raise ValueError(
                f"bn_guard: sync normalises over the whole batch of all ranks: bn_splits must "
                f"be 1, got {bn_splits}"
            )
        net, self.backbone_width = self.build_backbone()
        self.encoder = nn.Sequential(
            net, projection_head(self.backbone_width, feature_dim, head, hidden_dim)
        )  # (B, 3, H, W) -> (B, F) -> (B, feature_dim)
        self.momentum_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.queue = MemoryQueue(queue_size, feature_dim)  # (K, feature_dim)
        self.temperature = None
        if temperature_lr is not None:
            if not learnable_temperature:
                raise ValueError(
                    f"temperature_lr ({temperature_lr}) is the learned T's learning rate: it "
                    "needs learnable_temperature: true"
                )
            if not (math.isfinite(temperature_lr) and temperature_lr > 0):
                raise ValueError(f"temperature_lr must be > 0, got {temperature_lr}")
        if learnable_temperature:
            if self.hparams.temperature_schedule != "constant":
                raise ValueError(
                    "learnable_temperature: true learns T, temperature_schedule: "
                    f"{self.hparams.temperature_schedule} sets it: choose one"
                )
            try:
                self.temperature = LearnableTemperature(temperature)
            except ValueError as error:  # said with this module's argument name
                raise ValueError(f"temperature to be learned: {error}") from None
        if queue_init == "random":  # the same on every rank: seeded
            seed = derive_seed(self.hparams.seed, QUEUE_INIT)
            noise = torch.randn(
                queue_size, feature_dim, generator=torch.Generator().manual_seed(seed)
            )
            self.queue.enqueue(F.normalize(noise, dim=1))
        self.finish_networks(self.encoder, self.momentum_encoder)
        self._pending_keys: list[Tensor] = []  # this optimizer step's keys, enqueued after it

    def setup(self, stage: str) -> None:
        """Set up and check the BatchNorm guard."""
        super().setup(stage)
        if stage != "fit":
            return
        guard, splits, world = self.hparams.bn_guard, self.hparams.bn_splits, self.world()
        if guard == "sync":
            if world > 1 and self.trainer.strategy.root_device.type == "cpu":
                raise BNGuardError(
                    "bn_guard: sync needs GPUs (torch's SyncBatchNorm does not run on CPUs); "
                    "use bn_guard: split or shuffle"
                )
            if world > 1:
                self.encoder = nn.SyncBatchNorm.convert_sync_batchnorm(self.encoder)
                self.momentum_encoder = nn.SyncBatchNorm.convert_sync_batchnorm(
                    self.momentum_encoder
                )
            rank_zero_warn(
                "bn_guard: sync normalises queries and keys over the same global batch, so it "
                "does not keep a key's BatchNorm statistics apart from its query's; with a "
                "queue, bn_guard: split or shuffle is MoCo's guard"
            )
        elif splits * (world if guard == "shuffle" else 1) == 1:
            rank_zero_warn(
                "MoCo WITHOUT A BATCHNORM GUARD: with bn_splits=1 and bn_guard="
                f"{guard} on {world} device(s) every key is normalised over the same images as "
                "its query, a shortcut that cost 4 points of kNN accuracy at 800 epochs in the "
                "MoCo CIFAR-10 demo's notes. Set model.bn_splits > 1 (8 in the demo), or "
                "model.bn_guard: shuffle on several devices."
            )

    # ---- training ------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        (x1, x2), labels = self.views(batch)
        buffers = self.buffer_snapshot()  # a skipped step must not leave its BN statistics
        features = self.encoder[0](x1)  # (B, F) the queries' backbone features
        q1 = self.encoder[1](features)  # (B, D)
        k2 = self.encode_keys(x2)  # (B, D)
        loss, keys = self.queue_loss(q1, k2), [k2]
        if self.hparams.symmetric:  # loss_12 + loss_21, both against the same queue
            q2, k1 = self.encoder(x2), self.encode_keys(x1, draw=1)
            loss, keys = loss + self.queue_loss(q2, k1), [k1, k2]
        loss = self.checked(loss, batch_idx, buffers)
        if loss is None:
            return None  # skipped: no backward, no optimizer step, nothing enqueued
        self._pending_keys += keys
        self.log("train/loss", loss, prog_bar=self.bar_shown())
        self.log_number("train/lr", self.optimizers().param_groups[0]["lr"])
        self.log_number("train/momentum", self.current_momentum())
        self.log("train/queue_filled", self.queue.filled.float())
        self.log_temperature(self.current_temperature())
        return loss + self.probe_loss(features, labels)

    @torch.no_grad()
    def encode_keys(self, x: Tensor, draw: int = 0) -> Tensor:
        """Momentum-encoder keys (B, feature_dim), L2-normalised, under the ``bn_guard``; the
        permutation's seed is a pure function of (seed, step, ``draw``), the same on every rank."""
        guard, splits, world = self.hparams.bn_guard, self.hparams.bn_splits, self.world()
        seed = derive_seed(self.hparams.seed, KEY_SHUFFLE, self.global_step, draw)
        if guard == "shuffle" and world > 1:
            perm = key_permutation(world * x.shape[0], world * splits, seed)  # (R*B,)
            k = encode_shuffled_across_ranks(
                self.momentum_encoder, x, perm, self.global_rank, self.all_gather
            )
        elif guard != "sync" and splits > 1:
            k = encode_shuffled(self.momentum_encoder, x, key_permutation(len(x), splits, seed))
        else:
            k = self.momentum_encoder(x)  # (B, D)
        return F.normalize(k, dim=1)

    def queue_loss(self, q: Tensor, k: Tensor) -> Tensor:
        """InfoNCE of queries ``q`` against keys ``k`` and the queue (chunked), logged. While
        the queue is still empty the other keys of the batch are the negatives."""
        negatives = self.queue.negatives() if self.queue.num_keys > 0 else None  # (K, D)
        stats = info_nce_stats(q, k, negatives, self.current_temperature())  # fields (B,)
        top1 = (stats.positive_logit >= stats.max_negative_logit).float().mean()
        self.log("train/acc", top1, prog_bar=self.bar_shown())
        self.log("train/pos_logit", stats.positive_logit.mean())
        self.log("train/neg_logit", stats.mean_negative_logit.mean())
        return stats.loss.mean()

    def current_temperature(self) -> float | Tensor:
        """``T``: the fixed float, or the learned one as a 0-d tensor carrying gradients."""
        if self.temperature is None:
            return self.scheduled_temperature(self.hparams.temperature)
        return self.temperature()

    def after_optimizer_step(self) -> None:
        """MoCo's order: enqueue this step's keys (gathered from every rank, so all queues stay
        equal) and move the momentum encoder; ``T`` back into range."""
        if self.temperature is not None:
            self.temperature.clamp_()
        keys, self._pending_keys = torch.cat(self._pending_keys), []  # (B * micro-batches, D)
        if self.world() > 1:
            keys = self.all_gather(keys).flatten(0, 1)  # (R * B, D), the same order on all
        self.queue.enqueue(keys)
        momentum_update(self.encoder, self.momentum_encoder, self.current_momentum())

    def parameter_groups(self) -> list[dict]:
        groups = super().parameter_groups()
        if self.temperature is not None:  # no weight decay: it would pull T towards 1
            lr_key = "lr" if self.hparams.temperature_lr is None else "temperature_lr"
            groups.append({"params": list(self.temperature.parameters()), "name": "temperature",
                           "lr_key": lr_key, "decayed": False})  # fmt: skip
        return groups

    def diagnostic_embeddings(self, x1: Tensor, x2: Tensor):
        q = F.normalize(self.encoder(x1).float(), dim=1)  # (n, D)
        k = F.normalize(self.momentum_encoder(x2).float(), dim=1)  # (n, D)
        negatives = self.queue.negatives() if self.queue.num_keys > 0 else None  # (K, D)
        return q, k, negatives, self.current_temperature()
