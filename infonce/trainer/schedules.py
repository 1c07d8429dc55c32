"""Learning-rate and momentum schedules as pure functions of the optimizer step.

No scheduler object holds state, so nothing can be lost or drift on a resume: the step number
alone says where a run is.
"""

import math
from typing import Literal, get_args

from infonce._checks import check_choice
from infonce.momentum import cosine_momentum

__all__ = [
    "LR_SCHEDULES",
    "MOMENTUM_SCHEDULES",
    "TEMPERATURE_SCHEDULES",
    "LRSchedule",
    "cosine_momentum",
    "lr_factor",
    "momentum_at",
    "temperature_at",
]

LRSchedule = Literal["cosine", "cosine_per_epoch", "cosine_annealing_per_epoch", "constant"]
LR_SCHEDULES = get_args(LRSchedule)
MOMENTUM_SCHEDULES = ("constant", "cosine")
TEMPERATURE_SCHEDULES = ("constant", "cosine")


def temperature_at(
    temperature: float,
    schedule: str,
    step: int,
    steps_per_epoch: int,
    minimum: float,
    maximum: float,
    period_epochs: float,
) -> float:
    """The contrastive loss's ``T`` at optimizer ``step``.

    - ``constant``: ``temperature`` throughout;
    - ``cosine``: Kukleva et al. (ICLR 2023, "Temperature Schedules for self-supervised
      contrastive methods on long-tail data"), ``T = min + (max - min) (1 + cos(2 pi t / P)) / 2``
      with ``t`` the epochs so far (``step / steps_per_epoch``, fractional: it moves every
      step) and ``P`` the period in epochs: ``max`` at the start and after every period,
      ``min`` half a period in (the paper: 0.1 to 1.0). ``temperature`` is not used.

    Raises:
        ValueError: an unknown ``schedule``.
    """
    check_choice(schedule, "temperature_schedule", TEMPERATURE_SCHEDULES)
    if schedule == "constant":
        return temperature
    phase = 2.0 * math.pi * (step / steps_per_epoch) / period_epochs
    return minimum + 0.5 * (maximum - minimum) * (1.0 + math.cos(phase))


def momentum_at(momentum: float, schedule: str, step: int, total_steps: int) -> float:
    """The momentum encoder's EMA weight at ``step``: ``momentum`` throughout (``constant``),
    or rising from it to 1 on a cosine over ``total_steps`` (``cosine``: BYOL's, MoCo v3's).

    Raises:
        ValueError: an unknown ``schedule``.
    """
    check_choice(schedule, "momentum_schedule", MOMENTUM_SCHEDULES)
    return momentum if schedule == "constant" else cosine_momentum(momentum, step, total_steps)


def lr_factor(
    step: int, total_steps: int, steps_per_epoch: int, warmup_steps: int, schedule: str
) -> float:
    """The learning rate at optimizer ``step`` as a factor of the base rate.

    A linear warm-up over ``warmup_steps`` (``(step + 1) / warmup_steps``), then:

    - ``cosine``: per step, ``(1 + cos(pi p)) / 2`` with ``p`` the progress through the steps
      after the warm-up, from 1 to 0 (SimCLR's, MoCo v3's and solo-learn's warmup-cosine);
    - ``cosine_per_epoch``: the MoCo CIFAR-10 demo's ``(1 + cos(pi e / E)) / 2`` for the
      e-th of E epochs, 1-based: constant within an epoch, 0 in the last one;
    - ``cosine_annealing_per_epoch``: torch's ``CosineAnnealingLR(T_max=E)`` stepped once an
      epoch (lightly's benchmarks): the same with e 0-based, the full rate in the first epoch;
    - ``constant``: 1.

    Args:
        step: the optimizer step, from 0.
        total_steps: steps of the whole schedule (>= 1).
        steps_per_epoch: optimizer steps in an epoch (>= 1).
        warmup_steps: steps of linear warm-up (>= 0).
        schedule: one of :data:`LR_SCHEDULES`.

    Returns:
        The factor in [0, 1].

    Raises:
        ValueError: an unknown ``schedule``.
    """
    check_choice(schedule, "lr_schedule", LR_SCHEDULES)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule in ("cosine_per_epoch", "cosine_annealing_per_epoch"):
        epochs = math.ceil(total_steps / steps_per_epoch)
        first = 1 if schedule == "cosine_per_epoch" else 0
        progress = min(1.0, (step // steps_per_epoch + first) / epochs)
    else:
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))
