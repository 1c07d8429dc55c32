"""The InfoNCE / MoCo contrastive loss, as a function, a module, and its closed form."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from infonce._checks import (
    check_bool,
    check_finite_number,
    check_info_nce,
    check_int,
    check_reduction,
    check_temperature,
    reduce_loss,
)
from infonce._numerics import (
    decoupled_cross_entropy,
    info_nce_similarities,
    over_temperature,
    shift_and_divide,
    temperature_like,
)
from infonce.chunked import InfoNCEStats, chunked_info_nce, chunked_info_nce_stats

__all__ = ["InfoNCE", "info_nce", "info_nce_logits", "info_nce_stats", "separated_loss"]

# From this many shared negatives on, info_nce runs infonce.chunked: never the whole (N, 1+K)
# logits, and two matrix products instead of three. `python benchmarks/loss.py --crossover` on
# 2 CPU threads (N=256, D=128): equal at K=128, 1.1x faster at 256, 2x at 4,096, 3x at 16,384.
CHUNKED_FROM = 256


def info_nce(
    query: Tensor,
    key: Tensor,
    negatives: Tensor | None = None,
    temperature: float | Tensor = 0.07,
    reduction: str = "mean",
    normalize: bool = True,
    decoupled: bool = False,
) -> Tensor:
    """InfoNCE loss: ``-log exp(q.k+/T) / (exp(q.k+/T) + sum_i exp(q.k_i/T))``.

    The loss of MoCo (He et al., 2020) and CPC (van den Oord et al., 2018): a (1+K)-way
    softmax classification of each query's positive key against its negatives.

    With ``decoupled``, the decoupled contrastive loss (DCL; Yeh et al., 2022, their L_DC): the
    positive is left out of the denominator, ``-q.k+/T + log sum_i exp(q.k_i/T)``, which
    equals InfoNCE ``+ log(1 - p+)`` (``p+`` the positive's softmax weight). It removes the
    negative-positive coupling that makes InfoNCE's gradient shrink as ``p+`` grows, and it
    can be negative. It needs at least one negative.

    Negatives come in three forms:

    - ``(K, D)``: shared by every query, e.g. the keys of a MoCo :class:`MemoryQueue`.
    - ``(N, M, D)``: ``M`` negatives of its own for each query.
    - ``None``: the other keys of the batch are each query's negatives (the one-directional
      SimCLR / CLIP form): the logits are ``q @ k.T / T`` with the positives on the diagonal.

    Logits and the log-sum-exp are computed in float32 (float64 for float64 inputs), with
    autocast disabled, so the loss is accurate under mixed precision; the returned loss has
    that dtype. Shared negatives from ``CHUNKED_FROM`` (256) on take the chunked path of
    :func:`infonce.chunked.chunked_info_nce`: same values, O(N) instead of O(N x K) memory,
    2-3x faster on CPUs at MoCo's sizes.

    No finite input overflows at any valid ``T``: normalised logits lie in ``[-1/T, 1/T]``,
    and without ``normalize`` each row's largest logit is subtracted before dividing by ``T``
    (the softmax is the same). A nan in an input gives a nan loss (for that query, or all of
    them when it sits in a shared negative or a key of the in-batch form), as torch's own
    losses do.

    Args:
        query: the queries ``q``.
        key: the positive key for each query.
        negatives: the negative keys, see above.
        temperature: positive finite ``T``; MoCo's default is 0.07. A 0-d floating-point
            tensor (e.g. from :class:`infonce.LearnableTemperature`) receives ``dL/dT``.
        reduction: ``"mean"`` | ``"sum"`` over the batch, or ``"none"`` for per-query losses.
        normalize: L2-normalise query, key and negatives along D first (cosine similarity).
        decoupled: the decoupled loss (DCL), see above.

    Returns:
        The loss: a scalar, or shape (N,) with ``reduction="none"``.

    Shape:
        query (N, D), key (N, D), negatives (K, D) or (N, M, D) or None; output () or (N,).

    Raises:
        ValueError: inputs that are not floating-point tensors, wrongly shaped (named with
            their shapes) or on two devices, an empty batch or D = 0, a temperature that is not
            a positive finite number normal in the compute dtype, an unknown reduction, a
            ``normalize`` or ``decoupled`` that is not a bool, or ``decoupled`` with no
            negative (K = 0, M = 0, or N = 1 in-batch). Nothing is broadcast.

    Examples:
        >>> q, k = torch.randn(8, 128), torch.randn(8, 128)
        >>> queue = torch.randn(4096, 128)
        >>> loss = info_nce(q, k, queue, temperature=0.07)
    """
    if isinstance(negatives, Tensor) and negatives.dim() == 2 and len(negatives) >= CHUNKED_FROM:
        return chunked_info_nce(
            query, key, negatives, temperature, reduction, normalize, decoupled=decoupled
        )
    temperature = check_info_nce(query, key, negatives, temperature, normalize, decoupled=decoupled)
    reduction = check_reduction(reduction)
    with torch.autocast(device_type=query.device.type, enabled=False):
        logits, labels = info_nce_similarities(query, key, negatives, normalize)  # (N, C) q.k
        temperature = temperature_like(temperature, logits)
        logits = over_temperature(logits, temperature, normalize, dim=1)  # (N, C) q.k / T
        if decoupled:
            return reduce_loss(decoupled_cross_entropy(logits, labels), reduction)  # (N,) DCL
        return F.cross_entropy(logits, labels, reduction=reduction)


def info_nce_logits(
    query: Tensor,
    key: Tensor,
    negatives: Tensor | None = None,
    temperature: float | Tensor = 0.07,
    normalize: bool = True,
) -> tuple[Tensor, Tensor]:
    """The logits of :func:`info_nce` divided by the temperature, and the positive's column.

    ``info_nce == F.cross_entropy(*info_nce_logits(...))``; use it to log accuracy or the
    mean positive and negative logits without computing them twice (``decoupled=True``'s
    loss is the log-sum-exp of a row without the positive's column, minus the positive's).
    With negatives, column 0 holds the positive: ``[q.k+, q.k_1, ..., q.k_K] / T``, shape
    (N, 1+K) or (N, 1+M), labels all 0. Without, ``q @ k.T / T``, shape (N, N), labels
    ``arange(N)`` (the diagonal). Logits are float32 (float64 for float64 inputs). Arguments
    and errors as :func:`info_nce`.
    With ``normalize`` every logit lies in ``[-1/T, 1/T]``, finite for any valid ``T``;
    without, a similarity so large that ``q.k / T`` exceeds the dtype's range is ``+-inf``
    here (:func:`info_nce` itself subtracts each row's maximum first and stays finite).

    Shape:
        logits (N, C) float, labels (N,) int64.
    """
    temperature = check_info_nce(query, key, negatives, temperature, normalize)
    with torch.autocast(device_type=query.device.type, enabled=False):
        similarities, labels = info_nce_similarities(query, key, negatives, normalize)  # (N, C)
        return similarities / temperature_like(temperature, similarities), labels


def info_nce_stats(
    query: Tensor,
    key: Tensor,
    negatives: Tensor | None = None,
    temperature: float | Tensor = 0.07,
    normalize: bool = True,
    decoupled: bool = False,
) -> InfoNCEStats:
    """Per-query :func:`info_nce` and the logit statistics a trainer logs, in one pass.

    For shared negatives (K, D) this is :func:`infonce.chunked.chunked_info_nce_stats` (no
    (N, 1+K) logits); otherwise the logits of :func:`info_nce_logits` give the same fields.
    The positive is the top-1 of its row exactly when ``positive_logit >= max_negative_logit``.
    With ``decoupled`` the loss is the decoupled one; the statistics are the same. Arguments
    and errors as :func:`info_nce`.

    Returns:
        :class:`infonce.chunked.InfoNCEStats`: ``loss`` (differentiable), ``positive_logit``,
        ``max_negative_logit``, ``mean_negative_logit`` (detached), all divided by ``T``.

    Shape:
        query (N, D), key (N, D), negatives (K, D) or (N, M, D) or None; every field (N,).
    """
    if isinstance(negatives, Tensor) and negatives.dim() == 2:  # checked there
        return chunked_info_nce_stats(
            query, key, negatives, temperature, normalize, decoupled=decoupled
        )
    temperature = check_info_nce(query, key, negatives, temperature, normalize, decoupled=decoupled)
    loss_of = decoupled_cross_entropy if decoupled else _cross_entropy_per_row
    with torch.autocast(device_type=query.device.type, enabled=False):
        logits, labels = info_nce_similarities(query, key, negatives, normalize)  # (N, C) q.k
        temperature = temperature_like(temperature, logits)
        if normalize:
            logits = logits / temperature  # (N, C) q.k / T
            loss = loss_of(logits, labels)  # (N,)
        else:  # the loss from shifted logits, the statistics from q.k / T (+-inf on overflow)
            shifted = shift_and_divide(logits, temperature, dim=1)  # (N, C)
            loss = loss_of(shifted, labels)  # (N,)
            with torch.no_grad():
                logits = logits / temperature  # (N, C)
    logits = logits.detach()
    positive = logits.gather(1, labels[:, None])  # (N, 1)
    others = logits.scatter(1, labels[:, None], -torch.inf)  # (N, C): the positive masked out
    count = max(1, logits.shape[1] - 1)
    return InfoNCEStats(
        loss,
        positive[:, 0],
        others.amax(dim=1),
        (logits.sum(dim=1) - positive[:, 0]) / count,
    )


def _cross_entropy_per_row(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels, reduction="none")  # (N,)


class InfoNCE(nn.Module):
    """Module form of :func:`info_nce`; validates its hyperparameters once, at construction.

    Args:
        temperature: positive finite ``T`` (default 0.07, as MoCo); or a module returning a
            0-d ``T`` when called, such as :class:`infonce.LearnableTemperature`, registered
            as a submodule (its parameter in ``parameters()`` and ``state_dict()``); or a 0-d
            tensor.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        normalize: L2-normalise the inputs first.
        decoupled: the decoupled loss (DCL), as :func:`info_nce`.

    Shape:
        query (N, D), key (N, D), negatives (K, D) or (N, M, D) or None; output () or (N,).

    Raises:
        ValueError: at construction, a temperature that is neither a module nor a positive
            finite number (or 0-d tensor), an unknown reduction, a non-bool ``normalize`` or
            ``decoupled``; when called, as :func:`info_nce`.

    Examples:
        >>> criterion = InfoNCE(temperature=0.2)
        >>> loss = criterion(torch.randn(8, 64), torch.randn(8, 64), torch.randn(100, 64))
        >>> learnable = InfoNCE(temperature=LearnableTemperature(0.07))
    """

    def __init__(
        self,
        temperature: float | Tensor | nn.Module = 0.07,
        reduction: str = "mean",
        normalize: bool = True,
        decoupled: bool = False,
    ):
        super().__init__()
        if not isinstance(temperature, nn.Module):  # the widest dtype: forward checks again
            temperature = check_temperature(temperature, allow_tensor=True, dtype=torch.float64)
        self.temperature = temperature
        self.reduction = check_reduction(reduction)
        self.normalize = check_bool(normalize, "normalize")
        self.decoupled = check_bool(decoupled, "decoupled")

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor | None = None) -> Tensor:
        t = self.temperature() if isinstance(self.temperature, nn.Module) else self.temperature
        return info_nce(query, key, negatives, t, self.reduction, self.normalize, self.decoupled)

    def extra_repr(self) -> str:
        t = "module" if isinstance(self.temperature, nn.Module) else self.temperature
        text = f"temperature={t}, reduction={self.reduction!r}, normalize={self.normalize}"
        return text + (", decoupled=True" if self.decoupled else "")


def separated_loss(
    num_negatives: int,
    temperature: float,
    positive_similarity: float = 1.0,
    negative_similarity: float = -1.0,
) -> float:
    """InfoNCE in closed form when every negative sits at the same similarity.

    ``log(1 + K * exp((s_neg - s_pos) / T))``, evaluated stably as a softplus. With the
    positive at similarity 1 and 1,023 negatives at -1, ``T = 1`` gives 4.94 while
    ``T = 0.07`` gives about 4e-10 (0.0 in float32): a low temperature makes a perfectly
    separated batch cost nothing, a high one keeps pushing.

    Args:
        num_negatives: K >= 0.
        temperature: positive finite ``T``.
        positive_similarity: ``s_pos``, the query-positive similarity.
        negative_similarity: ``s_neg``, the similarity of every negative.

    Returns:
        The loss as a Python float (float64 arithmetic).

    Raises:
        ValueError: K < 0 or not an integer; a temperature that is not a positive finite number
            (normal in float64); a similarity that is not a finite number.
    """
    check_int(num_negatives, "num_negatives", minimum=0)
    temperature = check_temperature(temperature, dtype=torch.float64)
    positive_similarity = check_finite_number(positive_similarity, "positive_similarity")
    negative_similarity = check_finite_number(negative_similarity, "negative_similarity")
    if num_negatives == 0:
        return 0.0
    z = (negative_similarity - positive_similarity) / temperature + math.log(num_negatives)
    return z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))
