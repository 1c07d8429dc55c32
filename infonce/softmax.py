"""Softmax with a temperature: ``softmax(logits / T)``."""

import torch
from torch import Tensor

from infonce._checks import check_float_tensor, check_temperature
from infonce._numerics import compute_dtype, shift_and_divide, temperature_like

__all__ = ["softmax_with_temperature"]


def softmax_with_temperature(
    logits: Tensor, temperature: float | Tensor = 1.0, dim: int = -1
) -> Tensor:
    """Temperature-scaled softmax, ``softmax(logits / temperature)`` along ``dim``.

    Computed as ``softmax((logits - max) / temperature)``, the row maximum subtracted before the
    division (mathematically the same): no entry is ever above 0, so nothing overflows for any
    finite logits and any valid temperature. Logits of 1e4 at ``temperature=1e-30`` give a
    one-hot (ties share the mass), where the naive ``exp(x / T) / sum`` is nan.
    ``temperature -> 0`` approaches the one-hot argmax, ``temperature -> inf`` approaches the
    uniform distribution. A nan in a slice gives nan for that slice (as ``torch.softmax``);
    a slice of only ``-inf`` is nan too (no distribution).

    Args:
        logits: floating-point scores, any shape.
        temperature: positive finite number, or a 0-d floating-point tensor (differentiable);
            a normal number of the compute dtype (at least 1.2e-38 in float32, 2.2e-308 in
            float64).
        dim: the dimension that sums to one.

    Returns:
        Probabilities of the same shape, in float32 for half-precision inputs (float32 or
        float64 otherwise: the input's dtype).

    Shape:
        logits (*), output (*).

    Raises:
        ValueError: ``logits`` not a floating-point tensor, a ``temperature`` that is not a
            positive finite number normal in the compute dtype, or a ``dim`` that is not an
            integer in range.
    """
    check_float_tensor(logits, "logits")
    dtype = compute_dtype(logits)
    temperature = check_temperature(temperature, allow_tensor=True, dtype=dtype)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise ValueError(f"dim must be an integer, got {dim!r}")
    ndim = max(logits.dim(), 1)  # a 0-d tensor has one dimension for softmax, as in torch
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim must be in [{-ndim}, {ndim}), got {dim}")
    x = logits.to(dtype)
    if x.numel() == 0:
        return torch.softmax(x, dim=dim)
    return torch.softmax(shift_and_divide(x, temperature_like(temperature, x), dim), dim=dim)
