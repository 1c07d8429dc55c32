"""What a resumed run does with hyperparameters that differ from its checkpoint's.

LightningCLI, given ``--ckpt_path FILE``, parses the checkpoint's hyperparameters *over* the
command line, so ``--model.lr 0.01`` on resume is silently dropped (``train.py`` turns that
off). Instead the run's own configuration is used, and the module compares it with the
checkpoint when it loads: a difference it can honour (learning rate, weight decay, ...) is
used and reported, one it cannot (a queue size, a feature dimension, a backbone: the shapes of
the saved state) stops the run with a message naming both values.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch.utilities.rank_zero import rank_zero_info

_NOT_HYPERPARAMETERS = ("_instantiator", "_class_path")


class ResumeConflictError(ValueError):
    """A resumed run asks for a hyperparameter the checkpoint's state cannot take."""


def check_resumed_hyperparameters(
    run: Mapping[str, Any], saved: Mapping[str, Any], fixed: Iterable[str], what: str
) -> list[str]:
    """Compare a run's hyperparameters with those saved in the checkpoint it resumes.

    Args:
        run: this run's hyperparameters (``module.hparams``).
        saved: the checkpoint's ``hyper_parameters``.
        fixed: names that cannot change on resume (they shape the saved state).
        what: the checkpoint, for messages.

    Returns:
        One line per other difference, ``"lr=0.01 (checkpoint: 0.06)"``, also logged: this
        run's value is the one used.

    Raises:
        ResumeConflictError: a name in ``fixed`` differs; the message names both values.
    """
    fixed = set(fixed)
    differ = [
        name
        for name in run
        if name in saved and name not in _NOT_HYPERPARAMETERS and run[name] != saved[name]
    ]
    conflicts = [f"{n}={run[n]!r} (checkpoint: {saved[n]!r})" for n in differ if n in fixed]
    if conflicts:
        flags = " ".join(f"--model.{n} {saved[n]}" for n in differ if n in fixed)
        raise ResumeConflictError(
            f"cannot resume {what} with {', '.join(conflicts)}: these set the shape of the "
            f"saved state. Resume with the checkpoint's values ({flags}) or start a new run."
        )
    changes = [f"{n}={run[n]!r} (checkpoint: {saved[n]!r})" for n in differ]
    if changes:
        rank_zero_info(f"resuming {what} with this run's {', '.join(changes)}")
    return changes
