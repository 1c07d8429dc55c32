"""SimCLR's NT-Xent and supervised contrastive (SupCon) losses: InfoNCE within a batch.

Same conventions as :func:`infonce.info_nce`: L2-normalised features by default, logits and
log-sum-exp in float32 (float64 for float64 inputs) with autocast off, ``temperature`` a
positive number or a 0-d tensor that receives its gradient, ``reduction`` mean | sum | none;
no finite input overflows at any valid ``T`` (normalised logits lie in ``[-1/T, 1/T]``; raw
ones have each anchor's largest subtracted before dividing by ``T``); a nan in the inputs
gives a nan loss, as in torch's losses.
With ``chunk_size``, anchors are processed that many rows at a time under activation
checkpointing, so the (M, M) similarity matrix of M = 2N (or N x views) embeddings is never
held whole: peak memory O(chunk_size x M) instead of O(M^2), for one more matrix product in
backward.

``gather_distributed=True`` (lightly's name) computes, on each rank of an initialised
``torch.distributed`` process group, the loss of its own anchors against every rank's
embeddings, gathered with their gradients (:func:`infonce.distributed.gather_with_grad`). The
reductions are scaled so that the average over ranks, which DDP applies to the gradients, is
the one-process loss of the whole batch: R ranks of N samples train as one process of RN.
Without a process group (or in a world of one) it changes nothing.
"""

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from infonce._checks import (
    check_bool,
    check_decoupled,
    check_float_tensor,
    check_int,
    check_reduction,
    check_same_device,
    check_temperature,
    describe,
    reduce_loss,
)
from infonce._numerics import compute_dtype, divide, shift_by_max, temperature_like
from infonce.distributed import gather_with_grad, rank_and_world_size

__all__ = ["nt_xent", "supcon"]


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float | Tensor = 0.5,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: int | None = None,
    decoupled: bool = False,
    gather_distributed: bool = False,
) -> Tensor:
    """NT-Xent (Chen et al., 2020, SimCLR): each of the 2N views against the 2N - 1 others.

    With ``z = cat(z1, z2)`` and ``s_ij = z_i . z_j / T``, view ``i``'s loss is
    ``-log exp(s_ip) / sum_{j != i} exp(s_ij)``, ``p`` its other view: the positive against
    the other 2N - 2 views as negatives. ``mean`` averages the 2N losses (SimCLR's
    ``1/2N sum_k [l(2k-1, 2k) + l(2k, 2k-1)]``).

    With ``decoupled``, the decoupled loss of DCL (Yeh et al., 2022): the positive view leaves
    the denominator, ``-s_ip + log sum_{j != i, p} exp(s_ij)`` over the 2N - 2 views of the
    other samples; it needs N >= 2 (over all ranks with ``gather_distributed``).

    With ``gather_distributed`` (see the module), each rank's 2N views are the anchors and
    the 2RN views of all R ranks the candidates; ``mean`` is over the local anchors (every
    rank must hold the same N), ``sum`` is the local sum times R, ``none`` the local losses.

    Args:
        z1, z2: the two views' embeddings; row ``i`` of each is the same sample.
        temperature: positive finite ``T`` (SimCLR: 0.5 at batch 256, 0.1 for large batches).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per view, ``z1``'s rows first).
        normalize: L2-normalise the embeddings first (cosine similarity, as SimCLR).
        chunk_size: anchors per checkpointed chunk (None: all at once), see the module.
        decoupled: the decoupled loss (DCL), see above.
        gather_distributed: gather the views of every rank, see above.

    Returns:
        The loss, float32 (float64 for float64 inputs): () or (2N,) for ``"none"``.

    Shape:
        z1 (N, D), z2 (N, D); output () or (2N,).

    Raises:
        ValueError: non-floating, mismatched inputs (with their shapes) or inputs on two
            devices, N < 1 or D < 1, a bad temperature, reduction, normalize or chunk_size,
            ``decoupled`` or ``gather_distributed`` not a bool, ``decoupled`` with a single
            sample, ranks with different shapes.

    Examples:
        >>> loss = nt_xent(torch.randn(256, 128), torch.randn(256, 128), temperature=0.5)
    """
    check_float_tensor(z1, "z1", ndim=2)
    check_float_tensor(z2, "z2", ndim=2)
    if z1.shape != z2.shape or min(z1.shape) < 1:
        raise ValueError(
            f"z1 and z2 must be non-empty and of one shape (N, D), got {tuple(z1.shape)} "
            f"and {tuple(z2.shape)}"
        )
    check_same_device(z2, "z2", z1, "z1")
    reduction = check_reduction(reduction)
    temperature = _check_hyperparameters(temperature, normalize, chunk_size, compute_dtype(z1, z2))
    rank, world = _world(gather_distributed)  # every check before the collectives
    N = z1.shape[0]
    check_decoupled(decoupled, world * N - 1, f"N = {world * N}: no other sample")
    z = torch.cat([z1, z2])  # (2N, D) this rank's views, the anchors
    views = gather_with_grad(z, "cat(z1, z2)") if world > 1 else [z]  # R x (2N, D)
    samples = [torch.arange(r * N, (r + 1) * N, device=z.device).repeat(2) for r in range(world)]
    columns, groups = _anchors_first(views, samples, rank)  # (2RN, D), (2RN,)
    args = (temperature, normalize, chunk_size, decoupled)
    loss, _ = _contrast(columns, groups, 2 * N, *args)  # (2N,)
    return reduce_loss(loss, reduction, world)


