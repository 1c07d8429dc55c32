"""Per-channel normalisation statistics: one rule for every place that takes a mean and std."""

import math
from collections.abc import Sequence
from numbers import Real

from torch import Tensor

__all__ = ["check_channel_stats"]

Stats = tuple[float, float, float]


def check_channel_stats(name: str, value: Sequence[float] | Tensor, positive: bool) -> Stats:
    """``value`` as three floats (R, G, B): finite numbers, and > 0 with ``positive`` (a std).

    Raises:
        ValueError: anything else (not 3 values, a bool, a string, NaN, inf, a std <= 0), with
            ``name`` and the value.
    """
    ok = isinstance(value, tuple | list) or (isinstance(value, Tensor) and value.dim() == 1)
    ok = ok and len(value) == 3
    ok = ok and all(isinstance(v, Real | Tensor) and not isinstance(v, bool) for v in value)
    ok = ok and all(math.isfinite(float(v)) and (not positive or float(v) > 0) for v in value)
    if not ok:
        what = "3 finite numbers > 0" if positive else "3 finite numbers"
        raise ValueError(f"{name} must be {what} (R, G, B), got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))
