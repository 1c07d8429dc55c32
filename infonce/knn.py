"""Weighted k-nearest-neighbour monitor: the kNN accuracy of the MoCo CIFAR demo.

The protocol of Wu et al. 2018 ("Unsupervised feature learning via non-parametric instance
discrimination"): each query's ``k`` most cosine-similar training items vote for their labels
with weight ``exp(similarity / temperature)``; the class with the largest total wins. Defaults
``k=200``, ``temperature=0.1`` are the demo's ``knn_k`` and ``knn_t``.
"""

import math

import torch
from torch import Tensor

from infonce._checks import (
    check_float_tensor,
    check_int,
    check_labels,
    check_same_device,
    check_temperature,
)
from infonce._numerics import compute_dtype
from infonce.distributed import AllGather, gather_rows, single_process_gather

__all__ = ["knn_accuracy", "knn_neighbours", "knn_predict", "sharded_knn_accuracy"]

_CHUNK_SIZE = 1024  # queries per matrix product


@torch.no_grad()
def knn_predict(
    features: Tensor,
    memory_features: Tensor,
    memory_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = _CHUNK_SIZE,
) -> Tensor:
    """Class scores of each query from its ``k`` nearest memory items, weighted by similarity.

    For query ``i`` with neighbours ``j`` (the ``k`` largest ``sim_ij = features[i] .
    memory_features[j]``, ``j = 1`` the nearest), ``scores[i, c] = sum_j exp((sim_ij - sim_i1)
    / temperature) * [label_j == c]``: Wu et al.'s weights ``exp(sim / temperature)`` divided
    by the nearest neighbour's, so the nearest weighs 1 and nothing overflows at any
    temperature (the plain weights overflow float32 below ``temperature`` ~0.0113); the
    ranking of the classes, hence the prediction, is the same.
    Both feature sets must be L2-normalised already (this function does not normalise), so
    that the dot product is the cosine similarity. Queries are processed ``chunk_size`` at a
    time: memory use is O(chunk_size x N), never M x N. Runs under ``torch.no_grad()``.
    It is the vote of :func:`knn_neighbours`; a memory split over several processes is
    searched by :func:`sharded_knn_accuracy`.

    Args:
        features: queries, L2-normalised rows.
        memory_features: the labelled bank (e.g. the training set), L2-normalised rows; any
            floating dtype (float16 halves its memory), similarities are float32 or wider.
        memory_labels: int64 labels of the bank, in ``[0, num_classes)``.
        num_classes: number of classes ``C``.
        k: neighbours per query; values above ``N`` use all ``N``.
        temperature: positive, normal in the compute dtype (at least 1.2e-38 in float32).
        chunk_size: queries scored per matrix product.

    Returns:
        Scores in float32 (float64 for float64 inputs); ``argmax(dim=1)`` is the prediction.

    Shape:
        features (M, D), memory_features (N, D), memory_labels (N,); output (M, C).

    Raises:
        ValueError: non-float or non-2-D features, mismatched ``D``, tensors on different
            devices, empty memory, labels that are not an int64 vector of length ``N`` or are
            outside ``[0, num_classes)``, ``num_classes``, ``k``, ``chunk_size`` not integers
            >= 1, or a ``temperature`` that is not a positive finite number.

    Examples:
        >>> bank = torch.nn.functional.normalize(torch.randn(100, 8), dim=1)
        >>> knn_predict(bank[:3], bank, torch.arange(100) % 4, num_classes=4, k=10).shape
        torch.Size([3, 4])
    """
    temperature = _check_predict(
        features, memory_features, memory_labels, num_classes, k, temperature
    )
    check_int(chunk_size, "chunk_size")
    sims, labels = _neighbours(features, memory_features, memory_labels, k, chunk_size)
    return _vote(sims, labels, num_classes, temperature)


