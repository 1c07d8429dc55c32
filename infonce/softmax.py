"""Softmax with a temperature: ``softmax(logits / T)``."""

import torch
from torch import Tensor

from infonce._checks import check_float_tensor, check_temperature


def softmax_with_temperature(
    logits: Tensor, temperature: float | Tensor = 1.0, dim: int = -1
) -> Tensor:
    """Temperature-scaled softmax, ``softmax(logits / temperature)`` along ``dim``.

    Stable for any finite logits: the maximum is subtracted before ``exp`` (logits of 1e4 at
    ``temperature=0.1`` give a one-hot, where the naive ``exp(x / T) / sum`` overflows to nan).
    ``temperature -> 0`` approaches the one-hot argmax (ties share the mass), ``temperature ->
    inf`` approaches the uniform distribution.

    Args:
        logits: floating-point scores, any shape.
        temperature: positive finite number, or a 0-d floating-point tensor (differentiable).
        dim: the dimension that sums to one.

    Returns:
        Probabilities of the same shape, in float32 for half-precision inputs (float32 or
        float64 otherwise: the input's dtype).

    Shape:
        logits (*), output (*).

    Raises:
        ValueError: integer ``logits``, a ``temperature`` that is not a positive finite number,
            or a ``dim`` out of range.
    """
    check_float_tensor(logits, "logits")
    temperature = check_temperature(temperature, allow_tensor=True)
    if not -logits.dim() <= dim < max(logits.dim(), 1):
        raise ValueError(f"dim must be in [{-logits.dim()}, {logits.dim()}), got {dim}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    if isinstance(temperature, Tensor):
        temperature = temperature.to(device=logits.device, dtype=dtype)
    return torch.softmax(logits.to(dtype) / temperature, dim=dim)
