"""Sampling from ``softmax(logits / T)``, with top-k and nucleus (top-p) truncation."""

from numbers import Real

import torch
from torch import Tensor

from infonce._checks import check_float_tensor, check_int, check_temperature
from infonce._numerics import compute_dtype, shift_and_divide

__all__ = ["sample_with_temperature"]


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
    the k largest logits (exactly k: among ties at the k-th value the lowest indices are
    kept), then ``top_p`` keeps the smallest set of the most probable remaining entries whose
    probability (renormalised over what top-k kept) sums to at least ``p`` (Holtzman et al.,
    2020; the most probable entry is always kept; among ties, again the lowest indices first).
    Probabilities are float32 (float64 for float64 logits), from ``(logits - max) / T``, so
    no temperature overflows them; entries of ``-inf`` are never drawn.

    Args:
        logits: unnormalised log-probabilities, entries along the last dimension.
        temperature: ``T = 0``, or ``T`` normal in the compute dtype (at least 1.2e-38 in
            float32) and finite (a number, or a 0-d tensor read once); below 1 sharpens,
            above 1 flattens.
        top_k: keep the k most likely entries (k >= 1), or None for all.
        top_p: keep the nucleus of mass ``p`` in (0, 1], or None for all.
        generator: the random generator (on the logits' device), for reproducible draws.

    Returns:
        The drawn indices, int64.

    Shape:
        logits (*, V) -> (*).

    Raises:
        ValueError: non-floating logits or V = 0, a temperature that is neither 0 nor a
            positive finite number normal in the compute dtype (or a 0-d tensor of one),
            top_k not an integer >= 1, top_p not a number in (0, 1], a generator that is not
            a ``torch.Generator``, a nan or +inf logit, or a row without a finite logit.

    Examples:
        >>> token = sample_with_temperature(model(tokens)[:, -1], temperature=0.8, top_p=0.95)
    """
    check_float_tensor(logits, "logits")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must be (*, V) with V >= 1, got shape {tuple(logits.shape)}")
    dtype = compute_dtype(logits)
    # T = 0 (greedy), or a temperature as the rest of the library takes it
    if isinstance(temperature, Tensor):  # read once: the draw needs T on the host
        check_temperature(temperature, allow_tensor=True, dtype=dtype, allow_zero=True)
        temperature = float(temperature)
    temperature = check_temperature(temperature, dtype=dtype, allow_zero=True)
    if top_k is not None:
        check_int(top_k, "top_k")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, Real) or not 0.0 < top_p <= 1.0
    ):
        raise ValueError(f"top_p must be a number in (0, 1], got {top_p!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {generator!r}")
    V = logits.shape[-1]
    rows = logits.reshape(-1, V).to(dtype)  # (R, V)
    if (rows == torch.inf).any() or torch.isnan(rows).any():
        raise ValueError("logits must hold no nan and no +inf")
    if not torch.isfinite(rows).any(dim=1).all():
        raise ValueError("logits must hold at least one finite entry per row")
    if temperature == 0:  # greedy decoding
        return rows.argmax(dim=1).view(logits.shape[:-1])
    scaled = shift_and_divide(rows, temperature, dim=1)  # (R, V) <= 0: (logits - max) / T
    if top_k is not None and top_k < V:
        order = scaled.sort(dim=1, descending=True, stable=True).indices  # ties: lowest first
        keep = torch.zeros_like(scaled, dtype=torch.bool).scatter_(1, order[:, :top_k], True)
        scaled = scaled.masked_fill(~keep, -torch.inf)
    if top_p is not None and top_p < 1.0:
        probs, order = torch.softmax(scaled, dim=1).sort(dim=1, descending=True, stable=True)
        mass_before = probs.cumsum(dim=1) - probs  # (R, V): the mass of the entries above
        drop_sorted = mass_before >= top_p  # the first entry has 0 before it: always kept
        drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, -torch.inf)
    probs = torch.softmax(scaled, dim=1)  # (R, V)
    return torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])
