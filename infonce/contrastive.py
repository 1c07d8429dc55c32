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
"""

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from infonce._checks import (
    check_bool,
    check_float_tensor,
    check_int,
    check_reduction,
    check_same_device,
    check_temperature,
    describe,
    reduce_loss,
)
from infonce._numerics import compute_dtype, divide, shift_by_max, temperature_like

__all__ = ["nt_xent", "supcon"]


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float | Tensor = 0.5,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: int | None = None,
) -> Tensor:
    """NT-Xent (Chen et al., 2020, SimCLR): each of the 2N views against the 2N - 1 others.

    With ``z = cat(z1, z2)`` and ``s_ij = z_i . z_j / T``, view ``i``'s loss is
    ``-log exp(s_ip) / sum_{j != i} exp(s_ij)``, ``p`` its other view: the positive against
    the other 2N - 2 views as negatives. ``mean`` averages the 2N losses (SimCLR's
    ``1/2N sum_k [l(2k-1, 2k) + l(2k, 2k-1)]``).

    Args:
        z1, z2: the two views' embeddings; row ``i`` of each is the same sample.
        temperature: positive finite ``T`` (SimCLR: 0.5 at batch 256, 0.1 for large batches).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per view, ``z1``'s rows first).
        normalize: L2-normalise the embeddings first (cosine similarity, as SimCLR).
        chunk_size: anchors per checkpointed chunk (None: all at once), see the module.

    Returns:
        The loss, float32 (float64 for float64 inputs): () or (2N,) for ``"none"``.

    Shape:
        z1 (N, D), z2 (N, D); output () or (2N,).

    Raises:
        ValueError: non-floating, mismatched inputs (with their shapes) or inputs on two
            devices, N < 1 or D < 1, a bad temperature, reduction, normalize or chunk_size.

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
    sample = torch.arange(z1.shape[0], device=z1.device).repeat(2)  # (2N,) views of one sample
    loss, _ = _contrast(torch.cat([z1, z2]), sample, temperature, normalize, chunk_size)  # (2N,)
    return reduce_loss(loss, reduction)


def supcon(
    features: Tensor,
    labels: Tensor | None = None,
    temperature: float | Tensor = 0.1,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: int | None = None,
) -> Tensor:
    """Supervised contrastive loss (Khosla et al., 2020, ``L^sup_out``, their eq. 2).

    Every view of every sample is an anchor ``a``; its positives ``P(a)`` are the other views
    with its label; its softmax runs over all other views ``A(a)``:
    ``l(a) = -1/|P(a)| sum_{p in P(a)} log(exp(z_a.z_p / T) / sum_{j in A(a)} exp(z_a.z_j / T))``.
    Without labels every sample is its own class (SimCLR's case): with 2 views that is exactly
    :func:`nt_xent`. Unlike the reference code there is no ``T / base_temperature`` factor
    on the loss. An anchor without positives (a label seen once, with one view) has no term:
    its loss is 0 and ``mean`` averages over the anchors that have positives (0 when none has).

    Args:
        features: embeddings of ``views`` augmentations of each of N samples.
        labels: the class of each sample, or None (each sample its own class).
        temperature: positive finite ``T`` (0.1 in the paper).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per anchor, shape (N, views)).
        normalize: L2-normalise the embeddings first.
        chunk_size: anchors per checkpointed chunk (None: all at once), see the module.

    Returns:
        The loss, float32 (float64 for float64 inputs): () or (N, views) for ``"none"``.

    Shape:
        features (N, views, D), labels (N,) integer or None; output () or (N, views).

    Raises:
        ValueError: features not (N, views, D) floating point with N, views, D >= 1, labels
            not an (N,) integer tensor on the features' device, a bad temperature, reduction,
            normalize or chunk_size.

    Examples:
        >>> features = torch.randn(128, 2, 64)  # 2 views of 128 images
        >>> loss = supcon(features, torch.randint(0, 10, (128,)))
    """
    check_float_tensor(features, "features", ndim=3)
    N, V, D = features.shape
    if min(N, V, D) < 1:
        raise ValueError(f"features must be (N, views, D) with all >= 1, got {(N, V, D)}")
    if labels is None:
        labels = torch.arange(N, device=features.device)
    elif (
        not isinstance(labels, Tensor)
        or labels.shape != (N,)
        or labels.dtype.is_floating_point
        or labels.dtype.is_complex
        or labels.dtype == torch.bool
    ):
        got = describe(labels)
        raise ValueError(f"labels must be an integer tensor of shape ({N},), got {got}")
    else:
        check_same_device(labels, "labels", features, "features")
    reduction = check_reduction(reduction)
    anchor_labels = labels.repeat_interleave(V)  # (N*V,) sample-major, as features.reshape
    loss, positives = _contrast(
        features.reshape(N * V, D), anchor_labels, temperature, normalize, chunk_size
    )  # fmt: skip  (N*V,) each
    if reduction == "none":
        return loss.view(N, V)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / (positives > 0).sum().clamp_min(1)  # over anchors with positives


