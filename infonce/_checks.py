"""Argument checks shared by the public functions: each raises a ValueError naming the argument."""

import math
from numbers import Real

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")


def check_temperature(
    temperature: float | Tensor, name: str = "temperature", allow_tensor: bool = False
) -> float | Tensor:
    """Return ``temperature`` checked: a finite number > 0 (as a float), or with
    ``allow_tensor`` also a 0-d floating-point tensor (returned as is, gradients kept).

    A tensor's value is checked where that costs no host synchronisation (on the CPU); on an
    accelerator only its shape and dtype are, since reading the value would stall the device
    every step. Raises ValueError naming ``name`` and the bad value, shape or dtype.
    """
    if isinstance(temperature, Tensor):
        if not allow_tensor:
            raise ValueError(f"{name} must be a Python number here, got a tensor")
        if temperature.dim() != 0 or not torch.is_floating_point(temperature):
            raise ValueError(
                f"{name} must be a 0-d floating-point tensor, got shape "
                f"{tuple(temperature.shape)} and dtype {temperature.dtype}"
            )
        if temperature.device.type == "cpu":
            value = float(temperature.detach())
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got tensor({value})")
        return temperature
    if isinstance(temperature, bool) or not isinstance(temperature, Real):
        kind = "number or a 0-d tensor" if allow_tensor else "number"
        raise ValueError(f"{name} must be a positive finite {kind}, got {temperature!r}")
    value = float(temperature)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def check_int(value: int | None, name: str, minimum: int = 1, optional: bool = False) -> int | None:
    """Return ``value``; raise ValueError unless it is an int >= ``minimum`` (a bool is not an
    int here), or None when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        none = "None or " if optional else ""
        raise ValueError(f"{name} must be {none}an integer >= {minimum}, got {value!r}")
    return value


def check_unit_interval(p: float, name: str) -> float:
    """Return ``p`` as a float; raise ValueError unless it is a number in [0, 1] (a
    probability, an EMA weight)."""
    if isinstance(p, bool) or not isinstance(p, Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {p!r}")
    return float(p)


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


def check_info_nce_inputs(query: Tensor, key: Tensor, negatives: Tensor | None) -> None:
    """Raise ValueError unless query, key (N, D) and negatives (K, D), (N, M, D) or None fit.

    Floating-point tensors only, N >= 1 and D >= 1; the message names the argument and the
    shapes. Nothing is broadcast.
    """
    check_float_tensor(query, "query", ndim=2)
    check_float_tensor(key, "key", ndim=2)
    N, D = query.shape
    if key.shape != query.shape:
        raise ValueError(
            f"key must have the shape of query {tuple(query.shape)}, got {tuple(key.shape)}"
        )
    if N == 0 or D == 0:
        raise ValueError(f"query must be a non-empty (N, D) batch, got shape {tuple(query.shape)}")
    if negatives is None:
        return
    check_float_tensor(negatives, "negatives")
    shared = negatives.dim() == 2 and negatives.shape[1] == D  # (K, D)
    per_query = negatives.dim() == 3 and negatives.shape[0] == N and negatives.shape[2] == D
    if not (shared or per_query):
        raise ValueError(
            f"negatives must have shape (K, {D}) or ({N}, M, {D}) for query of shape "
            f"{tuple(query.shape)}, got {tuple(negatives.shape)}"
        )


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """Per-sample ``loss`` (N,) reduced by ``mean`` | ``sum`` | ``none`` (already checked)."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
