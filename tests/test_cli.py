import lightning as L
from lightning.pytorch.loggers import CSVLogger

import infonce.cli
from infonce.cli import add_tensorboard_beside_csv


class FakeTensorBoardLogger:
    def __init__(self, save_dir, name, version):
        self.save_dir, self.name, self.version = save_dir, name, version


def csv_trainer(tmp_path) -> L.Trainer:
    return L.Trainer(logger=CSVLogger(tmp_path, name="logs"), accelerator="cpu")


def test_tensorboard_log_is_added_beside_the_csv_log_when_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(infonce.cli, "TensorBoardLogger", FakeTensorBoardLogger)
    trainer = csv_trainer(tmp_path)
    add_tensorboard_beside_csv(trainer, available=True)
    csv, tb = trainer.loggers
    assert isinstance(tb, FakeTensorBoardLogger)
    assert (tb.save_dir, tb.name, tb.version) == (csv.save_dir, "logs", csv.version)


def test_no_tensorboard_log_when_tensorboard_is_missing(tmp_path):
    trainer = csv_trainer(tmp_path)
    add_tensorboard_beside_csv(trainer, available=False)
    assert len(trainer.loggers) == 1 and isinstance(trainer.loggers[0], CSVLogger)


def test_keep_freed_memory_takes_effect_on_glibc():
    import platform

    from infonce.cli import keep_freed_memory

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected
