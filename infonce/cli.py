"""The command line of ``train.py``: LightningCLI over any LightningModule and ImageDataModule."""

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


def main(args=None) -> None:
    """Run the CLI; a missing dataset is one readable message, not a traceback."""
    try:
        CLI(args=args)
    except DatasetNotFoundError as err:
        sys.exit(f"error: {err}")
