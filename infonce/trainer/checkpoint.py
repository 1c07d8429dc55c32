"""The checkpoint callback of a training run: what a run leaves behind is always its last state.

:class:`RunCheckpoint` is Lightning's ``ModelCheckpoint`` with four guarantees added:

- **One run folder.** Without ``dirpath`` it writes to ``<trainer.default_root_dir>/checkpoints``,
  so ``--trainer.default_root_dir DIR`` moves every output of a run with one flag. A run that
  does not resume from a checkpoint of that folder refuses to start where another run's
  checkpoints are, instead of overwriting them.
- **The final state is saved.** With ``save_last``, ``last.ckpt`` holds the state after the last
  optimizer step when ``fit`` ends: at ``max_steps`` it is written right after that step (the
  same point as the periodic saves, so extending the run with a larger ``max_steps`` continues
  exactly), otherwise when training ends.
- **Stop signals end the run at a step boundary.** While ``fit`` trains, the first SIGINT
  (Ctrl-C) or SIGTERM (a scheduler's pre-emption, ``kill``) lets the current step finish, saves
  ``last.ckpt`` and raises :class:`RunStopped`, which exits the process with status 128 + the
  signal number (130, 143). A second Ctrl-C aborts at once, keeping the previous checkpoint.
  Under DDP the ranks agree after every step, so all stop after the same step. A signal that
  arrives during a validation takes effect when that validation ends.
- **A non-finite state is never written.** A save whose model state holds NaN or inf raises
  :class:`NonFiniteStateError` and leaves the previous file in place.

Only a callback with ``save_last`` handles signals; give a run exactly one. ``train.py`` adds
one (every ``DEFAULT_SAVE_EVERY_N_STEPS`` steps) to a config that has none.
"""

import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_info

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# how often the RunCheckpoint that train.py adds to a config without one writes last.ckpt
DEFAULT_SAVE_EVERY_N_STEPS = 500


class RunStopped(SystemExit):
    """``fit`` was stopped by a signal after saving; ``code`` is 128 + the signal number."""

    def __init__(self, signum: int, step: int, path: str | None):
        self.signum, self.step, self.path = signum, step, path
        super().__init__(128 + signum)

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        saved = f"saved {self.path}" if self.path else "no checkpoint configured to keep it"
        return f"stopped by {name} after step {self.step}: {saved}; continue with --ckpt_path last"


class NonFiniteStateError(RuntimeError):
    """A checkpoint was about to store NaN or inf: refused, the previous file is kept."""


class RunFolderInUseError(FileExistsError):
    """A new run would overwrite the checkpoints of an earlier run in the same folder."""


class RunFolderError(OSError):
    """A folder a run must write (run folder, checkpoints, logs) cannot be created or written."""


