"""MoCo (He et al., 2020; v2: Chen et al., 2020) as one flat LightningModule.

One training step reads top to bottom: encode queries, encode keys with the momentum encoder,
InfoNCE against the queue, then -- once per optimizer step, after it -- enqueue the keys and
move the momentum encoder. Validation only extracts features for the weighted kNN monitor.
"""

import copy
import math
import time
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn

from infonce._checks import check_int, check_temperature, check_unit_interval
from infonce._device import host_to_device
from infonce.diagnostics import embedding_diagnostics
from infonce.distributed import single_process_gather
from infonce.info_nce import info_nce_stats
from infonce.knn import sharded_knn_accuracy
from infonce.memory_queue import MemoryQueue
from infonce.momentum import cosine_momentum, momentum_update
from infonce.shuffle_bn import (
    BN_GUARDS,
    encode_shuffled,
    encode_shuffled_across_ranks,
    key_permutation,
)
from infonce.temperature import LearnableTemperature
from infonce.trainer.backbones import build_backbone, projection_head
from infonce.trainer.resume import check_resumed_hyperparameters
from infonce.trainer.rng import (
    KEY_SHUFFLE,
    QUEUE_INIT,
    SEED_SCHEME,
    derive_seed,
    restore_rng_states,
    rng_states,
)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the step was not applied."""


class BNGuardError(ValueError):
    """The BatchNorm guard asked for cannot run on this setup."""


class MoCo(L.LightningModule):
    """Momentum Contrast with a queue of negatives, a momentum encoder and a weighted kNN monitor.

    Args:
        backbone: ``resnet18`` | ``resnet50`` | ``convnet`` (see :func:`build_backbone`).
        cifar_stem: 3x3 stride-1 first conv and no max-pool (for 32x32 images).
        bn_splits: SplitBatchNorm groups per device (the batch size per device must be
            divisible by it); 8 in the MoCo CIFAR demo, which emulates 8 GPUs on one.
        bn_guard: how a key is kept from sharing its query's BatchNorm statistics
            (:mod:`infonce.shuffle_bn`). ``split``: the key batch is shuffled within each device
            over its ``bn_splits`` groups (no communication; the demo's form; without splits
            there is no guard and a warning says so). ``shuffle``: MoCo's shuffling BN across
            devices: the key images of all ranks are gathered, shuffled over every rank's
            groups, encoded and gathered back (on one device it is ``split``). ``sync``:
            SyncBatchNorm over all ranks (needs GPUs and ``bn_splits: 1``); as in SimCLR or
            MoCo v3, but it does not keep a key's statistics apart from its query's.
        head: ``linear`` (MoCo v1) or ``mlp`` (v2).
        feature_dim: output dimension of the head, the dimension of the queue.
        hidden_dim: hidden width of the MLP head (default: the backbone's width).
        temperature: ``T`` of InfoNCE; with ``learnable_temperature`` its initial value.
        learnable_temperature: train ``T`` with the encoder (:class:`LearnableTemperature`:
            ``log(1/T)`` clamped to ``T`` in [0.01, 1], no weight decay, the same learning rate
            schedule; CLIP's recipe), logged as ``train/temperature``.
        queue_size: ``K``, the number of negatives kept.
        queue_init: ``empty`` (the first step uses the other keys of the batch as negatives,
            then the queue fills) or ``random``: K random unit vectors, as the MoCo code does.
        momentum: ``m`` of the momentum encoder's EMA.
        momentum_schedule: ``constant``, or ``cosine`` to ramp ``m`` to 1 over training (BYOL).
        symmetric: add the loss with the two views swapped (loss_12 + loss_21, as the MoCo CIFAR
            demo) and enqueue both views' keys.
        lr: SGD learning rate; weight_decay, sgd_momentum: SGD's.
        warmup_epochs: linear warm-up length before the cosine decay (fractions allowed).
        lr_schedule: ``cosine``: per optimizer step from ``lr`` to 0 over the run;
            ``cosine_per_epoch``: the MoCo CIFAR demo's, ``lr * (1 + cos(pi * e / E)) / 2``
            for the e-th of E epochs (1-based: constant within an epoch, 0 in the last one).
            Both are pure functions of the step.
        knn_k, knn_temperature: the weighted kNN monitor (200 and 0.1 in the MoCo demo).
        knn_feature: the feature the kNN monitor compares: ``backbone`` (before the head) or
            ``head`` (the encoder's output, as the MoCo CIFAR demo does).
        diagnostics_images: at every validation, the diagnostics of :mod:`infonce.diagnostics`
            on two fixed views of this many training images (the datamodule's
            ``fixed_views``): ``val/alignment``, ``val/uniformity`` (of the queries),
            ``val/entropy`` (of the positive-vs-queue softmax at ``T``) and
            ``val/hardest_negative`` (mean cosine of each query's nearest queue entry).
            0 turns them off.
        seed: seeds the per-step key shuffle (a pure function of seed and step, so resuming is
            exact).
        channels_last: keep convolution weights and inputs in NHWC, the layout oneDNN (CPU)
            and cuDNN tensor cores run fastest.
        compile: ``torch.compile`` both encoders in place (``nn.Module.compile``: checkpoint
            keys unchanged); pays off on long GPU runs, costs a minute of compiling first.
        nonfinite_loss: what a NaN or inf loss does. ``error``: stop the run with an error
            naming the step, before that step's optimizer update, enqueue and momentum update
            (the last checkpoint keeps the last finite state). ``skip``: skip that step (no
            update, no enqueue, its BatchNorm statistics undone), warn, and go on; for rare
            overflows, not for a diverging run.

    On resume, this run's hyperparameters are used; ``RESUME_FIXED`` ones (the shapes of the
    saved state) must equal the checkpoint's, the others may differ and are reported (see
    :mod:`infonce.trainer.resume`); SGD's momentum and weight decay are re-applied over the
    optimizer state the checkpoint restores.

    Logged: ``train/loss``, ``train/acc`` ((K+1)-way top-1 of the positive), ``train/pos_logit``,
    ``train/neg_logit`` (means of the logits, i.e. similarity / T), ``train/lr``,
    ``train/momentum``, ``train/queue_filled``, ``train/images_per_s`` (all devices, wall clock
    between batch ends, so data loading counts), ``train/temperature`` when it is learned,
    ``val/knn_top1`` in percent and the diagnostics above.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        cifar_stem: bool = True,
        bn_splits: int = 8,
        bn_guard: Literal["split", "shuffle", "sync"] = "split",
        head: Literal["linear", "mlp"] = "mlp",
        feature_dim: int = 128,
        hidden_dim: int | None = None,
        temperature: float = 0.07,
        learnable_temperature: bool = False,
        queue_size: int = 65536,
        queue_init: Literal["empty", "random"] = "empty",
        momentum: float = 0.999,
        momentum_schedule: Literal["constant", "cosine"] = "constant",
        symmetric: bool = False,
        lr: float = 0.06,
        weight_decay: float = 5e-4,
        sgd_momentum: float = 0.9,
        warmup_epochs: float = 0.0,
        lr_schedule: Literal["cosine", "cosine_per_epoch"] = "cosine",
        knn_k: int = 200,
        knn_temperature: float = 0.1,
        knn_feature: Literal["backbone", "head"] = "backbone",
        diagnostics_images: int = 256,
        seed: int = 0,
        channels_last: bool = True,
        compile: bool = False,
        nonfinite_loss: Literal["error", "skip"] = "error",
    ):
        super().__init__()
        self.save_hyperparameters()
        check_temperature(temperature)
        check_temperature(knn_temperature, "knn_temperature")
        check_unit_interval(momentum, "momentum")
        for name, value, allowed in (
            ("nonfinite_loss", nonfinite_loss, ("error", "skip")),
            ("bn_guard", bn_guard, BN_GUARDS),
            ("queue_init", queue_init, ("empty", "random")),
            ("lr_schedule", lr_schedule, ("cosine", "cosine_per_epoch")),
            ("knn_feature", knn_feature, ("backbone", "head")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if bn_guard == "sync" and bn_splits != 1:
            raise ValueError(
                f"bn_guard: sync normalises over the whole batch of all ranks: bn_splits must "
                f"be 1, got {bn_splits}"
            )
        if momentum_schedule not in ("constant", "cosine"):
            raise ValueError(
                f"momentum_schedule must be 'constant' or 'cosine', got {momentum_schedule!r}"
            )
        for name in ("feature_dim", "queue_size", "knn_k"):
            check_int(getattr(self.hparams, name), name)
        check_int(diagnostics_images, "diagnostics_images", minimum=0)
        for name, value, ok in (
            ("lr", lr, lr > 0),
            ("weight_decay", weight_decay, weight_decay >= 0),
            ("warmup_epochs", warmup_epochs, warmup_epochs >= 0),
        ):
            if not ok:
                raise ValueError(f"{name} must be {'> 0' if name == 'lr' else '>= 0'}, got {value}")

        net, width = build_backbone(backbone, bn_splits=bn_splits, cifar_stem=cifar_stem)
        self.encoder = nn.Sequential(net, projection_head(width, feature_dim, head, hidden_dim))
        self._knn_width = feature_dim if knn_feature == "head" else width  # the kNN's features
        self.momentum_encoder = copy.deepcopy(self.encoder)
        for p in self.momentum_encoder.parameters():
            p.requires_grad_(False)
        self.queue = MemoryQueue(queue_size, feature_dim)
        self.temperature = None
        if learnable_temperature:
            try:
                self.temperature = LearnableTemperature(temperature)
            except ValueError as error:  # said with this module's argument name
                raise ValueError(f"temperature to be learned: {error}") from None
        if queue_init == "random":  # the same on every rank: seeded
            noise = torch.randn(
                queue_size,
                feature_dim,
                generator=torch.Generator().manual_seed(derive_seed(seed, QUEUE_INIT)),
            )
            self.queue.enqueue(F.normalize(noise, dim=1))
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.encoder.to(memory_format=self._memory_format)
        self.momentum_encoder.to(memory_format=self._memory_format)
        if compile:
            self.encoder.compile()
            self.momentum_encoder.compile()
        self._pending_keys: list[Tensor] = []  # keys of this optimizer step, enqueued after it
        self._val_features: dict[bool, list[Tensor]] = {False: [], True: []}  # is_query -> (B, F)
        self._val_labels: dict[bool, list[Tensor]] = {False: [], True: []}
        self._last_batch_end: float | None = None  # for the images/s readout
        self._skipped_steps = 0
        self._saved_schedule_steps: int | None = None  # of a resumed checkpoint, if any
        self._fixed_views: tuple[object, tuple[Tensor, Tensor]] | None = None  # (datamodule, views)

    def setup(self, stage: str) -> None:
        """Spare the queue DDP's buffer broadcast; set up and check the BatchNorm guard."""
        # DDP broadcasts every buffer from rank 0 before each training forward. The queue is
        # the same on every rank already (every rank enqueues the same gathered keys): K x D
        # floats a step that need not travel.
        self._ddp_params_and_buffers_to_ignore = [
            f"queue.{n}" for n, _ in self.queue.named_buffers()
        ]
        if stage != "fit":
            return
        guard, splits, world = self.hparams.bn_guard, self.hparams.bn_splits, self._world()
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

    # ---- training -------------------------------------------------------------------------
    def current_momentum(self) -> float:
        if self.hparams.momentum_schedule == "constant":
            return self.hparams.momentum
        return cosine_momentum(self.hparams.momentum, self.global_step, self._total_steps())

    @torch.no_grad()
    def encode_keys(self, x: Tensor, draw: int = 0) -> Tensor:
        """Momentum-encoder keys (B, feature_dim), L2-normalised, under the ``bn_guard``.

        The key batch is permuted (:func:`infonce.shuffle_bn.key_permutation`) with a seed
        that is a pure function of (seed, step, ``draw``), so resuming is exact and every rank
        draws the same permutation.
        """
        guard, splits, world = self.hparams.bn_guard, self.hparams.bn_splits, self._world()
        seed = derive_seed(self.hparams.seed, KEY_SHUFFLE, self.global_step, draw)
        if guard == "shuffle" and world > 1:
            perm = key_permutation(world * x.shape[0], world * splits, seed)  # (R*B,)
            k = encode_shuffled_across_ranks(
                self.momentum_encoder, x, perm, self.global_rank, self.all_gather
            )
        elif guard != "sync" and splits > 1:
            k = encode_shuffled(self.momentum_encoder, x, key_permutation(len(x), splits, seed))
        else:
            k = self.momentum_encoder(x)  # (B, dim)
        return F.normalize(k, dim=1)

    def _world(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def contrast(self, x_q: Tensor, x_k: Tensor, draw: int = 0) -> tuple[Tensor, Tensor]:
        """InfoNCE of queries from ``x_q`` against keys of ``x_k`` and the queue, logged.

        Returns (loss, keys (B, dim)). The queue loss runs chunked (:mod:`infonce.chunked`).
        While the queue is still empty (the first step of a run) the other keys of the batch
        serve as negatives.
        """
        q = self.encoder(x_q)  # (B, dim)
        k = self.encode_keys(x_k, draw)  # (B, dim)
        negatives = self.queue.negatives() if self.queue.num_keys > 0 else None  # (K, dim)
        stats = info_nce_stats(q, k, negatives, self.current_temperature())  # fields (B,)
        top1 = (stats.positive_logit >= stats.max_negative_logit).float().mean()
        self.log("train/acc", top1, prog_bar=self._bar_shown())
        self.log("train/pos_logit", stats.positive_logit.mean())
        self.log("train/neg_logit", stats.mean_negative_logit.mean())
        return stats.loss.mean(), k

    def current_temperature(self) -> float | Tensor:
        """``T``: the fixed float, or the learned one as a 0-d tensor carrying gradients."""
        return self.hparams.temperature if self.temperature is None else self.temperature()

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        (x1, x2), _ = batch
        x1, x2 = (self._as_input(x) for x in (x1, x2))
        # a skipped step must not leave its BatchNorm statistics behind either
        buffers = self._buffers_snapshot() if self.hparams.nonfinite_loss == "skip" else None
        if self.hparams.symmetric:
            loss_12, k2 = self.contrast(x1, x2)
            loss_21, k1 = self.contrast(x2, x1, draw=1)
            loss, keys = loss_12 + loss_21, [k1, k2]
        else:
            loss, k2 = self.contrast(x1, x2)
            keys = [k2]
        if not self._loss_is_finite(loss, batch_idx):
            for saved, buffer in zip(buffers, self._encoder_buffers(), strict=True):
                buffer.copy_(saved)
            return None  # skipped: no backward, no optimizer step, nothing enqueued
        self._pending_keys += keys
        self.log("train/loss", loss, prog_bar=self._bar_shown())
        self._log_number("train/lr", self.optimizers().param_groups[0]["lr"])
        self._log_number("train/momentum", self.current_momentum())
        self.log("train/queue_filled", self.queue.filled.float())
        if self.temperature is not None:
            self.log("train/temperature", self.temperature().detach())
        return loss

    def _as_input(self, x: Tensor) -> Tensor:
        """Images in the encoders' layout, and in their dtype under ``precision: 64-true``
        (Lightning casts the weights, not the views); a no-op otherwise."""
        dtype = self.dtype if self.dtype == torch.float64 else x.dtype
        return x.to(dtype).contiguous(memory_format=self._memory_format)

    def _bar_shown(self) -> bool:
        """Whether a progress bar shows this run: Lightning reads every ``prog_bar`` value back
        to the host after each step (a device sync), also when no bar is there to show it."""
        return self._trainer is not None and self.trainer.progress_bar_callback is not None

    def _log_number(self, name: str, value: float, prog_bar: bool = False) -> None:
        """``self.log`` of a Python number, copied to the device without a host sync (Lightning
        would copy it from pageable memory, which waits for the GPU to drain)."""
        value = host_to_device(torch.tensor(value, dtype=torch.float32), self.device)
        self.log(name, value, prog_bar=prog_bar)

    def _encoder_buffers(self) -> list[Tensor]:
        """The BatchNorm statistics of both encoders (the queue changes only after the step)."""
        return [*self.encoder.buffers(), *self.momentum_encoder.buffers()]

    @torch.no_grad()
    def _buffers_snapshot(self) -> list[Tensor]:
        return [buffer.clone() for buffer in self._encoder_buffers()]

    def _loss_is_finite(self, loss: Tensor, batch_idx: int) -> bool:
        """True if ``loss`` is finite on every rank; else raise, or (``skip``) warn."""
        finite = bool(torch.isfinite(loss))  # one host sync; the progress bar reads it anyway
        if self.trainer.world_size > 1:  # all ranks must take the same branch
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return True
        where = f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        if self.hparams.nonfinite_loss == "skip":
            self._skipped_steps += 1
            rank_zero_warn(f"train/loss is {float(loss.detach())} at {where}: step skipped")
            self.log("train/skipped_steps", float(self._skipped_steps))
            return False
        raise NonFiniteLossError(
            f"train/loss is {float(loss.detach())} at {where}; stopped before this step's "
            "optimizer update, enqueue and momentum update, and no checkpoint was written since "
            "the last one. Lower model.lr, or set model.nonfinite_loss: skip to skip such steps."
        )

    def on_train_start(self) -> None:
        """This run's SGD momentum and weight decay win over a resumed optimizer state, and a
        schedule that changed length since the checkpoint is reported."""
        for group in self.optimizers().param_groups:
            group["momentum"] = self.hparams.sgd_momentum
            group["weight_decay"] = (
                0.0 if group.get("name") == "temperature" else (self.hparams.weight_decay)
            )
        saved, total = self._saved_schedule_steps, self._total_steps()
        if saved is not None and saved != total:
            rank_zero_warn(
                f"the learning-rate and momentum schedules now span {total} steps, the "
                f"checkpoint's spanned {saved} (max_epochs, max_steps or the data changed): "
                "they continue from the resumed step on the new length"
            )

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_batch_end is not None and batch_idx > 0:
            images = batch[1].shape[0] * self.trainer.world_size
            speed = images / (now - self._last_batch_end)
            self._log_number("train/images_per_s", speed, prog_bar=self._bar_shown())
        self._last_batch_end = now

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """Set the scheduled learning rate, step, then -- once per optimizer step, also under
        gradient accumulation -- enqueue this step's keys (gathered from every device, so all
        queues stay equal) and move the momentum encoder, in MoCo's order.

        The learning rate is a pure function of the step (no scheduler state to lose).
        """
        for group in optimizer.param_groups:
            group["lr"] = self.hparams.lr * self.lr_factor(self.global_step)
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.temperature is not None:
            self.temperature.clamp_()  # back into range, as CLIP after each step
        if not self._pending_keys:
            return
        keys = torch.cat(self._pending_keys)  # (B * micro-batches, dim)
        self._pending_keys = []
        if self.trainer.world_size > 1:
            keys = self.all_gather(keys).flatten(0, 1)  # (world * B, dim), same order on all ranks
        self.queue.enqueue(keys)
        momentum_update(self.encoder, self.momentum_encoder, self.current_momentum())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        groups = [{"params": list(self.encoder.parameters()), "name": "encoder"}]
        if self.temperature is not None:  # no weight decay: it would pull T towards 1
            groups.append(
                {"params": list(self.temperature.parameters()), "name": "temperature",
                 "weight_decay": 0.0}
            )  # fmt: skip
        return torch.optim.SGD(
            groups,
            lr=hp.lr,
            momentum=hp.sgd_momentum,
            weight_decay=hp.weight_decay,
        )

    def _total_steps(self) -> int:
        """Optimizer steps of the whole schedule: ``max_epochs`` worth when set, else ``max_steps``.

        ``max_steps`` alone only stops a run early, so a run stopped and resumed follows the
        same schedule as one that was never stopped.
        """
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            return self._steps_per_epoch() * trainer.max_epochs
        return max(1, trainer.max_steps)

    def lr_factor(self, step: int) -> float:
        """Linear warm-up then cosine decay to 0, as a factor of ``lr``, at optimizer ``step``
        (``lr_schedule``: per step, or per epoch as the MoCo CIFAR demo)."""
        total, per_epoch = self._total_steps(), self._steps_per_epoch()
        warmup = round(self.hparams.warmup_epochs * per_epoch)
        if step < warmup:
            return (step + 1) / warmup
        if self.hparams.lr_schedule == "cosine_per_epoch":  # epoch e = 1..E, the demo's
            epochs = math.ceil(total / per_epoch)
            progress = min(1.0, (step // per_epoch + 1) / epochs)
        else:
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def _steps_per_epoch(self) -> int:
        trainer = self.trainer
        return max(1, math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches))

    # ---- kNN monitor ----------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_features, self._val_labels = {False: [], True: []}, {False: [], True: []}

    def validation_step(self, batch, batch_idx: int) -> None:
        """Batches ``(x, y, is_query)``: this rank's shard of the train split (the kNN
        memory), then of the test split; features kept in float16."""
        if len(batch) != 3:
            raise ValueError(
                "MoCo validates with a kNN monitor: set data.knn_memory: true, so that "
                "validation batches carry the train split as memory (x, y, is_query)"
            )
        x, y, is_query = batch
        x = self._as_input(x)
        net = self.encoder if self.hparams.knn_feature == "head" else self.encoder[0]
        features = F.normalize(net(x).float(), dim=1).half()  # (B, F)
        for role in (False, True):
            rows = is_query == role
            self._val_features[role].append(features[rows])
            self._val_labels[role].append(y[rows])

    def on_validation_epoch_end(self) -> None:
        self._log_diagnostics()
        # a rank that saw no batch of a role takes part with none: the kNN is a collective
        features, targets = self._val_features, self._val_labels
        no_features = torch.empty(0, self._knn_width, dtype=torch.float16, device=self.device)
        no_labels = torch.empty(0, dtype=torch.int64, device=self.device)
        roles = (False, True)  # is_query
        memory, queries = (torch.cat(features[r]) if features[r] else no_features for r in roles)
        memory_labels, labels = (torch.cat(targets[r]) if targets[r] else no_labels for r in roles)
        self._val_features, self._val_labels = {False: [], True: []}, {False: [], True: []}
        top1 = sharded_knn_accuracy(  # collective under DDP: every rank comes here
            queries,
            labels,
            memory,
            memory_labels,
            k=self.hparams.knn_k,
            temperature=self.hparams.knn_temperature,
            all_gather=self.all_gather if self._world() > 1 else single_process_gather,
        )
        if top1 is not None:  # the same on every rank: "max" keeps it exact, without a warning
            self.log("val/knn_top1", 100.0 * top1, prog_bar=True, sync_dist=True, reduce_fx="max")
        elif self._trainer is not None and not self.trainer.sanity_checking:
            limit = self.trainer.limit_val_batches
            why = "" if isinstance(limit, float) and limit == 1.0 else (
                f" Validation reads the whole train split (the kNN memory) before the test "
                f"split, so limit_val_batches={limit} cuts the test images first; for a quicker "
                "monitor, set data.limit_train_images and data.limit_test_images instead."
            )  # fmt: skip
            rank_zero_warn(f"no val/knn_top1: no test image or no train image was validated.{why}")

    @torch.no_grad()
    def _log_diagnostics(self) -> None:
        """Alignment, uniformity, softmax entropy and hardest-negative similarity on two fixed
        views of ``diagnostics_images`` training images (the same on every rank)."""
        n = self.hparams.diagnostics_images
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if n == 0 or not hasattr(datamodule, "fixed_views"):
            return
        if getattr(datamodule, "augmentation", "moco_v2") != "moco_v2":
            return  # one view per image: no positive pairs to measure
        if self._fixed_views is None or self._fixed_views[0] is not datamodule:
            self._fixed_views = (datamodule, datamodule.fixed_views(n))  # two (n, 3, S, S)
        x1, x2 = (self._as_input(x.to(self.device)) for x in self._fixed_views[1])
        q = F.normalize(self.encoder(x1).float(), dim=1)  # (n, dim)
        k = F.normalize(self.momentum_encoder(x2).float(), dim=1)  # (n, dim)
        negatives = self.queue.negatives() if self.queue.num_keys > 0 else None  # (K, dim)
        values = embedding_diagnostics(q, k, negatives, self.current_temperature())
        for name, value in values.items():  # the same on every rank: "max" keeps it exact
            self.log(f"val/{name}", value, sync_dist=True, reduce_fx="max")

    # ---- checkpoints ----------------------------------------------------------------------
    RESUME_FIXED = (
        "backbone", "cifar_stem", "head", "feature_dim", "hidden_dim", "queue_size",
        "learnable_temperature",
    )  # fmt: skip

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = rng_states()
        checkpoint["seed_scheme"] = SEED_SCHEME
        checkpoint["skipped_steps"] = self._skipped_steps
        if self._trainer is not None and self.trainer.state.fn == "fit":
            checkpoint["schedule_steps"] = self._total_steps()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # a checkpoint from before learnable_temperature existed had a fixed T
        saved = {"learnable_temperature": False, **checkpoint.get("hyper_parameters", {})}
        what = f"the checkpoint of step {checkpoint.get('global_step', '?')}"
        check_resumed_hyperparameters(self.hparams, saved, self.RESUME_FIXED, what)
        if "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])
        if checkpoint.get("seed_scheme", 1) != SEED_SCHEME:
            rank_zero_warn(
                f"{what} was written by an earlier infonce whose key shuffle drew from other "
                "seeds: the run continues, but not bit for bit as that version would have"
            )
        self._saved_schedule_steps = checkpoint.get("schedule_steps")
        self._skipped_steps = checkpoint.get("skipped_steps", 0)
