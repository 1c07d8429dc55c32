"""The command line of ``train.py``: LightningCLI over any LightningModule and ImageDataModule.

Every output of a run goes under ``trainer.default_root_dir`` (the run folder, one flag):
``checkpoints/`` (:class:`infonce.trainer.checkpoint.RunCheckpoint`), and ``logs/version_N/`` per
command (CSV metrics, TensorBoard events when installed, the ``config.yaml`` it ran with).
"""

import ctypes
import os
import sys

from lightning.fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from infonce.trainer.base import NonFiniteLossError
from infonce.trainer.checkpoint import (
    DEFAULT_SAVE_EVERY_N_STEPS,
    NonFiniteStateError,
    RunCheckpoint,
    RunFolderError,
    RunFolderInUseError,
    RunStopped,
    check_new_run_folder,
    check_writable_folder,
)
from infonce.trainer.checkpoint_io import AtomicCheckpointIO
from infonce.trainer.data.datamodule import ImageDataModule
from infonce.trainer.data.scan import UnreadableImagesError
from infonce.trainer.data.sources import DatasetNotFoundError
from infonce.trainer.errors import (
    ConfigError,
    check_checkpoint_file,
    checkpoint_candidates,
    innermost,
    instantiation_message,
    parser_message,
)
from infonce.trainer.export import NotABackboneError
from infonce.trainer.linear_probe import PretrainedNotFoundError
from infonce.trainer.moco import BNGuardError
from infonce.trainer.resume import ResumeConflictError

# Errors that end a run with their message alone: each says what happened and what to do.
CLEAR_ERRORS = (
    BNGuardError,
    ConfigError,
    DatasetNotFoundError,
    NonFiniteLossError,
    NonFiniteStateError,
    NotABackboneError,
    PretrainedNotFoundError,
    ResumeConflictError,
    RunFolderError,
    RunFolderInUseError,
    UnreadableImagesError,
)
KEEP_FREED_MEMORY = "INFONCE_KEEP_FREED_MEMORY"
SHOW_TRACEBACK = "INFONCE_TRACEBACK"  # =1: let every error through with its traceback
# what a constructor raises when it refuses its arguments (LightningCLI wraps it)
_REFUSALS = (ValueError, FileNotFoundError, ImportError, MisconfigurationException)
# what each config group builds, to tell which constructor refused its arguments
_GROUPS = {
    "model": LightningModule,
    "data": LightningDataModule,
    "trainer": Trainer,
    "trainer.callbacks": Callback,
}