def supcon(
    features: Tensor,
    labels: Tensor | None = None,
    temperature: float | Tensor = 0.1,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: int | None = None,
    gather_distributed: bool = False,
    queue: Tensor | None = None,
    queue_labels: Tensor | None = None,
) -> Tensor:
    """Supervised contrastive loss (Khosla et al., 2020, ``L^sup_out``, their eq. 2).

    Every view of every sample is an anchor ``a``; its positives ``P(a)`` are the other views
    with its label; its softmax runs over all other views ``A(a)``:
    ``l(a) = -1/|P(a)| sum_{p in P(a)} log(exp(z_a.z_p / T) / sum_{j in A(a)} exp(z_a.z_j / T))``.
    Without labels every sample is its own class (SimCLR's case): with 2 views that is exactly
    :func:`nt_xent`. Unlike the reference code there is no ``T / base_temperature`` factor
    on the loss. An anchor without positives (a label seen once, with one view) has no term:
    its loss is 0 and ``mean`` averages over the anchors that have positives (0 when none has).

    With ``gather_distributed`` (see the module), each rank's views are the anchors and the
    views and labels of all ranks the candidates (labels gathered without gradient; without
    labels every sample of every rank is its own class). Ranks hold different numbers of
    anchors with positives, so ``mean`` is the local sum times ``R / (the number of anchors
    with positives over all ranks)``: not the local mean, but the ranks' average is the
    global mean exactly. ``sum`` is the local sum times R; ``none`` the local losses.

    With a ``queue`` of labelled keys (a MoCo-style SupCon: keys of earlier batches from a
    momentum encoder, :class:`infonce.MemoryQueue` with ``labelled=True``), its K rows join
    every anchor's candidates ``A(a)``, never anchors themselves: those with the anchor's label
    are positives in ``P(a)``, the others negatives. Under ``gather_distributed`` the queue must
    be the same on every rank (enqueue every rank's keys, as MoCo does); it is not gathered.

    Args:
        features: embeddings of ``views`` augmentations of each of N samples.
        labels: the class of each sample, or None (each sample its own class).
        temperature: positive finite ``T`` (0.1 in the paper).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per anchor, shape (N, views)).
        normalize: L2-normalise the embeddings first.
        chunk_size: anchors per checkpointed chunk (None: all at once), see the module.
        gather_distributed: gather the views and labels of every rank, see above.
        queue: (K, D) keys, candidates only, see above; needs ``labels`` and ``queue_labels``.
        queue_labels: the class of each queued key.

    Returns:
        The loss, float32 (float64 for float64 inputs): () or (N, views) for ``"none"``.

    Shape:
        features (N, views, D), labels (N,) integer or None, queue (K, D), queue_labels (K,)
        integer; output () or (N, views).

    Raises:
        ValueError: features not (N, views, D) floating point with N, views, D >= 1, labels
            not an (N,) integer tensor on the features' device, a bad temperature, reduction,
            normalize or chunk_size, ``gather_distributed`` not a bool, ranks with different
            shapes; ``queue`` without ``queue_labels`` (or the reverse) or without ``labels``,
            not floating (K, D) with the features' D, ``queue_labels`` not an (K,) integer
            tensor, either on another device.

    Examples:
        >>> features = torch.randn(128, 2, 64)  # 2 views of 128 images
        >>> loss = supcon(features, torch.randint(0, 10, (128,)))
    """
    check_float_tensor(features, "features", ndim=3)
    N, V, D = features.shape
    if min(N, V, D) < 1:
        raise ValueError(f"features must be (N, views, D) with all >= 1, got {(N, V, D)}")
    if queue is not None or queue_labels is not None:
        _check_queue(queue, queue_labels, labels, features)
    rank, world = _world(gather_distributed)  # every check before the collectives
    if labels is None:  # every sample its own class, over all ranks
        labels = torch.arange(rank * N, (rank + 1) * N, device=features.device)
    else:
        _check_integer_labels(labels, "labels", N, features)
    reduction = check_reduction(reduction)
    temperature = _check_hyperparameters(
        temperature, normalize, chunk_size, compute_dtype(features)
    )
    views = features.reshape(N * V, D)  # (N*V, D) sample-major, this rank's anchors
    groups = labels.repeat_interleave(V)  # (N*V,) their labels
    if world > 1:
        views, groups = gather_with_grad(views, "features"), gather_with_grad(groups, "labels")
    else:
        views, groups = [views], [groups]
    columns, groups = _anchors_first(views, groups, rank)  # (R*N*V, D), (R*N*V,)
    if queue is not None:  # candidates after every rank's views: (R*N*V + K, D), (R*N*V + K,)
        columns, groups = torch.cat([columns, queue]), torch.cat([groups, queue_labels])
    loss, positives = _contrast(columns, groups, N * V, temperature, normalize, chunk_size)
    if reduction == "none":
        return loss.view(N, V)
    if reduction == "sum":
        return loss.sum() * world
    # over the anchors with positives of every rank: |P(a)| is known for all of them here
    return loss.sum() * world / (positives[: world * N * V] > 0).sum().clamp_min(1)


