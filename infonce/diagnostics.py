"""What an embedding and its contrastive softmax look like: numbers worth logging each epoch.

Alignment and uniformity are Wang & Isola's (2020) two properties of a contrastive
representation; the entropy of the positive-vs-negatives softmax shows how peaked the
temperature makes it; the similarity of the hardest negatives shows how close the nearest
other images come.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from infonce._checks import check_float_tensor, check_info_nce_inputs, check_int
from infonce.info_nce import info_nce_logits


def alignment(x: Tensor, y: Tensor, alpha: float = 2.0) -> Tensor:
    """``E ||x_i - y_i||^alpha`` over positive pairs (Wang & Isola, 2020; their ``lalign``).

    0 when every pair coincides; 4 (for alpha = 2) when every pair is antipodal. Pass
    L2-normalised embeddings, as the paper does.

    Shape:
        x (N, D), y (N, D) float; output () float32 (float64 for float64 inputs).

    Raises:
        ValueError: shapes that differ or are not (N, D) with N >= 1, alpha <= 0.
    """
    check_float_tensor(x, "x", ndim=2)
    check_float_tensor(y, "y", ndim=2)
    if x.shape != y.shape or x.shape[0] < 1:
        raise ValueError(f"x and y must be one (N, D) shape, N >= 1; got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")  # fmt: skip
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    dtype = torch.promote_types(x.dtype, torch.float32)
    return (x.to(dtype) - y.to(dtype)).norm(dim=1).pow(alpha).mean()


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """``log E exp(-t ||x_i - x_j||^2)`` over pairs ``i < j`` (Wang & Isola, 2020; ``lunif``).

    Lower is more uniform on the sphere: for unit vectors it lies in ``[-4t, 0]``, 0 when all
    coincide. Computed as a log-sum-exp (no exp then log), in float32 or float64.

    Shape:
        x (N, D) float with N >= 2; output ().

    Raises:
        ValueError: x not (N, D) with N >= 2, t <= 0.
    """
    check_float_tensor(x, "x", ndim=2)
    if x.shape[0] < 2:
        raise ValueError(f"x needs N >= 2 rows for pairs, got shape {tuple(x.shape)}")
    if not t > 0:
        raise ValueError(f"t must be > 0, got {t}")
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    sq_dist = torch.pdist(x).pow(2)  # (N (N-1) / 2,)
    return torch.logsumexp(-t * sq_dist, dim=0) - math.log(sq_dist.numel())


def contrastive_entropy(
    query: Tensor,
    key: Tensor,
    negatives: Tensor | None,
    temperature: float | Tensor = 0.07,
    normalize: bool = True,
) -> Tensor:
    """Mean entropy (nats) of each query's softmax over its positive and its negatives.

    The softmax of :func:`infonce.info_nce` (same arguments): ``log(1 + K)`` when it is
    uniform (a temperature too high for the similarities), 0 when it is one-hot. Lower ``T``
    makes it peakier. ``H = lse(l) - sum_j p_j l_j``, computed from the log-softmax.

    Shape:
        query (N, D), key (N, D), negatives (K, D) or (N, M, D) or None; output ().
    """
    logits, _ = info_nce_logits(query, key, negatives, temperature, normalize)  # (N, C)
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def hardest_negative_similarity(
    query: Tensor, negatives: Tensor, top_k: int = 1, normalize: bool = True
) -> Tensor:
    """Mean cosine similarity of each query to its ``top_k`` most similar negatives.

    Near 1: some negatives are (near-)duplicates of the query, e.g. other views of the same
    image still in a queue, or a collapsing representation.

    Shape:
        query (N, D), negatives (K, D) with K >= top_k; output ().

    Raises:
        ValueError: wrong shapes, top_k < 1 or > K.
    """
    check_info_nce_inputs(query, query, negatives)
    if negatives.dim() != 2:
        raise ValueError(f"negatives must have shape (K, D), got {tuple(negatives.shape)}")
    check_int(top_k, "top_k")
    if top_k > negatives.shape[0]:
        raise ValueError(f"top_k must be <= K = {negatives.shape[0]}, got {top_k}")
    dtype = torch.promote_types(query.dtype, torch.float32)
    with torch.autocast(device_type=query.device.type, enabled=False):
        q, n = query.to(dtype), negatives.to(dtype)
        if normalize:
            q, n = F.normalize(q, dim=1), F.normalize(n, dim=1)
        return (q @ n.T).topk(top_k, dim=1).values.mean()  # (N, K) -> (N, top_k) -> ()


def embedding_diagnostics(
    query: Tensor, key: Tensor, negatives: Tensor | None, temperature: float | Tensor = 0.07
) -> dict[str, Tensor]:
    """The four diagnostics at once, for logging: ``alignment`` (query vs key), ``uniformity``
    (of the queries), ``entropy`` (:func:`contrastive_entropy` at ``temperature``) and, with
    shared negatives, ``hardest_negative`` (:func:`hardest_negative_similarity`, top-1).

    Pass L2-normalised embeddings (alignment and uniformity use them as given).

    Shape:
        query (N, D), key (N, D), negatives (K, D) or None; every value ().
    """
    values = {
        "alignment": alignment(query, key),
        "uniformity": uniformity(query),
        "entropy": contrastive_entropy(query, key, negatives, temperature),
    }
    if negatives is not None:
        values["hardest_negative"] = hardest_negative_similarity(query, negatives)
    return values
