"""Argument checks shared by the public functions: each raises a ValueError naming the argument."""

import math
from numbers import Real

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """Return ``temperature`` as a float; raise ValueError unless it is a finite number > 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, Real):
        raise ValueError(f"{name} must be a positive finite number, got {temperature!r}")
    value = float(temperature)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def check_reduction(reduction: str) -> str:
    """Raise ValueError unless ``reduction`` is one of mean | sum | none."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_float_tensor(x: Tensor, name: str, ndim: int | None = None) -> None:
    """Raise ValueError unless ``x`` is a floating-point tensor (with ``ndim`` dims if given)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
