"""The command line of ``train.py``: LightningCLI over any LightningModule and ImageDataModule."""

import ctypes
import sys

from lightning.fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from infonce.data import ImageDataModule
from infonce.datasets import DatasetNotFoundError


class CLI(LightningCLI):
    """LightningCLI whose model is chosen by ``class_path`` (MoCo, LinearProbe) in the YAML.

    CSV logs are what the configs ask for; when tensorboard is installed, a TensorBoard log is
    written beside each CSV log as well.
    """

    def __init__(self, args=None):
        super().__init__(LightningModule, ImageDataModule, subclass_mode_model=True, args=args)

    def after_instantiate_classes(self) -> None:
        add_tensorboard_beside_csv(self.trainer, bool(_TENSORBOARD_AVAILABLE))


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
    on untouched memory again; on 2 CPU cores that was 20% of a MoCo step (``convnet``,
    batch 256, bf16: 42 ms -> 34 ms median). ``M_MMAP_MAX = 0`` serves everything from the heap
    and ``M_TRIM_THRESHOLD`` at its maximum never gives the top of the heap back: the process
    keeps its peak footprint, which a training run reaches in its first steps anyway.

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
    """Run the CLI; a missing dataset is one readable message, not a traceback."""
    keep_freed_memory()
    try:
        CLI(args=args)
    except DatasetNotFoundError as err:
        sys.exit(f"error: {err}")
