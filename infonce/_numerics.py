"""The numerics the losses share: the compute dtype, the division by a temperature, and the
similarities of InfoNCE.

Dividing by ``T`` is where a softmax can overflow: ``x / T`` exceeds float32's range for
``|x| / T`` above 3.4e38. ``F.cross_entropy``, ``torch.logsumexp`` and ``torch.softmax``
subtract each row's maximum themselves, but only after the division. So:

- L2-normalised similarities lie in ``[-1, 1]``, and ``s / T`` is finite for every ``T`` that
  :func:`infonce._checks.check_temperature` accepts (at least the dtype's smallest normal
  number): one division, nothing more (:func:`over_temperature` with ``normalized``).
- Raw similarities and arbitrary logits are shifted by their maximum first,
  ``(x - max) / T`` (:func:`shift_and_divide`): no entry above 0, the same softmax.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float32, or float64 when an input is float64: the dtype of logits and their sums (half
    and bfloat16 inputs are computed in float32)."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def temperature_like(temperature: float | Tensor, like: Tensor) -> float | Tensor:
    """A tensor ``T`` on the device and in the dtype of ``like`` (its gradient kept); a float
    as is."""
    if isinstance(temperature, Tensor):
        return temperature.to(device=like.device, dtype=like.dtype)
    return temperature


def shift_by_max(x: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """``(x - m, m)``, ``m`` the maximum along ``dim`` (kept as a size-1 dimension), a constant
    for autograd: a softmax does not depend on it. A slice holding a nan, or of only ``-inf``,
    becomes all nan.

    Shape:
        x (*) with a non-empty ``dim``; ``x - m`` (*), ``m`` (*) with ``dim`` of size 1.
    """
    m = x.detach().amax(dim=dim, keepdim=True)
    return x - m, m


def divide(z: Tensor, temperature: float | Tensor) -> Tensor:
    """``z / T``. For a tensor ``T`` that requires a gradient, ``-inf`` entries (masked
    classes) are divided by ``T`` detached: ``d(-inf / T)/dT`` is nan, where the true
    contribution of an entry whose probability is 0 at every ``T`` is 0.

    Shape:
        z (*); output (*).
    """
    if isinstance(temperature, Tensor) and temperature.requires_grad and torch.is_grad_enabled():
        minus_inf = z == -torch.inf
        finite = z.masked_fill(minus_inf, 0.0) / temperature  # dT from the finite entries only
        return torch.where(minus_inf, z / temperature.detach(), finite)
    return z / temperature


def shift_and_divide(x: Tensor, temperature: float | Tensor, dim: int = -1) -> Tensor:
    """``(x - max(x)) / T`` along ``dim``: the logits of ``softmax(x / T)`` with no entry above
    0, so nothing overflows for finite ``x`` at any ``T`` normal in the dtype. ``-inf`` entries
    as in :func:`divide`; a nan, or a slice of only ``-inf``, as in :func:`shift_by_max`.

    Shape:
        x (*) with a non-empty ``dim``; output (*).
    """
    z, _ = shift_by_max(x, dim)
    if isinstance(temperature, Tensor) and temperature.requires_grad:
        return divide(z, temperature)
    return z.div_(temperature)  # z is a new tensor: divided in place


def over_temperature(
    similarities: Tensor, temperature: float | Tensor, normalized: bool, dim: int = -1
) -> Tensor:
    """``similarities / T`` as a softmax's logits along ``dim``: one division for normalised
    similarities (in ``[-1, 1]``, so finite), :func:`shift_and_divide` for raw ones.

    Shape:
        similarities (*); output (*).
    """
    if normalized:
        return similarities / temperature
    return shift_and_divide(similarities, temperature, dim)


def decoupled_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per row, ``logsumexp(logits without the label's column) - logits[label]``: the
    decoupled contrastive loss (Yeh et al., 2022), the positive in the numerator only. Equal
    to ``cross_entropy + log(1 - p_label)``. Each row needs a finite column besides its label.

    Shape:
        logits (N, C) with C >= 2, labels (N,) int64; output (N,).
    """
    positive = logits.gather(1, labels[:, None])[:, 0]  # (N,)
    others = logits.scatter(1, labels[:, None], -torch.inf)  # (N, C): the positive masked out
    return torch.logsumexp(others, dim=1) - positive


def info_nce_similarities(
    query: Tensor, key: Tensor, negatives: Tensor | None, normalize: bool
) -> tuple[Tensor, Tensor]:
    """The logits of :func:`infonce.info_nce` before the division by ``T``, and the labels.

    For checked inputs, with autocast off. Column 0 holds the positive (labels all 0); without
    negatives the (N, N) ``q @ k.T`` holds them on the diagonal (labels ``arange(N)``).

    Shape:
        query (N, D), key (N, D), negatives (K, D), (N, M, D) or None; similarities (N, C)
        float32 (float64 for float64 queries), labels (N,) int64.
    """
    N = query.shape[0]
    dtype = compute_dtype(query)
    q, k = query.to(dtype), key.to(dtype)
    n = None if negatives is None else negatives.to(dtype)
    if normalize:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        n = None if n is None else F.normalize(n, dim=-1)
    if n is None:
        similarities = q @ k.T  # (N, N)
        labels = torch.arange(N, device=q.device)  # positives on the diagonal
    else:
        l_pos = (q * k).sum(dim=-1, keepdim=True)  # (N, 1)
        if n.dim() == 2:
            l_neg = q @ n.T  # (N, K)
        else:
            l_neg = torch.einsum("nd,nmd->nm", q, n)  # (N, M)
        similarities = torch.cat([l_pos, l_neg], dim=1)  # (N, 1+K)
        labels = torch.zeros(N, dtype=torch.long, device=q.device)  # the positive is column 0
    return similarities, labels
