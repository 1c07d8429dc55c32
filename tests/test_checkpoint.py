"""RunCheckpoint, in process: the run folder, the final state, never a non-finite state.

Stop signals and exact resume run ``train.py`` in fresh processes: test_resume.py.
"""

import signal

import lightning as L
import pytest
import torch
from train_helpers import tiny_data, tiny_moco, trainer

from infonce.trainer.checkpoint import (
    NonFiniteStateError,
    RunCheckpoint,
    RunFolderInUseError,
    RunStopped,
    check_new_run_folder,
    first_nonfinite,
)


def fit(tmp_path, tiny_folder, model=None, callbacks=None, **kwargs):
    t = trainer(
        default_root_dir=tmp_path,
        enable_checkpointing=True,
        callbacks=callbacks or [RunCheckpoint(save_last=True, save_top_k=0, every_n_train_steps=4)],
        **kwargs,
    )
    t.fit(model or tiny_moco(), tiny_data(tiny_folder))
    return t


def test_without_dirpath_checkpoints_go_to_the_run_folder(tiny_folder, tmp_path):
    fit(tmp_path, tiny_folder, max_steps=4)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize(("stop", "final"), [({"max_steps": 5}, 5), ({"max_epochs": 2}, 6)])
def test_the_final_step_is_saved_whatever_the_interval(tiny_folder, tmp_path, stop, final):
    fit(tmp_path, tiny_folder, **stop)  # every 4 steps: 4, then the end
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == final


def test_a_new_run_refuses_a_folder_with_checkpoints_and_a_resume_does_not(tiny_folder, tmp_path):
    fit(tmp_path, tiny_folder, max_steps=2)
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(RunFolderInUseError, match="already holds the checkpoints"):
        fit(tmp_path, tiny_folder, max_steps=4)
    assert last.read_bytes() == before
    t = trainer(
        default_root_dir=tmp_path,
        enable_checkpointing=True,
        callbacks=[RunCheckpoint(save_last=True, save_top_k=0, every_n_train_steps=4)],
        max_steps=4,
    )
    t.fit(tiny_moco(), tiny_data(tiny_folder), ckpt_path="last")  # found in the run folder
    assert torch.load(last, weights_only=True)["global_step"] == 4


def test_check_new_run_folder_names_the_files_and_suggests_another_folder(tmp_path):
    check_new_run_folder(tmp_path / "missing")  # nothing there: fine
    folder = tmp_path / "runs" / "a" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("")
    check_new_run_folder(folder)  # no checkpoints: fine
    (folder / "last.ckpt").write_bytes(b"")
    with pytest.raises(RunFolderInUseError, match=r"\(last.ckpt\).*runs/a-2"):
        check_new_run_folder(folder)
    with pytest.raises(RunFolderInUseError):  # resuming another run's checkpoint here
        check_new_run_folder(folder, str(tmp_path / "elsewhere" / "last.ckpt"))
    check_new_run_folder(folder, str(folder / "last.ckpt"))  # continuing this run
    check_new_run_folder(folder, "last")


def test_a_nonfinite_state_is_never_written_over_a_finite_checkpoint(tiny_folder, tmp_path):
    class PoisonAtStep4(L.Callback):  # runs before the checkpoint callbacks (Lightning's order)
        def on_train_batch_end(self, trainer, module, *args):
            if trainer.global_step == 4:
                with torch.no_grad():
                    module.encoder[0].layers[0].weight[0, 0, 0, 0] = torch.inf

    checkpoint = RunCheckpoint(save_last=True, save_top_k=0, every_n_train_steps=2)
    with pytest.raises(NonFiniteStateError, match=r"step 4.*'encoder.0.layers.0.weight'"):
        fit(tmp_path, tiny_folder, callbacks=[PoisonAtStep4(), checkpoint], max_steps=6)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert first_nonfinite(ckpt["state_dict"]) is None


def test_first_nonfinite_names_the_first_bad_floating_tensor():
    state = {"step": torch.tensor(3), "a": torch.ones(2), "b": torch.tensor([1.0, torch.nan])}
    assert first_nonfinite(state) == "b"
    assert first_nonfinite({"a": torch.ones(2), "n": torch.tensor(1)}) is None


def test_a_requested_stop_saves_the_step_and_raises_at_the_next_hook(tiny_folder, tmp_path):
    class SendSigtermAtStep3(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 3:
                signal.raise_signal(signal.SIGTERM)  # handled by RunCheckpoint: no exit here

    checkpoint = RunCheckpoint(save_last=True, save_top_k=0, every_n_train_steps=50)
    with pytest.raises(RunStopped) as stop:
        fit(tmp_path, tiny_folder, callbacks=[SendSigtermAtStep3(), checkpoint], max_steps=9)
    assert stop.value.code == 128 + signal.SIGTERM and stop.value.step == 3
    assert "stopped by SIGTERM after step 3" in str(stop.value)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert signal.getsignal(signal.SIGTERM) != checkpoint._on_signal  # handlers restored


def test_after_a_normal_fit_the_processs_own_signal_handlers_are_back(tiny_folder, tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    fit(tmp_path, tiny_folder, max_steps=2)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_signal_during_a_validation_stops_when_it_ends(tiny_folder, tmp_path):
    class SigtermDuringValidation(L.Callback):
        def on_validation_batch_end(self, trainer, *args):
            if not trainer.sanity_checking:
                signal.raise_signal(signal.SIGTERM)

    checkpoint = RunCheckpoint(save_last=True, save_top_k=0, every_n_train_steps=50)
    with pytest.raises(RunStopped) as stop:
        fit(tmp_path, tiny_folder, callbacks=[SigtermDuringValidation(), checkpoint],
            max_steps=9, limit_val_batches=1.0, check_val_every_n_epoch=1)  # fmt: skip
    assert stop.value.step == 3  # the validation after epoch 0, not a later step
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
