"""What every contrastive method of the trainer shares, once: the optimizer and its schedule,
the guard against a non-finite loss, checkpoints that resume exactly, and the evaluation.

A method (:mod:`infonce.trainer.moco`, :mod:`~infonce.trainer.moco_v3`,
:mod:`~infonce.trainer.simclr`, :mod:`~infonce.trainer.supcon`) subclasses
:class:`ContrastiveMethod`, builds ``self.encoder = nn.Sequential(backbone, projector)`` (the
layout export and the linear probe read: keys ``encoder.0.*`` are the backbone) and writes its
``training_step`` top to bottom with the helpers here:

- ``views, labels = self.views(batch)``; ``features = self.encoder[0](x)`` then its projector;
- ``loss = self.checked(loss, batch_idx)`` (None: a skipped non-finite step);
- ``loss + self.probe_loss(features, labels)`` trains the online linear probe on detached
  backbone features (solo-learn's online classifier), with no effect on the method;
- :meth:`after_optimizer_step` runs once per optimizer step, after it (EMA, enqueue).

Evaluation at every validation: the weighted kNN of the MoCo demo (``val/knn_top1``), the
online probe's test accuracy (``val/linear_top1``), and :mod:`infonce.diagnostics` on two fixed
views of some training images (``val/alignment``, ``val/uniformity``, ``val/entropy``,
``val/hardest_negative``).
"""

import math
import time
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn

from infonce._checks import check_choice, check_int, check_temperature
from infonce._device import host_to_device
from infonce.diagnostics import embedding_diagnostics
from infonce.distributed import single_process_gather
from infonce.knn import sharded_knn_accuracy
from infonce.trainer.backbones import build_backbone
from infonce.trainer.lars import LARS
from infonce.trainer.resume import check_resumed_hyperparameters
from infonce.trainer.rng import (
    PROBE_INIT,
    SEED_SCHEME,
    derive_seed,
    restore_rng_states,
    rng_states,
)
from infonce.trainer.schedules import (
    LR_SCHEDULES,
    TEMPERATURE_SCHEDULES,
    LRSchedule,
    lr_factor,
    momentum_at,
    temperature_at,
)
from infonce.trainer.split_batchnorm import split_batchnorms

__all__ = ["OPTIMIZERS", "ContrastiveMethod", "NonFiniteLossError"]

