"""Sampling from ``softmax(logits / T)``, with top-k and nucleus (top-p) truncation."""

import math
from numbers import Real

import torch
from torch import Tensor

from infonce._checks import check_float_tensor, check_int


def sample_with_temperature(
    logits: Tensor,
    temperature: float | Tensor = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one index per row from ``softmax(logits / T)``, optionally truncated.

    ``T = 0`` is greedy decoding: the argmax (the first one on ties), no randomness. Otherwise
    the truncations apply in the usual order (as Hugging Face's ``generate``): ``top_k`` keeps
    the k largest logits (exactly k: ties at the k-th value broken by index), then ``top_p``
    keeps the smallest set of the most probable remaining entries whose probability
    (renormalised over what top-k kept) sums to at least ``p`` (Holtzman et al., 2020; the
    most probable entry is always kept). Probabilities are float32 (float64 for float64
    logits); entries of ``-inf`` are never drawn.

    Args:
        logits: unnormalised log-probabilities, entries along the last dimension.
        temperature: ``T >= 0`` (a number, or a 0-d tensor read once); below 1 sharpens,
            above 1 flattens.
        top_k: keep the k most likely entries (k >= 1), or None for all.
        top_p: keep the nucleus of mass ``p`` in (0, 1], or None for all.
        generator: the random generator (on the logits' device), for reproducible draws.

    Returns:
        The drawn indices, int64.

    Shape:
        logits (*, V) -> (*).

    Raises:
        ValueError: non-floating logits or V = 0, a negative or non-finite temperature, top_k
            < 1, top_p outside (0, 1], a nan or +inf logit, a row without a finite logit, or
            a temperature so small that ``logits / T`` overflows.

    Examples:
        >>> token = sample_with_temperature(model(tokens)[:, -1], temperature=0.8, top_p=0.95)
    """
    check_float_tensor(logits, "logits")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must be (*, V) with V >= 1, got shape {tuple(logits.shape)}")
    if isinstance(temperature, Tensor) and temperature.dim() == 0:
        temperature = float(temperature)
    if isinstance(temperature, bool) or not isinstance(temperature, Real):
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    if not 0.0 <= float(temperature) < math.inf:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None:
        check_int(top_k, "top_k")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, Real) or not 0.0 < top_p <= 1.0
    ):
        raise ValueError(f"top_p must be a number in (0, 1], got {top_p!r}")
    V = logits.shape[-1]
    rows = logits.reshape(-1, V)  # (R, V)
    dtype = torch.promote_types(logits.dtype, torch.float32)
    rows = rows.to(dtype)
    if (rows == torch.inf).any() or torch.isnan(rows).any():
        raise ValueError("logits must hold no nan and no +inf")
    if not torch.isfinite(rows).any(dim=1).all():
        raise ValueError("logits must hold at least one finite entry per row")
    if temperature == 0:
        return rows.argmax(dim=1).view(logits.shape[:-1])
    scaled = rows / temperature  # (R, V)
    if (scaled == torch.inf).any():
        raise ValueError(f"temperature {temperature} is too small: logits / T overflows {dtype}")
    if top_k is not None and top_k < V:
        kept = scaled.topk(top_k, dim=1).indices  # (R, k)
        keep = torch.zeros_like(scaled, dtype=torch.bool).scatter_(1, kept, True)
        scaled = scaled.masked_fill(~keep, -torch.inf)
    if top_p is not None and top_p < 1.0:
        probs, order = torch.softmax(scaled, dim=1).sort(dim=1, descending=True)  # (R, V)
        mass_before = probs.cumsum(dim=1) - probs  # (R, V): the mass of the entries above
        drop_sorted = mass_before >= top_p  # the first entry has 0 before it: always kept
        drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, -torch.inf)
    probs = torch.softmax(scaled, dim=1)  # (R, V)
    return torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])
