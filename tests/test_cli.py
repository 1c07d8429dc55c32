import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger

import infonce.trainer.cli
from infonce.trainer.cli import add_tensorboard_beside_csv


class FakeTensorBoardLogger:
    def __init__(self, save_dir, name, version):
        self.save_dir, self.name, self.version = save_dir, name, version


def csv_trainer(tmp_path) -> L.Trainer:
    return L.Trainer(logger=CSVLogger(tmp_path, name="logs"), accelerator="cpu")


def test_tensorboard_log_is_added_beside_the_csv_log_when_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(infonce.trainer.cli, "TensorBoardLogger", FakeTensorBoardLogger)
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

    from infonce.trainer.cli import keep_freed_memory

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected


def test_train_py_tunes_malloc_only_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(infonce.trainer.cli, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(infonce.trainer.cli, "CLI", lambda args=None: None)
    monkeypatch.delenv(infonce.trainer.cli.KEEP_FREED_MEMORY, raising=False)
    infonce.trainer.cli.main([])
    assert calls == []
    monkeypatch.setenv(infonce.trainer.cli.KEEP_FREED_MEMORY, "1")
    infonce.trainer.cli.main([])
    assert calls == [1]


def test_a_clear_error_exits_with_its_message_alone(monkeypatch, capsys):
    from infonce.trainer.resume import ResumeConflictError

    def refuse(args=None):
        raise ResumeConflictError("cannot resume: queue_size=32 (checkpoint: 64)")

    monkeypatch.setattr(infonce.trainer.cli, "CLI", refuse)
    with pytest.raises(SystemExit) as exit_:
        infonce.trainer.cli.main([])
    assert exit_.value.code == "error: cannot resume: queue_size=32 (checkpoint: 64)"
