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

from infonce._checks import (
    check_bool,
    check_float_tensor,
    check_info_nce,
    check_info_nce_inputs,
    check_int,
    check_positive,
    check_same_device,
)
from infonce._numerics import (
    compute_dtype,
    info_nce_similarities,
    over_temperature,
    temperature_like,
)

__all__ = [
    "alignment",
    "contrastive_entropy",
    "embedding_diagnostics",
    "hardest_negative_similarity",
    "temperature_gradient",
    "uniformity",
]


def alignment(x: Tensor, y: Tensor, alpha: float = 2.0) -> Tensor:
    """``E ||x_i - y_i||^alpha`` over positive pairs (Wang & Isola, 2020; their ``lalign``).

    0 when every pair coincides; 4 (for alpha = 2) when every pair is antipodal. Pass
    L2-normalised embeddings, as the paper does. A nan in a pair gives nan.

    Shape:
        x (N, D), y (N, D) float; output () float32 (float64 for float64 inputs).

    Raises:
        ValueError: x or y not a floating-point tensor, shapes that differ or are not (N, D)
            with N, D >= 1, the two on different devices, alpha not a positive finite number.
    """
    _check_pair(x, y, "x", "y")
    alpha = check_positive(alpha, "alpha")
    return _alignment(x, y, alpha)


def _check_pair(x: Tensor, y: Tensor, x_name: str, y_name: str) -> None:
    check_float_tensor(x, x_name, ndim=2)
    check_float_tensor(y, y_name, ndim=2)
    if x.shape != y.shape or min(x.shape) < 1:
        raise ValueError(f"{x_name} and {y_name} must be one (N, D) shape, N, D >= 1; got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")  # fmt: skip
    check_same_device(y, y_name, x, x_name)


def _alignment(x: Tensor, y: Tensor, alpha: float) -> Tensor:
    dtype = compute_dtype(x)
    return (x.to(dtype) - y.to(dtype)).norm(dim=1).pow(alpha).mean()


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """``log E exp(-t ||x_i - x_j||^2)`` over pairs ``i < j`` (Wang & Isola, 2020; ``lunif``).

    Lower is more uniform on the sphere: for unit vectors it lies in ``[-4t, 0]``, 0 when all
    coincide. Computed as a log-sum-exp (no exp then log), in float32 or float64. A nan in
    ``x`` gives nan.

    Shape:
        x (N, D) float with N >= 2; output ().

    Raises:
        ValueError: x not a floating-point (N, D) tensor with N >= 2 and D >= 1, t not a
            positive finite number.
    """
    _check_rows(x, "x")
    t = check_positive(t, "t")
    return _uniformity(x, t)


def _check_rows(x: Tensor, name: str) -> None:
    check_float_tensor(x, name, ndim=2)
    if x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(
            f"{name} needs N >= 2 rows for pairs (and D >= 1), got shape {tuple(x.shape)}"
        )