def check_writable_folder(path: str | os.PathLike, what: str) -> None:
    """Create the folder ``path`` if needed and check that a file can be written in it.

    Run before training, so that a run never trains for hours to fail at its first save.

    Raises:
        RunFolderError: ``path`` is a file, or cannot be created or written (the message names
            ``what``, the path and the system's reason).
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(
            f"the {what} {folder} is a file, not a folder: move it away or choose another run "
            "folder with --trainer.default_root_dir DIR"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise RunFolderError(
            f"cannot write in the {what} {folder}: {err.strerror or err}; choose another run "
            "folder with --trainer.default_root_dir DIR"
        ) from None


def first_nonfinite(state: dict[str, Any]) -> str | None:
    """Name of the first floating-point tensor of ``state`` holding NaN or inf, else None."""
    names = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not names:
        return None
    finite = torch.stack([torch.isfinite(state[k]).all() for k in names]).cpu()  # one sync
    bad = (~finite).nonzero()
    return names[int(bad[0])] if len(bad) else None


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` for a run folder; see the module docstring. Arguments as Lightning's.

    ``dirpath`` None means ``<trainer.default_root_dir>/checkpoints`` (not the logger's version
    folder, so a resumed run keeps writing beside the checkpoint it resumed from).

    Raises:
        RunFolderInUseError: when training starts in a ``dirpath`` that already holds
            ``.ckpt`` files, unless it resumes from one of them.
        RunStopped: after a stop signal, once the step reached is saved.
        NonFiniteStateError: instead of writing a state that holds NaN or inf.

    Examples:
        >>> trainer = L.Trainer(default_root_dir="runs/a", callbacks=[RunCheckpoint(
        ...     save_last=True, save_top_k=0, every_n_train_steps=50)])
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stop_signal: int | None = None  # set by the signal handler
        self._stopped: RunStopped | None = None  # saved, to be raised at the next hook
        self._previous_handlers: dict[int, Any] = {}

    # ---- the run folder ---------------------------------------------------------------------
    def resolve_dirpath(self, trainer: L.Trainer) -> str:
        """``dirpath``, or ``<default_root_dir>/checkpoints`` when it was not given."""
        if self.dirpath is None:
            return os.path.join(trainer.default_root_dir, "checkpoints")
        return str(self.dirpath)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.dirpath = self.resolve_dirpath(trainer)
        if stage == "fit":  # on every rank: all stop together, none waits in a collective
            check_writable_folder(self.dirpath, "checkpoint folder")
        super().setup(trainer, pl_module, stage)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the callback's state; a run folder that was moved or renamed since the
        checkpoint is the same run: its files are found under the new folder (Lightning would
        forget ``last.ckpt`` and write ``last-v1.ckpt`` beside it)."""
        saved = state_dict.get("dirpath")
        if saved is not None and self.dirpath is not None:
            state_dict = _moved_folder_state(state_dict, str(saved), str(self.dirpath))
        super().load_state_dict(state_dict)

    def _find_last_checkpoints(self, trainer: L.Trainer) -> set[str]:
        # ckpt_path="last" is resolved before setup: look where this run folder keeps them
        if self.dirpath is None:
            self.dirpath = self.resolve_dirpath(trainer)
        return super()._find_last_checkpoints(trainer)

    # ---- the final state --------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.save_last:
            return
        stop = self._stop_agreed(trainer)
        at_max_steps = 0 < trainer.max_steps <= trainer.global_step
        if stop or at_max_steps:
            self._save_final(trainer)
        if stop:  # raised at the next hook, once Lightning has logged this step's metrics
            self._stopped = self._run_stopped(trainer)

    def _stop_agreed(self, trainer: L.Trainer) -> bool:
        """Whether a stop signal came, to this rank or any other: every rank stops together."""
        stop = self._stop_signal is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        return stop

    def _save_final(self, trainer: L.Trainer) -> None:
        """Write ``last`` for the step reached, unless it was written at this step already."""
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _run_stopped(self, trainer: L.Trainer) -> RunStopped:
        signum = self._stop_signal if self._stop_signal is not None else signal.SIGTERM
        return RunStopped(signum, trainer.global_step, self.last_model_path or None)

    def _raise_if_stopped(self) -> None:
        if self._stopped is not None:
            stopped, self._stopped = self._stopped, None
            raise stopped

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._raise_if_stopped()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning 2.6 moves its logging step one ahead of global_step when it resumes from a
        # checkpoint written by end-of-epoch validation; keep logged steps == optimizer steps.
        loop = trainer.fit_loop.epoch_loop
        if pl_module.automatic_optimization and hasattr(loop, "_batches_that_stepped"):
            loop._batches_that_stepped = trainer.global_step

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._raise_if_stopped()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self.save_last or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if self._stop_agreed(trainer):  # a signal that came during the evaluation
            self._save_final(trainer)  # the state between two steps, as in a "best" checkpoint
            raise self._run_stopped(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._raise_if_stopped()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's own on_train_end writes `last` only when nothing was written yet
        if self.save_last:
            self._save_final(trainer)
        # before Lightning's teardown puts back the handlers it found: the process's own
        self._restore_handlers()

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        bad = first_nonfinite(trainer.lightning_module.state_dict())
        refuse = bad is not None
        if trainer.world_size > 1:  # ranks' BN statistics differ: all must take the same branch
            refuse = trainer.strategy.reduce_boolean_decision(refuse, all=False)
        if refuse:
            where = f"first in {bad!r}" if bad is not None else "on another rank"
            raise NonFiniteStateError(
                f"refusing to write {filepath} at step {trainer.global_step}: the model state "
                f"holds NaN or inf ({where}); the previous checkpoint is kept"
            )
        super()._save_checkpoint(trainer, filepath)

    # ---- stop signals -----------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        check_new_run_folder(self.dirpath, trainer.ckpt_path)  # ckpt_path is known only now
        if self.save_last:
            self._install_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        self._restore_handlers()

    def _install_handlers(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._stop_signal = None
        for signum in _STOP_SIGNALS:
            self._previous_handlers.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        if self._stop_signal is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt  # second Ctrl-C: abort now, the last checkpoint stays
        self._stop_signal = signum
        rank_zero_info(
            f"\nreceived {signal.Signals(signum).name}: stopping after this step and saving it"
            + (" (Ctrl-C again to abort without saving)" if signum == signal.SIGINT else "")
        )


def _moved_folder_state(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """``state`` with the paths of files under ``old`` moved to ``new`` where they exist there
    (the folder was moved), and ``dirpath`` set to ``new``; else ``state`` unchanged."""
    if os.path.normpath(old) == os.path.normpath(new):
        return state

    def moved(path: Any) -> Any:
        if not isinstance(path, str) or not path:
            return path
        candidate = os.path.join(new, os.path.relpath(path, old))
        return candidate if os.path.isfile(candidate) else path

    keys = ("best_model_path", "kth_best_model_path", "last_model_path")
    paths = [state.get(key) for key in keys] + list(state.get("best_k_models", {}))
    if not any(moved(p) != p for p in paths):  # nothing of the run is here: Lightning's way
        return state
    state = dict(state, dirpath=new)
    for key in keys:
        state[key] = moved(state.get(key, ""))
    if "best_k_models" in state:
        state["best_k_models"] = {moved(p): v for p, v in state["best_k_models"].items()}
    return state


def check_new_run_folder(dirpath: str | os.PathLike, ckpt_path: str | None = None) -> None:
    """Raise :class:`RunFolderInUseError` when ``dirpath`` already holds ``.ckpt`` files, unless
    the run resumes from one of them (``ckpt_path`` inside ``dirpath``, or ``last``/``best``)."""
    folder = Path(dirpath)
    if ckpt_path in ("last", "best") or (
        ckpt_path is not None and Path(ckpt_path).resolve().parent == folder.resolve()
    ):
        return
    found = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    if not found:
        return
    names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
    run = folder.parent
    raise RunFolderInUseError(
        f"{folder} already holds the checkpoints of an earlier run ({names}); a new run would "
        f"overwrite them. Continue that run with --ckpt_path last, or give the new run its own "
        f"folder: --trainer.default_root_dir {run.parent / (run.name + '-2')}"
    )
