"""Argument checks shared by the public functions: each raises a ValueError naming the argument."""

import math
from numbers import Real

import torch
from torch import Tensor

from infonce._numerics import compute_dtype

REDUCTIONS = ("mean", "sum", "none")


def check_temperature(
    temperature: float | Tensor,
    name: str = "temperature",
    allow_tensor: bool = False,
    dtype: torch.dtype = torch.float32,
    allow_zero: bool = False,
) -> float | Tensor:
    """Return ``temperature`` checked: a finite number > 0 (as a float), or with
    ``allow_tensor`` also a 0-d floating-point tensor (returned as is, gradients kept). With
    ``allow_zero``, 0 is accepted too (greedy sampling), and the messages say ``>= 0``.

    The value must also be a normal number of ``dtype``, the dtype the caller computes in
    (float32 for float32 and half inputs, float64 for float64): from ``finfo(dtype).tiny``
    (1.2e-38 in float32) to ``finfo(dtype).max``. A smaller ``T`` is a subnormal or 0 there, and
    ``x / T`` overflows for any ``|x|`` above about 4e-7 (a NaN softmax); a larger one is inf.

    A tensor's value is checked where that costs no host synchronisation (on the CPU); on an
    accelerator only its shape and dtype are, since reading the value would stall the device
    every step. Raises ValueError naming ``name`` and the bad value, shape or dtype.
    """
    if isinstance(temperature, Tensor):
        if not allow_tensor:
            raise ValueError(f"{name} must be a Python number here, got a tensor")
        if temperature.dim() != 0 or not torch.is_floating_point(temperature):
            raise ValueError(
                f"{name} must be a 0-d floating-point tensor, got {describe(temperature)}"
            )
        if temperature.device.type == "cpu":
            _check_range(float(temperature.detach()), name, dtype, "tensor({})", allow_zero)
        return temperature
    if isinstance(temperature, bool) or not isinstance(temperature, Real):
        kind = _temperature_rule(allow_zero) + (" or a 0-d tensor" if allow_tensor else "")
        raise ValueError(f"{name} must be a {kind}, got {temperature!r}")
    value = float(temperature)
    _check_range(value, name, dtype, "{}", allow_zero)
    return value


def _temperature_rule(allow_zero: bool) -> str:
    return "finite number >= 0" if allow_zero else "positive finite number"


def _check_range(value: float, name: str, dtype: torch.dtype, shown: str, allow_zero: bool) -> None:
    """Raise unless ``value`` is a positive finite normal number of ``dtype`` (or 0, when
    allowed)."""
    if allow_zero and value == 0:
        return
    if not math.isfinite(value) or value <= 0:
        rule = _temperature_rule(allow_zero)
        raise ValueError(f"{name} must be a {rule}, got {shown.format(value)}")
    info = torch.finfo(dtype)
    if not info.tiny <= value <= info.max:
        raise ValueError(
            f"{name} must lie in [{info.tiny:.4g}, {info.max:.4g}], the normal numbers of the "
            f"compute dtype {dtype} (x / {name} over- or underflows beyond), got "
            f"{shown.format(value)}"
        )


def check_positive(value: float, name: str) -> float:
    """Return ``value`` as a float; raise ValueError unless it is a finite real number > 0
    (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < float(value) < math.inf:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_finite_number(value: float, name: str) -> float:
    """Return ``value`` as a float; raise ValueError unless it is a finite real number (not a
    bool)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_bool(value: bool, name: str) -> bool:
    """Return ``value``; raise ValueError unless it is a bool (a flag such as ``normalize``:
    a string like ``"false"`` would otherwise count as true)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
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


def check_choice(value, name: str, allowed: tuple) -> str:
    """Return ``value``; raise ValueError naming ``name`` unless it is one of the strings
    ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_reduction(reduction: str) -> str:
    """Raise ValueError unless ``reduction`` is one of mean | sum | none."""
    return check_choice(reduction, "reduction", REDUCTIONS)


def check_float_tensor(x: Tensor, name: str, ndim: int | None = None) -> None:
    """Raise ValueError unless ``x`` is a floating-point tensor (with ``ndim`` dims if given)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")


def check_same_device(x: Tensor, name: str, like: Tensor, like_name: str) -> None:
    """Raise ValueError unless ``x`` is on the device of ``like`` (names both devices)."""
    if x.device != like.device:
        raise ValueError(
            f"{name} must be on the device of {like_name} ({like.device}), got {x.device}"
        )


def check_info_nce_inputs(query: Tensor, key: Tensor, negatives: Tensor | None) -> None:
    """Raise ValueError unless query, key (N, D) and negatives (K, D), (N, M, D) or None fit.

    Floating-point tensors on one device only, N >= 1 and D >= 1; the message names the
    argument and the shapes. Nothing is broadcast.
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
    check_same_device(key, "key", query, "query")
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
    check_same_device(negatives, "negatives", query, "query")