def _check_integer_labels(labels, name: str, length: int, features: Tensor) -> None:
    """Raise ValueError unless ``labels`` is an integer (not bool) tensor of shape
    ``(length,)`` on the features' device."""
    if (
        not isinstance(labels, Tensor)
        or labels.shape != (length,)
        or labels.dtype.is_floating_point
        or labels.dtype.is_complex
        or labels.dtype == torch.bool
    ):
        got = describe(labels)
        raise ValueError(f"{name} must be an integer tensor of shape ({length},), got {got}")
    check_same_device(labels, name, features, "features")


def _check_queue(queue, queue_labels, labels, features: Tensor) -> None:
    """The checks of :func:`supcon`'s labelled queue (see its Raises)."""
    if queue is None or queue_labels is None:
        missing, given = ("queue", "queue_labels") if queue is None else ("queue_labels", "queue")
        raise ValueError(f"{given} needs {missing}: the queued keys and their classes go together")
    if labels is None:
        raise ValueError("a queue of labelled keys needs labels for the features, got None")
    check_float_tensor(queue, "queue", ndim=2)
    D = features.shape[2]
    if queue.shape[1] != D:
        raise ValueError(f"queue must be (K, {D}) like the features' D, got {tuple(queue.shape)}")
    check_same_device(queue, "queue", features, "features")
    _check_integer_labels(queue_labels, "queue_labels", queue.shape[0], features)


def _check_hyperparameters(
    temperature: float | Tensor, normalize: bool, chunk_size: int | None, dtype: torch.dtype
) -> float | Tensor:
    """The checks of ``temperature`` (normal in the compute ``dtype``), ``normalize`` and
    ``chunk_size`` (None or >= 1), made before any collective; returns the temperature."""
    temperature = check_temperature(temperature, allow_tensor=True, dtype=dtype)
    check_bool(normalize, "normalize")
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size")
    return temperature


def _world(gather_distributed: bool) -> tuple[int, int]:
    """(rank, world size) to gather over: (0, 1) unless ``gather_distributed``."""
    check_bool(gather_distributed, "gather_distributed")
    return rank_and_world_size() if gather_distributed else (0, 1)


def _anchors_first(rows: list[Tensor], groups: list[Tensor], rank: int) -> tuple[Tensor, Tensor]:
    """Every rank's rows and groups, this rank's first (its anchors: the diagonal of the
    similarities), then the others in rank order; the order of candidates does not matter.

    Shape: R x (n, D) and R x (n,); output (Rn, D), (Rn,).
    """
    order = [rank] + [r for r in range(len(rows)) if r != rank]
    if len(order) == 1:
        return rows[0], groups[0]
    return torch.cat([rows[r] for r in order]), torch.cat([groups[r] for r in order])