class _Parser(LightningArgumentParser):
    """LightningCLI's parser, whose errors are one line naming the option (no usage dump)."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:  # jsonargparse trying alternatives: its own exception
            super().error(message, ex)
        raise ConfigError(parser_message(message)) from None


class CLI(LightningCLI):
    """LightningCLI whose model is chosen by ``class_path`` (a method, LinearProbe) in the YAML.

    Differences from LightningCLI's defaults:

    - the run guarantees apply to every run (:func:`with_run_guarantees`): a config without
      its own :class:`RunCheckpoint` gets one that saves ``last.ckpt`` (every
      ``DEFAULT_SAVE_EVERY_N_STEPS`` steps, at the end, and on a stop signal), and checkpoints
      are written by :class:`AtomicCheckpointIO` unless a config names another checkpoint IO;
    - without a ``trainer.logger``, a CSVLogger writes to ``<default_root_dir>/logs`` (and a
      TensorBoardLogger beside it when tensorboard is installed);
    - ``--ckpt_path FILE`` does not parse the checkpoint's hyperparameters over the command
      line: the run uses its own configuration and the module checks it against the
      checkpoint (:mod:`infonce.trainer.resume`), so an explicit ``--model.lr`` is never dropped;
    - a new ``fit`` refuses to start in a run folder that holds another run's checkpoints, and
      checks that its folders can be written before it reads any data;
    - every mistake in the arguments is a :class:`ConfigError` of one line naming the option:
      the parser's, the constructors' (the model's own checks included) and ``--ckpt_path``'s.
    """

    def __init__(self, args=None):
        super().__init__(
            LightningModule, ImageDataModule, subclass_mode_model=True, args=args,
            parser_class=_Parser,
        )  # fmt: skip

    def instantiate_classes(self) -> None:
        """Build model, data and trainer; a constructor's refusal becomes one line naming the
        option (LightningCLI would bury it in the parser's union report)."""
        try:
            super().instantiate_classes()
        except Exception as err:
            # a constructor refusing its arguments; anything else is a bug: its traceback
            if os.environ.get(SHOW_TRACEBACK) or not isinstance(innermost(err), _REFUSALS):
                raise
            config = self.config.get(str(self.subcommand), self.config)
            model = config.get("model")
            options = {
                "model": _names(model.get("init_args") if model is not None else None),
                "data": _names(config.get("data")),
                "trainer": _names(config.get("trainer")),
            }
            raise ConfigError(instantiation_message(err, _GROUPS, options)) from err

    def _parse_ckpt_path(self) -> None:
        """Keep the run's configuration as given (LightningCLI would merge the checkpoint's
        hyperparameters over it); the module compares the two when the checkpoint loads."""

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") in (None, True) and "logger" not in kwargs:
            root = config.get("default_root_dir") or os.getcwd()
            kwargs["logger"] = CSVLogger(root, name="logs")
        kwargs.update(with_run_guarantees(config))
        return super().instantiate_trainer(**kwargs)

    def after_instantiate_classes(self) -> None:
        add_tensorboard_beside_csv(self.trainer, bool(_TENSORBOARD_AVAILABLE))

    def before_fit(self) -> None:
        """Refuse, before any data is read: a new run in a used folder, folders that cannot be
        written, and a ``--ckpt_path`` that is not a checkpoint of this model."""
        ckpt_path = self._get(self.config_init, "ckpt_path")
        check_writable_folder(self.trainer.default_root_dir, "run folder")
        for logger in self.trainer.loggers:
            if getattr(logger, "save_dir", None):
                check_writable_folder(logger.save_dir, "log folder")
        for callback in self._run_checkpoints():
            folder = callback.resolve_dirpath(self.trainer)
            check_writable_folder(folder, "checkpoint folder")
            check_new_run_folder(folder, ckpt_path)
        self._check_ckpt_path("fit")

    def before_validate(self) -> None:
        self._check_ckpt_path("validate")

    def before_test(self) -> None:
        self._check_ckpt_path("test")

    def before_predict(self) -> None:
        self._check_ckpt_path("predict")

    def _run_checkpoints(self) -> list[RunCheckpoint]:
        return [c for c in self.trainer.checkpoint_callbacks if isinstance(c, RunCheckpoint)]

    def _check_ckpt_path(self, subcommand: str) -> None:
        """``--ckpt_path``: a file must be a checkpoint of this model; ``last`` must exist
        unless ``fit`` starts a run with it (as a requeued job does); ``best`` is only known
        within the process that trained, so a new command is told the files instead."""
        ckpt_path = self._get(self.config_init, "ckpt_path")
        if ckpt_path is None or ckpt_path in ("hpc", "registry"):
            return
        if "://" in str(ckpt_path) and not str(ckpt_path).startswith("file://"):
            return  # a remote file (s3://, ...): Lightning reads it, its errors are its own
        callbacks = self._run_checkpoints()
        folders = sorted({c.resolve_dirpath(self.trainer) for c in callbacks})
        if ckpt_path in ("last", "best"):
            found = {p for c in callbacks for p in c._find_last_checkpoints(self.trainer)}
            if ckpt_path == "best" or (not found and subcommand != "fit"):
                files = [f for folder in folders for f in checkpoint_candidates(folder)]
                where = ", ".join(files[:4]) if files else f"none in {', '.join(folders) or '?'}"
                what = (
                    "names the best checkpoint of a fit in this same process"
                    if ckpt_path == "best"
                    else "found no last checkpoint"
                )
                raise ConfigError(
                    f"--ckpt_path {ckpt_path} {what}; give a checkpoint file instead "
                    f"(this run's: {where})"
                )
            if not found:
                return  # fit starts afresh, as Lightning does (it warns)
            ckpt_path = max(found, key=os.path.getmtime)
        check_checkpoint_file(str(ckpt_path).removeprefix("file://"), self.model, subcommand)


def with_run_guarantees(config: dict) -> dict:
    """The ``callbacks`` and ``plugins`` of a trainer config, with the run guarantees added
    where the config does not give them: a :class:`RunCheckpoint` with ``save_last`` (the run
    folder, the final save, stop signals, no non-finite state; every
    ``DEFAULT_SAVE_EVERY_N_STEPS`` optimizer steps) unless one is there, and
    :class:`AtomicCheckpointIO` unless a checkpoint IO plugin is there. A config that turns
    checkpointing off (``enable_checkpointing: false``) gets no callback.

    Args:
        config: the trainer's arguments as LightningCLI instantiated them (callbacks and
            plugins as objects).

    Returns:
        ``{"callbacks": [...], "plugins": [...]}``: the config's own first, in their order.
    """
    callbacks, plugins = _as_list(config.get("callbacks")), _as_list(config.get("plugins"))
    has_last = any(isinstance(c, RunCheckpoint) and c.save_last for c in callbacks)
    if config.get("enable_checkpointing", True) is not False and not has_last:
        every = DEFAULT_SAVE_EVERY_N_STEPS
        callbacks.append(RunCheckpoint(save_last=True, save_top_k=0, every_n_train_steps=every))
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return {"callbacks": callbacks, "plugins": plugins}


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]


def _names(group) -> list[str]:
    """The argument names of a config group (a jsonargparse Namespace), or none."""
    return list(vars(group)) if group is not None and hasattr(group, "__dict__") else []


def add_tensorboard_beside_csv(trainer: Trainer, available: bool) -> None:
    """Give every CSVLogger of ``trainer`` a TensorBoardLogger twin in the same folder.

    Does nothing when tensorboard is not ``available`` or a TensorBoardLogger is configured.
    """
    loggers = list(trainer.loggers)
    if not available or any(isinstance(lg, TensorBoardLogger) for lg in loggers):
        return
    twins = [
        TensorBoardLogger(save_dir=lg.save_dir, name=lg.name, version=lg.version)
        for lg in loggers
        if isinstance(lg, CSVLogger)
    ]
    trainer.loggers = loggers + twins


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the system.

    A training step allocates and frees the same large tensors every time. By default glibc
    serves each one with a fresh ``mmap`` and unmaps it on free, so every step pays page faults
    on untouched memory again. ``M_MMAP_MAX = 0`` serves everything from the heap and
    ``M_TRIM_THRESHOLD`` at its maximum never gives the top of the heap back: the process keeps
    its peak footprint, which a training run reaches in its first steps anyway. ``train.py``
    calls it only when ``INFONCE_KEEP_FREED_MEMORY=1`` is set (README: 13% shorter cpu_quick steps).

    Returns:
        True when it took effect (Linux with glibc), else False and nothing changed.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def main(args=None) -> None:
    """Run the CLI. A stop signal exits with 128 + its number after saving the step reached;
    the errors of ``CLEAR_ERRORS`` print one line ``error: ...`` without a traceback and exit
    2 (a wrong argument: :class:`ConfigError`) or 1 (the run could not go on). With
    ``INFONCE_TRACEBACK=1`` they propagate with their traceback instead."""
    if os.environ.get(KEEP_FREED_MEMORY, "0") not in ("", "0"):
        keep_freed_memory()
    try:
        CLI(args=args)
    except RunStopped as stop:
        print(f"train.py: {stop}", file=sys.stderr)
        sys.exit(stop.code)
    except CLEAR_ERRORS as err:
        if os.environ.get(SHOW_TRACEBACK):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2 if isinstance(err, ConfigError) else 1)
