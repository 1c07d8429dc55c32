import platform
import subprocess
import sys

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
    # in a process of its own: mallopt's settings would stay for every later test here
    code = "from infonce.trainer.cli import keep_freed_memory; print(keep_freed_memory())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert result.stdout.strip() == str(expected)


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
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "error: cannot resume: queue_size=32 (checkpoint: 64)\n"


def test_a_wrong_argument_exits_with_2_and_the_traceback_only_when_asked(monkeypatch, capsys):
    from infonce.trainer.errors import ConfigError

    def refuse(args=None):
        raise ConfigError("--model.lr: lr must be > 0, got -1.0")

    monkeypatch.setattr(infonce.trainer.cli, "CLI", refuse)
    monkeypatch.delenv(infonce.trainer.cli.SHOW_TRACEBACK, raising=False)
    with pytest.raises(SystemExit) as exit_:
        infonce.trainer.cli.main([])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: --model.lr: lr must be > 0, got -1.0\n"
    monkeypatch.setenv(infonce.trainer.cli.SHOW_TRACEBACK, "1")
    with pytest.raises(ConfigError):
        infonce.trainer.cli.main([])