def _contrast(
    z: Tensor, group: Tensor, temperature, normalize: bool, chunk_size: int | None
) -> tuple[Tensor, Tensor]:
    """Per-anchor ``-mean_{p in P(a)} log softmax_{j != a}(z_a . z_j / T)_p``, P(a) the
    other rows of the anchor's ``group``; 0 where P(a) is empty.

    ``log softmax_p = l_ap - lse_a``, so the mean over P(a) is ``mean_p l_ap - lse_a``, and
    ``sum_p l_ap = z_a . (sum of the group's rows - z_a) / T``: one product with the group
    sums instead of a (M, M) mask. Only the logits and their log-sum-exp are (C, M).

    Shape: z (M, D), group (M,) integer; output: the loss (M,) and |P(a)| (M,) int64.
    """
    dtype = compute_dtype(z)
    temperature = check_temperature(temperature, allow_tensor=True, dtype=dtype)
    check_bool(normalize, "normalize")
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size")
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
        step = M if chunk_size is None else chunk_size
        parts = []
        for start in range(0, M, step):
            end = min(start + step, M)
            args = (z, start, end, others, positives, temperature, normalize)
            if chunk_size is None or not torch.is_grad_enabled():
                parts.append(_anchor_rows(*args))
            else:  # the (C, M) logits are recomputed in backward instead of kept
                parts.append(checkpoint(_anchor_rows, *args, use_reentrant=False))
        total = torch.cat(parts)  # (M,) sum over P(a) of log softmax
        return torch.where(positives > 0, -total / positives.clamp_min(1), 0.0), positives


def _anchor_rows(
    z: Tensor, start: int, end: int, others: Tensor, positives: Tensor, temperature, normalize
) -> Tensor:
    """``sum_{p in P(a)} log softmax_p = sum_p l_ap - |P(a)| lse_a`` of the C anchors
    ``start:end``: z (M, D), others (M, D), positives (M,) -> (C,).

    Normalised, ``l = s / T`` (finite: ``|s| <= 1``). Raw, with ``m`` each anchor's largest
    similarity over A(a), ``l - m / T = (s - m) / T`` has no entry above 0, so nothing
    overflows, and ``sum_p l_ap - |P| lse_a = (sum_p s_ap - |P| m) / T - |P| lse_a(l - m / T)``.
    """
    anchors = z[start:end]  # (C, D)
    count = positives[start:end]  # (C,) |P(a)|
    positive_sum = (anchors * others[start:end]).sum(dim=1)  # (C,) sum_p s_ap
    if normalize:
        logits = anchors @ z.T / temperature  # (C, M)
        logits.diagonal(offset=start).fill_(-torch.inf)  # A(a): every view but a itself
        return positive_sum / temperature - count * torch.logsumexp(logits, dim=1)
    similarities = anchors @ z.T  # (C, M)
    similarities.diagonal(offset=start).fill_(-torch.inf)  # A(a)
    shifted, shift = shift_by_max(similarities, dim=1)  # (C, M) <= 0, (C, 1): finite, M >= 2
    lse = torch.logsumexp(divide(shifted, temperature), dim=1)  # (C,)
    return (positive_sum - count * shift[:, 0]) / temperature - count * lse
