import os
import stat

import pytest
import torch

from infonce.trainer.checkpoint_io import AtomicCheckpointIO


def _leftovers(directory):
    return sorted(name for name in os.listdir(directory) if name.startswith(".tmp-"))


def test_save_writes_a_complete_loadable_file_and_no_temporary(tmp_path):
    path = tmp_path / "sub" / "last.ckpt"  # the directory is created
    checkpoint = {"state_dict": {"w": torch.arange(1000.0)}, "global_step": 7}
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)
    loaded = AtomicCheckpointIO().load_checkpoint(path)
    assert loaded["global_step"] == 7
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(1000.0))
    assert _leftovers(path.parent) == []


def test_save_replaces_an_existing_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)
    io.save_checkpoint({"step": 2}, str(path))
    assert io.load_checkpoint(path) == {"step": 2}


def test_saved_file_gets_the_permissions_of_a_new_file_not_mkstemps_0600(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    (tmp_path / "plain").write_bytes(b"")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


def test_save_that_fails_midway_keeps_the_old_checkpoint_and_leaves_no_temporary(
    tmp_path, monkeypatch
):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(100)}, path)
    before = path.read_bytes()

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(100)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert io.load_checkpoint(path)["step"] == 1
    assert _leftovers(tmp_path) == []


def test_interrupted_save_cleans_up_too(tmp_path, monkeypatch):
    def interrupt(obj, f, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupt)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    assert os.listdir(tmp_path) == []


def test_failed_rename_removes_the_temporary(tmp_path, monkeypatch):
    def fail(src, dst):
        raise PermissionError("read-only")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(PermissionError):
        AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    assert os.listdir(tmp_path) == []


def test_storage_options_are_rejected_as_in_torch_checkpoint_io(tmp_path):
    with pytest.raises(TypeError, match="storage_options"):
        AtomicCheckpointIO().save_checkpoint({}, tmp_path / "x.ckpt", storage_options={"a": 1})


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before")
def test_trainer_fit_saves_and_resumes_through_atomic_checkpoint_io(tmp_path, monkeypatch):
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    def trainer(max_steps):
        return Trainer(
            default_root_dir=tmp_path,
            accelerator="cpu",
            max_steps=max_steps,
            limit_val_batches=0,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            plugins=[AtomicCheckpointIO()],
            callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
        )

    replaced = []
    real_replace = os.replace

    def spy_replace(src, dst):
        replaced.append((os.path.basename(src), os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy_replace)
    first = trainer(max_steps=3)
    assert isinstance(first.strategy.checkpoint_io, AtomicCheckpointIO)
    first.fit(BoringModel())
    last = tmp_path / "ckpt" / "last.ckpt"
    assert last.is_file() and not last.is_symlink()
    assert torch.load(last, weights_only=False)["global_step"] == 3
    BoringModel.load_from_checkpoint(last)  # loads into a fresh model
    assert _leftovers(last.parent) == []
    assert any(src.startswith(".tmp-") and dst == "last.ckpt" for src, dst in replaced)

    resumed = trainer(max_steps=5)
    resumed.fit(BoringModel(), ckpt_path=last)
    assert resumed.global_step == 5
    assert torch.load(last, weights_only=False)["global_step"] == 5


def test_lightning_cli_builds_the_plugin_from_a_class_path(tmp_path, monkeypatch):
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel

    monkeypatch.setattr("sys.argv", ["train.py"])
    config = {
        "seed_everything": False,
        "trainer": {
            "plugins": [{"class_path": "infonce.trainer.checkpoint_io.AtomicCheckpointIO"}],
            "logger": False,
            "default_root_dir": str(tmp_path),
        },
    }
    cli = LightningCLI(BoringModel, BoringDataModule, args=config, run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
