"""Weighted k-nearest-neighbour monitor: the kNN accuracy of the MoCo CIFAR demo.

The protocol of Wu et al. 2018 ("Unsupervised feature learning via non-parametric instance
discrimination"): each query's ``k`` most cosine-similar training items vote for their labels
with weight ``exp(similarity / temperature)``; the class with the largest total wins. Defaults
``k=200``, ``temperature=0.1`` are the demo's ``knn_k`` and ``knn_t``.
"""

import torch
from torch import Tensor

from infonce._checks import check_float_tensor, check_int, check_temperature
from infonce.distributed import AllGather, gather_rows, single_process_gather


@torch.no_grad()
def knn_predict(
    features: Tensor,
    memory_features: Tensor,
    memory_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores of each query from its ``k`` nearest memory items, weighted by similarity.

    For query ``i`` with neighbours ``j`` (the ``k`` largest ``sim_ij = features[i] .
    memory_features[j]``), ``scores[i, c] = sum_j exp(sim_ij / temperature) * [label_j == c]``.
    Both feature sets must be L2-normalised already (this function does not normalise), so
    that the dot product is the cosine similarity. Queries are processed ``chunk_size`` at a
    time: memory use is O(chunk_size x N), never M x N. Runs under ``torch.no_grad()``.
    It is :func:`knn_vote` of :func:`knn_neighbours`; a memory split over several processes
    merges the neighbours of its shards with :func:`merge_neighbours` before the vote.

    Args:
        features: queries, L2-normalised rows.
        memory_features: the labelled bank (e.g. the training set), L2-normalised rows; any
            floating dtype (float16 halves its memory), similarities are float32 or wider.
        memory_labels: int64 labels of the bank, in ``[0, num_classes)``.
        num_classes: number of classes ``C``.
        k: neighbours per query; values above ``N`` use all ``N``.
        temperature: positive; the weights ``exp(sim / temperature)`` overflow float32 for
            ``temperature`` below about 0.0113.
        chunk_size: queries scored per matrix product.

    Returns:
        Scores in float32 (float64 for float64 inputs); ``argmax(dim=1)`` is the prediction.

    Shape:
        features (M, D), memory_features (N, D), memory_labels (N,); output (M, C).

    Raises:
        ValueError: non-float or non-2-D features, mismatched ``D``, empty memory, labels that
            are not an int64 vector of length ``N`` or are outside ``[0, num_classes)``, or
            ``num_classes``, ``k``, ``chunk_size`` < 1, or a non-positive ``temperature``.

    Examples:
        >>> bank = torch.nn.functional.normalize(torch.randn(100, 8), dim=1)
        >>> knn_predict(bank[:3], bank, torch.arange(100) % 4, num_classes=4, k=10).shape
        torch.Size([3, 4])
    """
    _check_inputs(features, memory_features, memory_labels, num_classes)
    temperature = check_temperature(temperature)
    sims, labels = knn_neighbours(features, memory_features, memory_labels, k, chunk_size)
    return knn_vote(sims, labels, num_classes, temperature)


@torch.no_grad()
def knn_neighbours(
    features: Tensor,
    memory_features: Tensor,
    memory_labels: Tensor,
    k: int = 200,
    chunk_size: int = 1024,
    memory_chunk_size: int = 65536,
) -> tuple[Tensor, Tensor]:
    """The ``min(k, N)`` most similar memory items of each query: similarities and labels.

    Queries are taken ``chunk_size`` and memory rows ``memory_chunk_size`` at a time (each
    memory chunk cast to float32 or wider for the product, the running top k merged), so a
    float16 memory is never copied whole and the similarities take ``chunk_size x
    memory_chunk_size`` floats at most. Arguments as :func:`knn_predict` (not checked again
    here beyond the sizes).

    Returns:
        ``(sims, labels)``, each (M, min(k, N)), similarities descending, float32 or wider.
    """
    check_int(k, "k")
    check_int(chunk_size, "chunk_size")
    check_int(memory_chunk_size, "memory_chunk_size")
    k = min(k, memory_features.shape[0])
    dtype = torch.promote_types(features.dtype, memory_features.dtype)
    dtype = torch.promote_types(dtype, torch.float32)
    sims, labels = [], []
    for query in features.to(dtype).split(chunk_size):
        top = query.new_full((len(query), 0), -torch.inf)  # (m, <= k) running best
        top_labels = memory_labels.new_zeros((len(query), 0))
        for start in range(0, memory_features.shape[0], memory_chunk_size):
            block = memory_features[start : start + memory_chunk_size].to(dtype)  # (n, D)
            block_sims, index = (query @ block.T).topk(min(k, len(block)), dim=1)  # (m, <= k)
            block_labels = memory_labels[start : start + memory_chunk_size][index]
            top, top_labels = merge_neighbours(
                torch.cat([top, block_sims], dim=1), torch.cat([top_labels, block_labels], dim=1), k
            )
        sims.append(top)
        labels.append(top_labels)
    if not sims:  # M == 0
        return features.new_zeros(0, k, dtype=dtype), memory_labels.new_zeros(0, k)
    return torch.cat(sims), torch.cat(labels)


def merge_neighbours(sims: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` best of several shards' neighbours, laid side by side along dim 1.

    Shards with fewer than ``k`` items pad their columns with ``-inf`` similarities.

    Shape:
        sims, labels (M, S x k'); output (M, min(k, S x k')) each.
    """
    top, index = sims.topk(min(k, sims.shape[1]), dim=1)
    return top, labels.gather(1, index)


def knn_vote(sims: Tensor, labels: Tensor, num_classes: int, temperature: float) -> Tensor:
    """Class scores ``sum_j exp(sims_ij / temperature) [labels_ij == c]`` of neighbours.

    Shape:
        sims (M, k) float, labels (M, k) int64; output (M, C) in the dtype of ``sims``.
    """
    weight = (sims / temperature).exp()  # (M, k); exp(-inf) = 0 for padding
    scores = sims.new_zeros(sims.shape[0], num_classes)  # (M, C)
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
    chunk_size: int = 1024,
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
        The top-1 accuracy in [0, 1], or None when no rank holds a query or no rank holds
        memory (e.g. the first batches of Lightning's sanity check).

    Shape:
        queries (m_r, D), labels (m_r,), memory (n_r, D), memory_labels (n_r,).
    """
    check_int(k, "k")
    check_int(chunk_size, "chunk_size")
    temperature = check_temperature(temperature)
    sizes = torch.tensor([len(memory), len(queries)], device=queries.device)
    if (all_gather(sizes).sum(dim=0) == 0).any():
        return None
    queries, labels = gather_rows(queries, all_gather), gather_rows(labels, all_gather)
    num_classes = int(labels.max()) + 1
    if len(memory_labels):
        num_classes = max(num_classes, int(memory_labels.max()) + 1)
    num_classes = int(all_gather(torch.tensor(num_classes, device=queries.device)).max())
    correct = 0
    for start in range(0, len(queries), chunk_size):
        chunk = queries[start : start + chunk_size]  # (m, D)
        sims = torch.full((len(chunk), k), -torch.inf, device=chunk.device)  # (m, k), padded
        neighbours = torch.zeros((len(chunk), k), dtype=torch.int32, device=chunk.device)
        if len(memory):
            found, found_labels = knn_neighbours(chunk, memory, memory_labels, k)  # (m, <= k)
            sims[:, : found.shape[1]] = found
            neighbours[:, : found.shape[1]] = found_labels.to(torch.int32)
        sims = all_gather(sims).permute(1, 0, 2).flatten(1)  # (m, world * k)
        neighbours = all_gather(neighbours).permute(1, 0, 2).flatten(1).long()
        sims, neighbours = merge_neighbours(sims, neighbours, k)  # (m, k): the global k nearest
        scores = knn_vote(sims, neighbours, num_classes, temperature)  # (m, C)
        correct += int((scores.argmax(dim=1) == labels[start : start + chunk_size]).sum())
    return correct / len(queries)


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
        lowest class index).

    Shape:
        features (M, D), labels (M,), memory_features (N, D), memory_labels (N,).

    Raises:
        ValueError: as :func:`knn_predict`; also ``M == 0`` or ``labels`` not an int64 vector
            of length ``M``.
    """
    check_float_tensor(features, "features", ndim=2)
    if features.shape[0] == 0:
        raise ValueError(
            f"features must hold at least one query, got shape {tuple(features.shape)}"
        )
    _check_labels(labels, "labels", features.shape[0], num_classes)
    scores = knn_predict(features, memory_features, memory_labels, num_classes, k, temperature)
    return (scores.argmax(dim=1) == labels).double().mean().item()


def _check_inputs(
    features: Tensor, memory_features: Tensor, memory_labels: Tensor, num_classes: int
) -> None:
    check_float_tensor(features, "features", ndim=2)
    check_float_tensor(memory_features, "memory_features", ndim=2)
    if memory_features.shape[0] == 0:
        shape = tuple(memory_features.shape)
        raise ValueError(f"memory_features must hold at least one row, got shape {shape}")
    if features.shape[1] != memory_features.shape[1]:
        raise ValueError(
            f"features and memory_features must have the same dimension D, got shapes "
            f"{tuple(features.shape)} and {tuple(memory_features.shape)}"
        )
    check_int(num_classes, "num_classes")
    _check_labels(memory_labels, "memory_labels", memory_features.shape[0], num_classes)


def _check_labels(labels: Tensor, name: str, length: int, num_classes: int) -> None:
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64:
        dtype = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be an int64 tensor, got {dtype}")
    if labels.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {tuple(labels.shape)}")
    if length == 0:
        return
    low, high = (int(v) for v in labels.aminmax())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"{name} must lie in [0, num_classes={num_classes}), got values in [{low}, {high}]"
        )