def _uniformity(x: Tensor, t: float) -> Tensor:
    x = x.to(compute_dtype(x))
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

    The softmax of :func:`infonce.info_nce` (same arguments, same errors): ``log(1 + K)`` when
    it is uniform (a temperature too high for the similarities), 0 when it is one-hot. Lower
    ``T`` makes it peakier. ``H = -sum_j p_j log p_j``, computed from the log-softmax of the
    logits of :func:`infonce.info_nce` (no overflow at any valid ``T``), with ``0 log 0 = 0``.

    Shape:
        query (N, D), key (N, D), negatives (K, D) or (N, M, D) or None; output ().

    Raises:
        ValueError: as :func:`infonce.info_nce`.
    """
    temperature = check_info_nce(query, key, negatives, temperature, normalize)
    return _entropy(query, key, negatives, temperature, normalize)


def _entropy(query, key, negatives, temperature, normalize) -> Tensor:
    with torch.autocast(device_type=query.device.type, enabled=False):
        similarities, _ = info_nce_similarities(query, key, negatives, normalize)  # (N, C)
        temperature = temperature_like(temperature, similarities)
        logits = over_temperature(similarities, temperature, normalize, dim=1)  # (N, C)
        log_p = F.log_softmax(logits, dim=1)  # (N, C); -inf where p underflows to 0
        finite = log_p.clamp_min(torch.finfo(log_p.dtype).min)  # p log p -> 0, not 0 * -inf
        return -(log_p.exp() * finite).sum(dim=1).mean()


def temperature_gradient(
    query: Tensor,
    key: Tensor,
    negatives: Tensor | None,
    temperature: float | Tensor = 0.07,
    normalize: bool = True,
) -> Tensor:
    """``dL/dT`` of the mean InfoNCE ``L`` of :func:`infonce.info_nce` (same arguments, same
    errors), in closed form: with ``s_ij`` query i's similarity to candidate j (its positive
    ``s_i+`` among them) and ``p_ij`` the softmax of ``s_ij / T`` over j,

        dL/dT = mean_i (s_i+ - sum_j p_ij s_ij) / T^2.

    It is positive whenever the positives outrank their rows' softmax-weighted mean, so a
    temperature learned by minimising InfoNCE itself decreases while most queries find their
    positive; as ``T -> 0`` a row whose positive is its strict maximum contributes
    ``0+``, one whose positive is outranked ``(s_i+ - max_j s_ij) / T^2 < 0``: the minimiser
    of ``L`` over ``T`` is set by the queries the network still gets wrong (near 0 when
    there are few), not by what makes a good representation.

    Shape:
        query (N, D), key (N, D), negatives (K, D) or (N, M, D) or None; output () float32
        (float64 for float64 inputs), without a gradient.

    Raises:
        ValueError: as :func:`infonce.info_nce`.
    """
    temperature = check_info_nce(query, key, negatives, temperature, normalize)
    with torch.no_grad(), torch.autocast(device_type=query.device.type, enabled=False):
        similarities, labels = info_nce_similarities(query, key, negatives, normalize)  # (N, C)
        t = temperature_like(temperature, similarities)
        p = F.softmax(over_temperature(similarities, t, normalize, dim=1), dim=1)  # (N, C)
        positive = similarities.gather(1, labels[:, None])[:, 0]  # (N,)
        return ((positive - (p * similarities).sum(dim=1)) / t**2).mean()


def hardest_negative_similarity(
    query: Tensor, negatives: Tensor, top_k: int = 1, normalize: bool = True
) -> Tensor:
    """Mean cosine similarity of each query to its ``top_k`` most similar negatives.

    Near 1: some negatives are (near-)duplicates of the query, e.g. other views of the same
    image still in a queue, or a collapsing representation. Negatives are shared (K, D), or
    each query's own (N, M, D), as in :func:`infonce.info_nce`.

    Shape:
        query (N, D), negatives (K, D) with K >= top_k or (N, M, D) with M >= top_k;
        output ().

    Raises:
        ValueError: query not a floating-point (N, D) tensor with N, D >= 1, negatives not a
            floating-point (K, D) or (N, M, D) tensor on query's device (None included),
            top_k not an integer in [1, K], normalize not a bool.
    """
    _check_negatives(query, negatives)
    check_int(top_k, "top_k")
    check_bool(normalize, "normalize")
    count = negatives.shape[-2]  # K or M
    if top_k > count:
        raise ValueError(
            f"top_k must be <= {count}, the number of negatives per query (negatives of shape "
            f"{tuple(negatives.shape)}), got {top_k}"
        )
    return _hardest(query, negatives, top_k, normalize)


def _check_negatives(query: Tensor, negatives: Tensor) -> None:
    if negatives is None:
        raise ValueError("negatives must be a (K, D) or (N, M, D) tensor, got None")
    check_info_nce_inputs(query, query, negatives)


def _hardest(query: Tensor, negatives: Tensor, top_k: int, normalize: bool) -> Tensor:
    dtype = compute_dtype(query)
    with torch.autocast(device_type=query.device.type, enabled=False):
        q, n = query.to(dtype), negatives.to(dtype)
        if normalize:
            q, n = F.normalize(q, dim=-1), F.normalize(n, dim=-1)
        if n.dim() == 2:
            sims = q @ n.T  # (N, K)
        else:
            sims = torch.einsum("nd,nmd->nm", q, n)  # (N, M)
        return sims.topk(top_k, dim=1).values.mean()  # (N, top_k) -> ()


def embedding_diagnostics(
    query: Tensor, key: Tensor, negatives: Tensor | None, temperature: float | Tensor = 0.07
) -> dict[str, Tensor]:
    """The four diagnostics at once, for logging: ``alignment`` (query vs key), ``uniformity``
    (of the queries), ``entropy`` (:func:`contrastive_entropy` at ``temperature``) and, when
    there are negatives (not None, not empty), ``hardest_negative``
    (:func:`hardest_negative_similarity`, top-1).

    Pass L2-normalised embeddings (alignment and uniformity use them as given).

    Shape:
        query (N, D) with N >= 2, key (N, D), negatives (K, D), (N, M, D) or None; every
        value ().

    Raises:
        ValueError: as :func:`infonce.info_nce` (naming ``query``, ``key``, ``negatives``,
            ``temperature``), or fewer than 2 queries.
    """
    temperature = check_info_nce(query, key, negatives, temperature, True)
    _check_rows(query, "query")
    values = {
        "alignment": _alignment(query, key, 2.0),
        "uniformity": _uniformity(query, 2.0),
        "entropy": _entropy(query, key, negatives, temperature, True),
    }
    if negatives is not None and negatives.shape[-2] > 0:
        values["hardest_negative"] = _hardest(query, negatives, 1, True)
    return values