def check_info_nce(
    query: Tensor,
    key: Tensor,
    negatives: Tensor | None,
    temperature: float | Tensor,
    normalize: bool,
    shared: bool = False,
    decoupled: bool = False,
) -> float | Tensor:
    """The checks of :func:`infonce.info_nce`'s arguments; returns the temperature checked in
    the compute dtype. With ``shared`` (the chunked path), ``negatives`` must be a (K, D)
    tensor of negatives shared by every query.

    Raises:
        ValueError: as :func:`check_info_nce_inputs`, ``normalize`` or ``decoupled`` not a
            bool, ``decoupled`` with no negative (:func:`check_decoupled`), or a temperature
            :func:`check_temperature` refuses.
    """
    if shared and negatives is None:
        raise ValueError("negatives must be a (K, D) tensor of shared negatives, got None")
    check_info_nce_inputs(query, key, negatives)
    if shared and negatives.dim() != 2:
        raise ValueError(f"negatives must have shape (K, D), got {tuple(negatives.shape)}")
    check_bool(normalize, "normalize")
    if negatives is None:
        N = query.shape[0]
        check_decoupled(decoupled, N - 1, f"N = {N} (in-batch negatives: the other N - 1 keys)")
    elif negatives.dim() == 2:
        check_decoupled(decoupled, negatives.shape[0], f"K = {negatives.shape[0]} negatives")
    else:
        check_decoupled(decoupled, negatives.shape[1], f"M = {negatives.shape[1]} per query")
    return check_temperature(temperature, allow_tensor=True, dtype=compute_dtype(query))


def check_decoupled(decoupled: bool, num_negatives: int, got: str) -> bool:
    """Return ``decoupled``; raise ValueError unless it is a bool, or when it is True and there
    is no negative: the decoupled loss leaves the positive out of the log-sum-exp, which is
    then empty (``-inf``), and the loss undefined. ``got`` says what was counted."""
    check_bool(decoupled, "decoupled")
    if decoupled and num_negatives < 1:
        raise ValueError(
            "decoupled=True needs at least one negative (the positive is left out of the "
            f"log-sum-exp, which would be empty), got {got}"
        )
    return decoupled


def describe(value) -> str:
    """``shape (N,) and dtype torch.int64`` for a tensor, else the type's name: what an error
    message says it got."""
    if isinstance(value, Tensor):
        return f"shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def check_class_scores(
    scores: Tensor, name: str, min_rows: int = 1, finite: bool = False
) -> tuple[int, int]:
    """Return ``(N, C)``; raise ValueError unless ``scores`` (logits or probabilities) is a
    floating-point (N, C) tensor with ``N >= min_rows`` and ``C >= 2``, and with ``finite``
    holds no nan or inf (the message counts the rows that do and names the first).
    """
    check_float_tensor(scores, name, ndim=2)
    N, C = scores.shape
    if N < min_rows or C < 2:
        raise ValueError(f"{name} must be (N, C) with N >= {min_rows} and C >= 2, got {(N, C)}")
    if finite:
        bad = ~torch.isfinite(scores).all(dim=1)  # (N,)
        if bad.any():
            raise ValueError(f"{name} must be finite, got {int(bad.sum())} rows with NaN or inf, "
                             f"e.g. row {int(bad.nonzero()[0])}")  # fmt: skip
    return N, C


def check_labels(
    labels: Tensor,
    name: str,
    length: int,
    num_classes: int | None = None,
    rows_of: str = "the scores",
    read: bool = True,
) -> None:
    """Raise ValueError unless ``labels`` is an int64 tensor of shape ``(length,)``, one label
    per row of ``rows_of``, with values in ``[0, num_classes)`` (``>= 0`` when
    ``num_classes`` is None). With ``read=False`` the values are not read (no host sync).
    Every message names ``name``.
    """
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != (length,):
        raise ValueError(f"{name} must be an int64 tensor of shape ({length},), one per row of "
                         f"{rows_of}, got {describe(labels)}")  # fmt: skip
    if not read or length == 0:
        return
    low, high = (int(v) for v in labels.aminmax())
    if num_classes is None:
        if low < 0:
            raise ValueError(f"{name} must be >= 0, got {low}")
    elif low < 0 or high >= num_classes:
        raise ValueError(f"{name} must lie in [0, {num_classes}), got values from {low} to {high}")


def reduce_loss(loss: Tensor, reduction: str, world: int = 1) -> Tensor:
    """Per-sample ``loss`` (N,) reduced by ``mean`` | ``sum`` | ``none`` (already checked).

    ``world``: the number of ranks that each hold N of the samples (``gather_distributed``);
    ``sum`` is multiplied by it, so that the average over ranks (DDP's, of the gradients) is
    the sum over all of them. ``mean`` needs nothing: with N on every rank the average of the
    ranks' means is the mean over all.
    """
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum() if world == 1 else loss.sum() * world
    return loss