@torch.no_grad()
def knn_neighbours(
    features: Tensor,
    memory_features: Tensor,
    memory_labels: Tensor,
    k: int = 200,
    chunk_size: int = _CHUNK_SIZE,
    memory_chunk_size: int = 65536,
) -> tuple[Tensor, Tensor]:
    """The ``min(k, N)`` most similar memory items of each query: similarities and labels.

    Queries are taken ``chunk_size`` and memory rows ``memory_chunk_size`` at a time (each
    memory chunk cast to float32 or wider for the product, the running top k merged), so a
    float16 memory is never copied whole and the similarities take ``chunk_size x
    memory_chunk_size`` floats at most. Arguments as :func:`knn_predict`; an empty memory
    (N = 0) gives no neighbours. Labels are not read (no range check, no device sync).

    Returns:
        ``(sims, labels)``, each (M, min(k, N)), similarities descending, float32 or wider.

    Shape:
        features (M, D), memory_features (N, D), memory_labels (N,); each output (M, min(k, N)).

    Raises:
        ValueError: non-float or non-2-D features, mismatched ``D``, tensors on different
            devices, labels that are not an int64 vector of length ``N``, or ``k``,
            ``chunk_size``, ``memory_chunk_size`` not integers >= 1.
    """
    _check_bank(features, memory_features, memory_labels)
    check_int(k, "k")
    check_int(chunk_size, "chunk_size")
    check_int(memory_chunk_size, "memory_chunk_size")
    return _neighbours(features, memory_features, memory_labels, k, chunk_size, memory_chunk_size)


def _neighbours(
    features: Tensor,
    memory_features: Tensor,
    memory_labels: Tensor,
    k: int,
    chunk_size: int,
    memory_chunk_size: int = 65536,
) -> tuple[Tensor, Tensor]:
    """:func:`knn_neighbours` on checked arguments."""
    k = min(k, memory_features.shape[0])
    dtype = compute_dtype(features, memory_features)
    sims, labels = [], []
    for query in features.to(dtype).split(chunk_size):
        top = query.new_full((len(query), 0), -torch.inf)  # (m, <= k) running best
        top_labels = memory_labels.new_zeros((len(query), 0))
        for start in range(0, memory_features.shape[0], memory_chunk_size):
            block = memory_features[start : start + memory_chunk_size].to(dtype)  # (n, D)
            block_sims, index = (query @ block.T).topk(min(k, len(block)), dim=1)  # (m, <= k)
            block_labels = memory_labels[start : start + memory_chunk_size][index]
            top, top_labels = _merge_neighbours(
                torch.cat([top, block_sims], dim=1), torch.cat([top_labels, block_labels], dim=1), k
            )
        sims.append(top)
        labels.append(top_labels)
    if not sims:  # M == 0
        return features.new_zeros(0, k, dtype=dtype), memory_labels.new_zeros(0, k)
    return torch.cat(sims), torch.cat(labels)


