"""The command line of ``train.py``: LightningCLI over any LightningModule and ImageDataModule.

Every output of a run goes under ``trainer.default_root_dir`` (the run folder, one flag):
``checkpoints/`` (:class:`infonce.trainer.checkpoint.RunCheckpoint`), and ``logs/version_N/`` per
command (CSV metrics, TensorBoard events when installed, the ``config.yaml`` it ran with).
"""

import ctypes
import os
import sys

from lightning.fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from infonce.trainer.checkpoint import (
    NonFiniteStateError,
    RunCheckpoint,
    RunFolderInUseError,
    RunStopped,
    check_new_run_folder,
)
from infonce.trainer.data.datamodule import ImageDataModule
from infonce.trainer.data.sources import DatasetNotFoundError
from infonce.trainer.export import NotABackboneError
from infonce.trainer.linear_probe import PretrainedNotFoundError
from infonce.trainer.moco import BNGuardError, NonFiniteLossError
from infonce.trainer.resume import ResumeConflictError

# Errors that end a run with their message alone: each says what happened and what to do.
CLEAR_ERRORS = (
    BNGuardError,
    DatasetNotFoundError,
    NonFiniteLossError,
    NonFiniteStateError,
    NotABackboneError,
    PretrainedNotFoundError,
    ResumeConflictError,
    RunFolderInUseError,
)
KEEP_FREED_MEMORY = "INFONCE_KEEP_FREED_MEMORY"


class CLI(LightningCLI):
    """LightningCLI whose model is chosen by ``class_path`` (MoCo, LinearProbe) in the YAML.

    Differences from LightningCLI's defaults:

    - without a ``trainer.logger``, a CSVLogger writes to ``<default_root_dir>/logs`` (and a
      TensorBoardLogger beside it when tensorboard is installed);
    - ``--ckpt_path FILE`` does not parse the checkpoint's hyperparameters over the command
      line: the run uses its own configuration and the module checks it against the
      checkpoint (:mod:`infonce.trainer.resume`), so an explicit ``--model.lr`` is never dropped;
    - a new ``fit`` refuses to start in a run folder that holds another run's checkpoints.
    """

    def __init__(self, args=None):
        super().__init__(LightningModule, ImageDataModule, subclass_mode_model=True, args=args)

    def _parse_ckpt_path(self) -> None:
        """Keep the run's configuration as given (LightningCLI would merge the checkpoint's
        hyperparameters over it); the module compares the two when the checkpoint loads."""

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") in (None, True) and "logger" not in kwargs:
            root = config.get("default_root_dir") or os.getcwd()
            kwargs["logger"] = CSVLogger(root, name="logs")
        return super().instantiate_trainer(**kwargs)

    def after_instantiate_classes(self) -> None:
        add_tensorboard_beside_csv(self.trainer, bool(_TENSORBOARD_AVAILABLE))

    def before_fit(self) -> None:
        """Refuse a new run in a used folder now, before the data is read."""
        ckpt_path = self._get(self.config_init, "ckpt_path")
        for callback in self.trainer.checkpoint_callbacks:
            if isinstance(callback, RunCheckpoint):
                check_new_run_folder(callback.resolve_dirpath(self.trainer), ckpt_path)


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
    the errors of ``CLEAR_ERRORS`` print their message without a traceback and exit 1."""
    if os.environ.get(KEEP_FREED_MEMORY, "0") not in ("", "0"):
        keep_freed_memory()
    try:
        CLI(args=args)
    except RunStopped as stop:
        print(f"train.py: {stop}", file=sys.stderr)
        sys.exit(stop.code)
    except CLEAR_ERRORS as err:
        sys.exit(f"error: {err}")