OPTIMIZERS = ("sgd", "lars", "adamw")
_CHOICES = {
    "optimizer": OPTIMIZERS,
    "lr_schedule": LR_SCHEDULES,
    "knn_feature": ("backbone", "head"),
    "nonfinite_loss": ("error", "skip"),
    "temperature_schedule": TEMPERATURE_SCHEDULES,
}


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the step was not applied."""


class ContrastiveMethod(L.LightningModule):
    """The base of every method; its arguments are every method's (see the module docstring).

    Args:
        backbone: the network under the projector (:func:`build_backbone`: ``convnet``, a
            torchvision classification model by name, ``timm:<name>``, or a ``class_path``).
        cifar_stem: the ResNets' 3x3 stride-1 stem without max-pool, for 32x32 images.
        backbone_kwargs: more arguments of the backbone's constructor.
        bn_splits: BatchNorm groups per device, in the backbone and the heads
            (:mod:`infonce.trainer.split_batchnorm`; 1: plain BatchNorm): one device trains
            as ``bn_splits`` devices without SyncBatchNorm would.
        optimizer: ``sgd``, ``lars`` (SGD with layer-wise scaling; biases and norms excluded,
            as SimCLR) or ``adamw``.
        lr: the base learning rate, for the global batch a config names.
        weight_decay, sgd_momentum: the optimizer's (``sgd_momentum`` is SGD's and LARS's
            momentum; AdamW ignores it).
        lars_eta: LARS's trust coefficient.
        warmup_epochs: linear warm-up, fractions allowed.
        lr_schedule: ``cosine`` (per step), ``cosine_per_epoch`` (the MoCo demo's) or
            ``constant``; see :func:`infonce.trainer.schedules.lr_factor`.
        temperature_schedule: ``constant`` (the method's ``temperature``) or ``cosine``
            between ``temperature_min`` and ``temperature_max`` with a period of
            ``temperature_period_epochs`` (Kukleva et al.; see
            :func:`infonce.trainer.schedules.temperature_at`), logged as ``train/temperature``.
        temperature_min, temperature_max, temperature_period_epochs: the cosine's.
        knn_k, knn_temperature: the weighted kNN monitor (200 and 0.1 in the MoCo demo).
        knn_feature: what the kNN compares: ``backbone`` features or the ``head``'s output.
        diagnostics_images: the diagnostics' fixed images per validation; 0 turns them off.
        online_probe: train a linear classifier on the detached backbone features of the
            first view (labels from the dataset) and log its test top-1 as
            ``val/linear_top1``; it never changes the method's weights.
        probe_lr: the probe's learning rate (scheduled as ``lr``, no weight decay).
        seed: seeds every draw the method makes (:func:`infonce.trainer.rng.derive_seed`).
        channels_last: convolutions in NHWC, oneDNN's and cuDNN's fastest layout.
        compile: ``torch.compile`` the networks in place (checkpoint keys unchanged).
        nonfinite_loss: ``error`` stops the run before a NaN/inf step's update; ``skip``
            skips such a step (its BatchNorm statistics undone) and warns.

    Raises:
        ValueError: an argument out of range, naming it.
    """

    RESUME_FIXED: tuple[str, ...] = ("backbone", "cifar_stem", "backbone_kwargs", "online_probe")
    SETUP_STATE_PREFIXES: tuple[str, ...] = ("probe.",)  # built in setup, from the data

    def __init__(
        self,
        backbone: str | dict = "resnet18",
        cifar_stem: bool = True,
        backbone_kwargs: dict | None = None,
        bn_splits: int = 1,
        optimizer: Literal["sgd", "lars", "adamw"] = "sgd",
        lr: float = 0.06,
        weight_decay: float = 5e-4,
        sgd_momentum: float = 0.9,
        lars_eta: float = 0.02,
        warmup_epochs: float = 0.0,
        lr_schedule: LRSchedule = "cosine",
        temperature_schedule: Literal["constant", "cosine"] = "constant",
        temperature_min: float = 0.1,
        temperature_max: float = 1.0,
        temperature_period_epochs: float = 400.0,
        knn_k: int = 200,
        knn_temperature: float = 0.1,
        knn_feature: Literal["backbone", "head"] = "backbone",
        diagnostics_images: int = 256,
        online_probe: bool = True,
        probe_lr: float = 0.1,
        seed: int = 0,
        channels_last: bool = True,
        compile: bool = False,
        nonfinite_loss: Literal["error", "skip"] = "error",
    ):
        super().__init__()
        self.save_hyperparameters()  # this class's arguments and the method's, up the chain
        for name, allowed in _CHOICES.items():
            check_choice(locals()[name], name, allowed)
        for name, value, ok, rule in (
            ("lr", lr, lr > 0, "> 0"),
            ("weight_decay", weight_decay, weight_decay >= 0, ">= 0"),
            ("sgd_momentum", sgd_momentum, 0 <= sgd_momentum < 1, "in [0, 1)"),
            ("lars_eta", lars_eta, lars_eta > 0, "> 0"),
            ("warmup_epochs", warmup_epochs, warmup_epochs >= 0, ">= 0"),
            ("probe_lr", probe_lr, probe_lr > 0, "> 0"),
        ):
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {value}")
        check_int(knn_k, "knn_k")
        check_int(diagnostics_images, "diagnostics_images", minimum=0)
        check_temperature(knn_temperature, "knn_temperature")
        check_temperature(temperature_min, "temperature_min")
        check_temperature(temperature_max, "temperature_max")
        if temperature_min > temperature_max:
            raise ValueError(f"temperature_min must be <= temperature_max, got "
                             f"{temperature_min} > {temperature_max}")  # fmt: skip
        if not (math.isfinite(temperature_period_epochs) and temperature_period_epochs > 0):
            raise ValueError(f"temperature_period_epochs must be > 0, got "
                             f"{temperature_period_epochs}")  # fmt: skip
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.probe: nn.Linear | None = None  # built at setup, when the classes are known
        self._probe_counts: Tensor | None = None  # (correct, seen) of this validation
        self._val: dict[bool, list[tuple[Tensor, Tensor]]] = {False: [], True: []}
        self._fixed_views: tuple[object, tuple[Tensor, Tensor]] | None = None
        self._last_batch_end: float | None = None
        self._skipped_steps = 0
        self._finite_since_step = False  # a finite micro-batch since the last optimizer step
        self._saved_schedule_steps: int | None = None

    # ---- networks --------------------------------------------------------------------------------
    def build_backbone(self) -> tuple[nn.Module, int]:
        """A fresh backbone of this method's arguments and its feature width."""
        hp = self.hparams
        return build_backbone(hp.backbone, bn_splits=hp.bn_splits, cifar_stem=hp.cifar_stem,
                              backbone_kwargs=hp.backbone_kwargs)  # fmt: skip

    def finish_networks(self, *modules: nn.Module) -> None:
        """Split the BatchNorms of ``modules`` (the heads' too) into ``bn_splits`` groups, put
        them in the memory layout asked for, and compile them (each part on its own: the
        backbone is also run alone, for the probe and the kNN)."""
        for module in modules:
            if self.hparams.bn_splits > 1:  # as R devices without SyncBatchNorm would
                split_batchnorms(module, self.hparams.bn_splits)
            module.to(memory_format=self._memory_format)
            if self.hparams.compile:
                for part in module.children() if isinstance(module, nn.Sequential) else [module]:
                    part.compile()

    def setup(self, stage: str) -> None:
        """Build the online probe once the data module says how many classes there are (the
        method has set ``self.backbone_width``); spare a method's ``queue`` DDP's buffer
        broadcast (every rank enqueues the same gathered keys, so the queues are equal)."""
        queue = getattr(self, "queue", None)
        if queue is not None:
            self._ddp_params_and_buffers_to_ignore = [
                f"queue.{n}" for n, _ in queue.named_buffers()
            ]
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        classes = getattr(datamodule, "num_classes", None)
        if self.hparams.online_probe and self.probe is None and classes:
            # from its own seed, the global RNG left as it was: the same probe on every rank
            # and under any strategy, and nothing else draws differently because of it
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.hparams.seed, PROBE_INIT))
                self.probe = nn.Linear(self.backbone_width, classes)
            self.probe.to(self.device)

    # ---- a training step's pieces ------------------------------------------------------------
    def views(self, batch) -> tuple[list[Tensor], Tensor]:
        """The augmented views of a train batch in the networks' layout and dtype, and the
        labels: ``((x1, x2, ...), y)``."""
        views, labels = batch
        return [self._as_input(x) for x in views], labels

    def _as_input(self, x: Tensor) -> Tensor:
        """Images in the networks' layout, and in their dtype under ``precision: 64-true``
        (Lightning casts the weights, not the views); a no-op otherwise."""
        dtype = self.dtype if self.dtype == torch.float64 else x.dtype
        return x.to(dtype).contiguous(memory_format=self._memory_format)

    def probe_loss(self, features: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of the online probe on detached backbone features (0 without it)."""
        if self.probe is None:
            return features.new_zeros(())
        logits = self.probe(features.detach().to(self.probe.weight.dtype))
        loss = F.cross_entropy(logits, labels)
        self.log("train/probe_loss", loss.detach())
        return loss

    def checked(self, loss: Tensor, batch_idx: int, buffers: list[Tensor] | None) -> Tensor | None:
        """``loss`` if it is finite on every rank; else raise, or (``skip``) put the BatchNorm
        statistics of ``buffers`` back (a snapshot from :meth:`buffer_snapshot`), warn and
        return None (Lightning then skips the step)."""
        finite = bool(torch.isfinite(loss))  # the one host sync of a step, by design
        if self.trainer.world_size > 1:  # every rank must take the same branch
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            self._finite_since_step = True
            return loss
        where = f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        if self.hparams.nonfinite_loss == "skip":
            with torch.no_grad():
                for saved, buffer in zip(buffers or [], self.buffers(), strict=False):
                    buffer.copy_(saved)
            self._skipped_steps += 1
            rank_zero_warn(f"train/loss is {float(loss.detach())} at {where}: step skipped")
            self.log("train/skipped_steps", float(self._skipped_steps))
            return None
        raise NonFiniteLossError(
            f"train/loss is {float(loss.detach())} at {where}; stopped before this step's "
            "optimizer update, enqueue and momentum update, and no checkpoint was written since "
            "the last one. Lower model.lr, or set model.nonfinite_loss: skip to skip such steps."
        )

    @torch.no_grad()
    def buffer_snapshot(self) -> list[Tensor] | None:
        """A copy of every buffer, for ``nonfinite_loss: skip`` to restore; None otherwise."""
        if self.hparams.nonfinite_loss != "skip":
            return None
        return [buffer.clone() for buffer in self.buffers()]

    def log_number(self, name: str, value: float, prog_bar: bool = False) -> None:
        """``self.log`` of a Python number, copied to the device without a host sync."""
        value = host_to_device(torch.tensor(value, dtype=torch.float32), self.device)
        self.log(name, value, prog_bar=prog_bar and self.bar_shown())

    def bar_shown(self) -> bool:
        """Whether a progress bar shows this run: Lightning reads every ``prog_bar`` value back
        to the host after each step (a device sync), also when no bar is there to show it."""
        return self._trainer is not None and self.trainer.progress_bar_callback is not None

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_batch_end is not None and batch_idx > 0:
            images = batch[1].shape[0] * self.trainer.world_size
            self.log_number("train/images_per_s", images / (now - self._last_batch_end), True)
        self._last_batch_end = now

    # ---- optimizer and schedule ------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's groups: the method's networks (``encoder``, and what a method adds by
        overriding this), then the probe (its own ``lr``, no weight decay)."""
        return [{"params": list(self.encoder.parameters()), "name": "encoder"}]

    # each group's learning rate is ``hparams[lr_key] * factor``, and its weight decay the
    # method's when ``decayed``; both re-read from this run's arguments, never from a resumed
    # optimizer state

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        groups = [{"lr_key": "lr", "decayed": True, **g} for g in self.parameter_groups()]
        if self.probe is not None:
            groups.append({"params": list(self.probe.parameters()), "name": "probe",
                           "lr_key": "probe_lr", "decayed": False})  # fmt: skip
        if hp.optimizer == "lars":  # biases and norm weights: plain SGD steps, as SimCLR
            groups = [part for group in groups for part in _split_for_lars(group)]
        for group in groups:
            group["lr"] = hp[group["lr_key"]]
            group["weight_decay"] = hp.weight_decay if group["decayed"] else 0.0
        if hp.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.optimizer == "lars":
            return LARS(groups, lr=hp.lr, momentum=hp.sgd_momentum,
                        weight_decay=hp.weight_decay, eta=hp.lars_eta)  # fmt: skip
        return torch.optim.SGD(groups, lr=hp.lr, momentum=hp.sgd_momentum,
                               weight_decay=hp.weight_decay)  # fmt: skip

    def on_train_start(self) -> None:
        """This run's momentum and weight decay win over a resumed optimizer state, and a
        schedule that changed length since the checkpoint is reported."""
        for group in self.optimizers().param_groups:
            if "momentum" in group:
                group["momentum"] = self.hparams.sgd_momentum
            group["weight_decay"] = self.hparams.weight_decay if group["decayed"] else 0.0
        saved, total = self._saved_schedule_steps, self.total_steps()
        if saved is not None and saved != total:
            rank_zero_warn(
                f"the learning-rate and momentum schedules now span {total} steps, the "
                f"checkpoint's spanned {saved} (max_epochs, max_steps or the data changed): "
                "they continue from the resumed step on the new length"
            )

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """Set the scheduled learning rates, step, then :meth:`after_optimizer_step` (once per
        optimizer step, also under gradient accumulation; not after a step whose every
        micro-batch was skipped as non-finite)."""
        factor = self.lr_factor(self.global_step)
        for group in optimizer.param_groups:
            group["lr"] = self.hparams[group["lr_key"]] * factor
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        updated, self._finite_since_step = self._finite_since_step, False
        if updated:  # Lightning counts a skipped step too, but with no gradient nothing moved
            self.after_optimizer_step()

    def after_optimizer_step(self) -> None:
        """What a method does once per optimizer step, after it (MoCo: enqueue, EMA)."""

    def lr_factor(self, step: int) -> float:
        """The learning rate at ``step`` as a factor of ``lr``."""
        per_epoch = self.steps_per_epoch()
        warmup = round(self.hparams.warmup_epochs * per_epoch)
        return lr_factor(step, self.total_steps(), per_epoch, warmup, self.hparams.lr_schedule)

    def scheduled_temperature(self, temperature: float) -> float:
        """The loss's ``T`` at the current step: ``temperature`` under
        the ``constant`` schedule, else the ``temperature_schedule``'s value; a pure function
        of the step, so a resumed run follows it exactly. Outside ``fit`` (a ``validate`` of a
        checkpoint: its diagnostics) there are no epochs to place the step in: ``temperature``."""
        hp = self.hparams
        if hp.temperature_schedule == "constant" or self.trainer.state.fn != "fit":
            return temperature
        return temperature_at(temperature, hp.temperature_schedule, self.global_step,
                              self.steps_per_epoch(),
                              hp.temperature_min, hp.temperature_max,
                              hp.temperature_period_epochs)  # fmt: skip

    def log_temperature(self, temperature: float | Tensor) -> None:
        """``train/temperature`` when it moves (a schedule, or a learned ``T``)."""
        if isinstance(temperature, Tensor):
            self.log("train/temperature", temperature.detach())
        elif self.hparams.temperature_schedule != "constant":
            self.log_number("train/temperature", temperature)

    def current_momentum(self) -> float:
        """The momentum encoder's EMA weight at this step, for a method that has one (its
        ``momentum`` and ``momentum_schedule`` arguments): :func:`momentum_at`."""
        hp = self.hparams
        return momentum_at(hp.momentum, hp.momentum_schedule, self.global_step, self.total_steps())

    def total_steps(self) -> int:
        """Optimizer steps of the whole schedule: ``max_epochs`` worth when set, else
        ``max_steps`` (which alone only stops a run early, so a stopped and resumed run follows
        the schedule of one that never stopped)."""
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            return self.steps_per_epoch() * trainer.max_epochs
        return max(1, trainer.max_steps)

    def steps_per_epoch(self) -> int:
        trainer = self.trainer
        return max(1, math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches))

    def world(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def all_gather_or_stack(self):
        """``all_gather`` under DDP, the world of one's otherwise."""
        return self.all_gather if self.world() > 1 else single_process_gather

    # ---- evaluation ------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val, self._probe_counts = {False: [], True: []}, None

    @torch.no_grad()
    def validation_step(self, batch, batch_idx: int) -> None:
        """Batches ``(x, y, is_query)``: this rank's shard of the train split (the kNN memory),
        then of the test split; kNN features kept in float16, the probe scored on the test."""
        if len(batch) != 3:
            raise ValueError(
                "validation needs the kNN memory: set data.knn_memory: true, so that validation "
                "batches carry the train split as memory (x, y, is_query)"
            )
        x, y, is_query = batch
        features = self.encoder[0](self._as_input(x))  # (B, F)
        monitored = self.encoder[1](features) if self.hparams.knn_feature == "head" else features
        monitored = F.normalize(monitored.float(), dim=1).half()
        for role in (False, True):
            rows = is_query == role
            self._val[role].append((monitored[rows], y[rows]))
        if self.probe is not None and bool(is_query.any()):
            x = features[is_query].to(self.probe.weight.dtype)
            correct = (self.probe(x).argmax(1) == y[is_query]).sum()
            counts = torch.stack([correct, is_query.sum()]).double()
            previous = self._probe_counts
            self._probe_counts = counts if previous is None else previous + counts

    def on_validation_epoch_end(self) -> None:
        self._log_diagnostics()
        self._log_knn()
        if self.probe is not None:  # every rank reduces, or the collective hangs
            counts = self._probe_counts
            counts = counts if counts is not None else torch.zeros(2, device=self.device).double()
            correct, seen = self.trainer.strategy.reduce(counts, reduce_op="sum")
            if seen > 0:
                top1 = (100.0 * correct / seen).float()
                self.log("val/linear_top1", top1, prog_bar=True, sync_dist=True, reduce_fx="max")

    def _log_knn(self) -> None:
        parts = self._val  # a rank that saw no batch of a role takes part with none
        width = self.backbone_width if self.hparams.knn_feature == "backbone" else (
            self.hparams.feature_dim
        )  # fmt: skip
        empty = torch.empty(0, width, dtype=torch.float16, device=self.device)
        no_labels = torch.empty(0, dtype=torch.int64, device=self.device)
        memory, queries = (torch.cat([f for f, _ in parts[r]]) if parts[r] else empty
                           for r in (False, True))  # fmt: skip
        memory_labels, labels = (torch.cat([y for _, y in parts[r]]) if parts[r] else no_labels
                                 for r in (False, True))  # fmt: skip
        self._val = {False: [], True: []}
        top1 = sharded_knn_accuracy(  # collective under DDP: every rank comes here
            queries, labels, memory, memory_labels, k=self.hparams.knn_k,
            temperature=self.hparams.knn_temperature, all_gather=self.all_gather_or_stack(),
        )  # fmt: skip
        if top1 is not None:  # the same on every rank: "max" keeps it exact
            self.log("val/knn_top1", 100.0 * top1, prog_bar=True, sync_dist=True, reduce_fx="max")
        elif self._trainer is not None and not self.trainer.sanity_checking:
            limit = self.trainer.limit_val_batches
            why = "" if isinstance(limit, float) and limit == 1.0 else (
                f" Validation reads the whole train split (the kNN memory) before the test "
                f"split, so limit_val_batches={limit} cuts the test images first; for a quicker "
                "monitor, set data.limit_train_images and data.limit_test_images instead."
            )  # fmt: skip
            rank_zero_warn(f"no val/knn_top1: no test image or no train image was validated.{why}")

    def diagnostic_embeddings(self, x1: Tensor, x2: Tensor):
        """``(query, key, negatives or None, temperature)`` for the diagnostics: by default the
        encoder's normalised outputs of two views and the method's ``temperature``."""
        q = F.normalize(self.encoder(x1).float(), dim=1)
        k = F.normalize(self.encoder(x2).float(), dim=1)
        return q, k, None, self.hparams.temperature

    @torch.no_grad()
    def _log_diagnostics(self) -> None:
        """The diagnostics of the fixed views; none in ``fit``'s sanity check, whose logs
        Lightning drops and which runs before the train loader exists (so before a
        temperature schedule can place the step in its epoch)."""
        n = self.hparams.diagnostics_images
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if n == 0 or not hasattr(datamodule, "fixed_views") or datamodule.views_per_image < 2:
            return
        if self.trainer.sanity_checking:
            return
        if self._fixed_views is None or self._fixed_views[0] is not datamodule:
            self._fixed_views = (datamodule, datamodule.fixed_views(n))  # two (n, 3, S, S)
        x1, x2 = (self._as_input(x.to(self.device)) for x in self._fixed_views[1])
        q, k, negatives, temperature = self.diagnostic_embeddings(x1, x2)
        for name, value in embedding_diagnostics(q, k, negatives, temperature).items():
            self.log(f"val/{name}", value, sync_dist=True, reduce_fx="max")

    # ---- checkpoints -----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = rng_states()
        checkpoint["seed_scheme"] = SEED_SCHEME
        checkpoint["skipped_steps"] = self._skipped_steps
        if self._trainer is not None and self.trainer.state.fn == "fit":
            checkpoint["schedule_steps"] = self.total_steps()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = {**self.CHECKPOINT_DEFAULTS, **checkpoint.get("hyper_parameters", {})}
        what = f"the checkpoint of step {checkpoint.get('global_step', '?')}"
        check_resumed_hyperparameters(self.hparams, saved, self.RESUME_FIXED, what)
        if "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])
        if checkpoint.get("seed_scheme", 1) != SEED_SCHEME:
            rank_zero_warn(
                f"{what} was written by an earlier infonce whose key shuffle drew from other "
                "seeds: the run continues, but not bit for bit as that version would have"
            )
        weight = checkpoint.get("state_dict", {}).get("probe.weight")
        if weight is not None and self.probe is None:  # loaded before setup built it
            self.probe = nn.Linear(weight.shape[1], weight.shape[0]).to(self.device)
        self._saved_schedule_steps = checkpoint.get("schedule_steps")
        self._skipped_steps = checkpoint.get("skipped_steps", 0)

    # what a checkpoint written before an argument existed implies for it
    CHECKPOINT_DEFAULTS: dict[str, Any] = {"backbone_kwargs": None, "online_probe": False}


def _split_for_lars(group: dict[str, Any]) -> list[dict[str, Any]]:
    """A group as LARS trains it: weights scaled and decayed; biases and 1-d normalisation
    parameters neither (SimCLR's and solo-learn's ``exclude_bias_n_norm``)."""
    weights = [p for p in group["params"] if p.ndim > 1]
    others = [p for p in group["params"] if p.ndim <= 1]
    parts = [dict(group, params=weights)] if weights else []
    if others:
        parts.append(dict(group, params=others, name=f"{group.get('name')}_bias_norm",
                          exclude_from_lars=True, decayed=False))  # fmt: skip
    return parts