def _merge_neighbours(sims: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` best of several shards' neighbours, laid side by side along dim 1.

    Shards with fewer than ``k`` items pad their columns with ``-inf`` similarities.

    Shape:
        sims, labels (M, S x k'); output (M, min(k, S x k')) each.
    """
    top, index = sims.topk(min(k, sims.shape[1]), dim=1)
    return top, labels.gather(1, index)


def _vote(sims: Tensor, labels: Tensor, num_classes: int, temperature: float) -> Tensor:
    """Class scores ``sum_j exp((sims_ij - sims_i1) / temperature) [labels_ij == c]`` of
    neighbours sorted by similarity (column 0 the nearest, finite): each weight relative to
    the nearest's, so none overflows.

    Shape:
        sims (M, k) float, labels (M, k) int64; output (M, C) in the dtype of ``sims``.
    """
    scores = sims.new_zeros(sims.shape[0], num_classes)  # (M, C)
    if sims.shape[1] == 0:
        return scores
    weight = ((sims - sims[:, :1]) / temperature).exp()  # (M, k) <= 1; exp(-inf) = 0: padding
    return scores.scatter_add_(1, labels, weight)


@torch.no_grad()
def sharded_knn_accuracy(
    queries: Tensor,
    labels: Tensor,
    memory: Tensor,
    memory_labels: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    all_gather: AllGather = single_process_gather,
    chunk_size: int = _CHUNK_SIZE,
) -> float | None:
    """:func:`knn_accuracy` with queries and memory spread over ranks, each item on one rank.

    Every rank keeps only its shard of the memory (e.g. in float16: 128-d features of
    ImageNet's 1.28 M images are 328 MB in all, divided by the world size). The queries of all
    ranks are gathered to every rank; for ``chunk_size`` queries at a time each rank finds
    their ``k`` nearest items in its shard, and the ``world x k`` candidates (float32
    similarity, int32 label: 8 bytes each) are gathered and merged into the global ``k``
    nearest: the same neighbours, votes and accuracy as one process holding everything (up to
    ties in similarity). Every rank returns the same value; ``num_classes`` comes from the
    labels.

    Args:
        queries, labels: this rank's queries (L2-normalised rows) and their int64 labels.
        memory, memory_labels: this rank's shard of the memory, L2-normalised rows.
        k, temperature: as :func:`knn_predict`.
        all_gather: stacks a tensor of every rank (``LightningModule.all_gather``); the
            default is a world of one.
        chunk_size: queries merged at a time: ``world x chunk_size x k x 8`` bytes of
            candidates, plus ``chunk_size x 65,536`` float32 similarities while searching.

    Returns:
        The top-1 accuracy in [0, 1]; nan when a score is not finite (a nan in a query or a
        memory row: every rank merges the same scores, so every rank returns nan); None when
        no rank holds a query or no rank holds memory (e.g. the first batches of Lightning's
        sanity check).

    Shape:
        queries (m_r, D), labels (m_r,), memory (n_r, D), memory_labels (n_r,).

    Raises:
        ValueError: queries or memory not floating-point (rows, D) tensors with one D,
            labels or memory_labels not int64 vectors of their lengths with values >= 0,
            tensors on different devices, ``all_gather`` not callable, ``k`` or
            ``chunk_size`` not integers >= 1, or a bad ``temperature``.
    """
    _check_bank(queries, memory, memory_labels, ("queries", "memory", "memory_labels"), read=True)
    check_labels(labels, "labels", len(queries), rows_of="queries")  # >= 0
    check_same_device(labels, "labels", queries, "queries")
    if not callable(all_gather):
        raise ValueError(f"all_gather must be callable, got {type(all_gather).__name__}")
    check_int(k, "k")
    check_int(chunk_size, "chunk_size")
    temperature = check_temperature(temperature)  # the votes are float32
    sizes = torch.tensor([len(memory), len(queries)], device=queries.device)
    if (all_gather(sizes).sum(dim=0) == 0).any():
        return None
    queries, labels = gather_rows(queries, all_gather), gather_rows(labels, all_gather)
    num_classes = int(labels.max()) + 1
    if len(memory_labels):
        num_classes = max(num_classes, int(memory_labels.max()) + 1)
    num_classes = int(all_gather(torch.tensor(num_classes, device=queries.device)).max())
    correct = torch.zeros((), dtype=torch.int64, device=queries.device)
    finite = torch.ones((), dtype=torch.bool, device=queries.device)
    for start in range(0, len(queries), chunk_size):
        chunk = queries[start : start + chunk_size]  # (m, D)
        # (m, k) float32 similarities, padded with -inf
        sims = torch.full((len(chunk), k), -torch.inf, dtype=torch.float32, device=chunk.device)
        neighbours = torch.zeros((len(chunk), k), dtype=torch.int32, device=chunk.device)
        if len(memory):
            found, found_labels = _neighbours(chunk, memory, memory_labels, k, chunk_size)
            sims[:, : found.shape[1]] = found
            neighbours[:, : found.shape[1]] = found_labels.to(torch.int32)
        sims = all_gather(sims).permute(1, 0, 2).flatten(1)  # (m, world * k)
        neighbours = all_gather(neighbours).permute(1, 0, 2).flatten(1).long()
        sims, neighbours = _merge_neighbours(sims, neighbours, k)  # (m, k): the global k nearest
        scores = _vote(sims, neighbours, num_classes, temperature)  # (m, C)
        finite &= torch.isfinite(scores).all()  # every rank merged the same scores
        correct += (scores.argmax(dim=1) == labels[start : start + chunk_size]).sum()
    # read after the last collective, so that every rank reaches each one
    return float(correct) / len(queries) if bool(finite) else math.nan


@torch.no_grad()
def knn_accuracy(
    features: Tensor,
    labels: Tensor,
    memory_features: Tensor,
    memory_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Top-1 accuracy of :func:`knn_predict`'s predictions, in ``[0, 1]``.

    Args:
        features: queries (e.g. the test set), L2-normalised rows.
        labels: the queries' int64 labels.
        memory_features: the labelled bank, L2-normalised rows.
        memory_labels: int64 labels of the bank.
        num_classes: number of classes ``C``.
        k: neighbours per query.
        temperature: weight temperature.

    Returns:
        The fraction of queries whose highest-scoring class is their label (ties go to the
        lowest class index); nan when a score is not finite (a nan in a query or a memory
        row), never a finite value.

    Shape:
        features (M, D), labels (M,), memory_features (N, D), memory_labels (N,).

    Raises:
        ValueError: as :func:`knn_predict`; also ``M == 0`` or ``labels`` not an int64 vector
            of length ``M`` in ``[0, num_classes)`` on the features' device.
    """
    bank = (features, memory_features, memory_labels)
    temperature = _check_predict(*bank, num_classes, k, temperature)
    if features.shape[0] == 0:
        raise ValueError(
            f"features must hold at least one query, got shape {tuple(features.shape)}"
        )
    check_labels(labels, "labels", len(features), num_classes, rows_of="features")
    check_same_device(labels, "labels", features, "features")
    sims, neighbours = _neighbours(*bank, k, _CHUNK_SIZE)
    scores = _vote(sims, neighbours, num_classes, temperature)  # (M, C)
    if not torch.isfinite(scores).all():  # a nan query or memory row: no accuracy to report
        return math.nan
    return (scores.argmax(dim=1) == labels).double().mean().item()


def _check_predict(
    features: Tensor,
    memory_features: Tensor,
    memory_labels: Tensor,
    num_classes: int,
    k: int,
    temperature: float,
) -> float:
    """The checks of :func:`knn_predict` but ``chunk_size``'s; returns the temperature."""
    check_float_tensor(memory_features, "memory_features", ndim=2)
    if memory_features.shape[0] == 0:
        shape = tuple(memory_features.shape)
        raise ValueError(f"memory_features must hold at least one row, got shape {shape}")
    check_int(num_classes, "num_classes")
    _check_bank(features, memory_features, memory_labels, num_classes=num_classes, read=True)
    check_int(k, "k")
    return check_temperature(temperature, dtype=compute_dtype(features, memory_features))


def _check_bank(
    features: Tensor,
    memory_features: Tensor,
    memory_labels: Tensor,
    names: tuple[str, str, str] = ("features", "memory_features", "memory_labels"),
    num_classes: int | None = None,
    read: bool = False,
) -> None:
    """Shapes, dtypes and devices of queries (M, D), memory (N, D) and its labels (N,); with
    ``read``, the labels' values too: in ``[0, num_classes)``, or ``>= 0`` without it."""
    features_name, memory_name, labels_name = names
    check_float_tensor(features, features_name, ndim=2)
    check_float_tensor(memory_features, memory_name, ndim=2)
    if features.shape[1] != memory_features.shape[1]:
        raise ValueError(
            f"{features_name} and {memory_name} must have the same dimension D, got shapes "
            f"{tuple(features.shape)} and {tuple(memory_features.shape)}"
        )
    check_same_device(memory_features, memory_name, features, features_name)
    N = len(memory_features)
    check_labels(memory_labels, labels_name, N, num_classes, rows_of=memory_name, read=read)
    check_same_device(memory_labels, labels_name, memory_features, memory_name)