def _contrast(
    z: Tensor,
    group: Tensor,
    anchors: int,
    temperature,
    normalize: bool,
    chunk_size: int | None,
    decoupled: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per-anchor ``-mean_{p in P(a)} log softmax_{j != a}(z_a . z_j / T)_p`` of the first
    ``anchors`` rows of ``z`` against all of them, P(a) the other rows of the anchor's
    ``group``; 0 where P(a) is empty. With ``decoupled`` the softmax runs over the rows of
    other groups only (the anchor's group stays in the numerator).

    ``log softmax_p = l_ap - lse_a``, so the mean over P(a) is ``mean_p l_ap - lse_a``, and
    ``sum_p l_ap = z_a . (sum of the group's rows - z_a) / T``: one product with the group
    sums instead of a (M, M) mask. Only the logits and their log-sum-exp are (C, M).

    Arguments already checked (:func:`_check_hyperparameters`).

    Shape: z (M, D), group (M,) integer; output: the loss (anchors,) and |P(a)| (M,) int64,
    of every row (so that a mean over anchors with positives can count all ranks').
    """
    dtype = compute_dtype(z)
    M = z.shape[0]
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = z.to(dtype)
        z = F.normalize(z, dim=1) if normalize else z
        temperature = temperature_like(temperature, z)
        _, which = torch.unique(group, return_inverse=True)  # (M,) group index 0..G-1
        sums = z.new_zeros(int(which.max()) + 1, z.shape[1]).index_add(0, which, z)  # (G, D)
        positives = torch.bincount(which)[which] - 1  # (M,) |P(a)|
        others = sums[which] - z  # (M, D): sum of each anchor's positives
        if M == 1:  # one view of one sample: no positive, no softmax (its lse would be -inf)
            return z[:, 0] * 0.0, positives
        excluded = which if decoupled else None  # (M,) rows of the anchor's group leave the lse
        step = anchors if chunk_size is None else chunk_size
        parts = []
        for start in range(0, anchors, step):
            end = min(start + step, anchors)
            args = (z, start, end, others, positives, temperature, normalize, excluded)
            if chunk_size is None or not torch.is_grad_enabled():
                parts.append(_anchor_rows(*args))
            else:  # the (C, M) logits are recomputed in backward instead of kept
                parts.append(checkpoint(_anchor_rows, *args, use_reentrant=False))
        total = torch.cat(parts)  # (anchors,) sum over P(a) of log softmax
        count = positives[:anchors]  # (anchors,) |P(a)|
        return torch.where(count > 0, -total / count.clamp_min(1), 0.0), positives


def _anchor_rows(
    z: Tensor,
    start: int,
    end: int,
    others: Tensor,
    positives: Tensor,
    temperature,
    normalize: bool,
    excluded: Tensor | None,
) -> Tensor:
    """``sum_{p in P(a)} log softmax_p = sum_p l_ap - |P(a)| lse_a`` of the C anchors
    ``start:end``: z (M, D), others (M, D), positives (M,) -> (C,). With ``excluded`` (M,),
    the group index of every row, the lse leaves out the rows of the anchor's group
    (decoupled); else only the anchor itself.

    Normalised, ``l = s / T`` (finite: ``|s| <= 1``). Raw, with ``m`` each anchor's largest
    similarity over A(a), ``l - m / T = (s - m) / T`` has no entry above 0, so nothing
    overflows, and ``sum_p l_ap - |P| lse_a = (sum_p s_ap - |P| m) / T - |P| lse_a(l - m / T)``.
    """
    anchors = z[start:end]  # (C, D)
    count = positives[start:end]  # (C,) |P(a)|
    positive_sum = (anchors * others[start:end]).sum(dim=1)  # (C,) sum_p s_ap
    if normalize:
        logits = anchors @ z.T / temperature  # (C, M)
        _leave_out(logits, start, end, excluded)  # A(a): every view but a itself
        return positive_sum / temperature - count * torch.logsumexp(logits, dim=1)
    similarities = anchors @ z.T  # (C, M)
    _leave_out(similarities, start, end, excluded)  # A(a)
    shifted, shift = shift_by_max(similarities, dim=1)  # (C, M) <= 0, (C, 1): finite, M >= 2
    lse = torch.logsumexp(divide(shifted, temperature), dim=1)  # (C,)
    return (positive_sum - count * shift[:, 0]) / temperature - count * lse


def _leave_out(logits: Tensor, start: int, end: int, excluded: Tensor | None) -> None:
    """Set to ``-inf``, in place, the columns of (C, M) ``logits`` that leave anchor
    ``start + i``'s softmax: itself (the diagonal at ``start``), or with ``excluded`` every
    row of its group (decoupled: the anchor and its positives)."""
    if excluded is None:
        logits.diagonal(offset=start).fill_(-torch.inf)
    else:
        logits.masked_fill_(excluded[start:end, None] == excluded[None, :], -torch.inf)
