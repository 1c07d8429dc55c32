"""Weighted k-nearest-neighbour monitor: the kNN accuracy of the MoCo CIFAR demo.

The protocol of Wu et al. 2018 ("Unsupervised feature learning via non-parametric instance
discrimination"): each query's ``k`` most cosine-similar training items vote for their labels
with weight ``exp(similarity / temperature)``; the class with the largest total wins. Defaults
``k=200``, ``temperature=0.1`` are the demo's ``knn_k`` and ``knn_t``.
"""

import torch
from torch import Tensor

from infonce._checks import check_float_tensor, check_temperature


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

    Args:
        features: queries, L2-normalised rows.
        memory_features: the labelled bank (e.g. the training set), L2-normalised rows.
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
    for name, value in (("k", k), ("chunk_size", chunk_size)):
        _check_positive_int(value, name)
    k = min(k, memory_features.shape[0])
    dtype = torch.promote_types(features.dtype, memory_features.dtype)
    dtype = torch.promote_types(dtype, torch.float32)
    memory_t = memory_features.to(dtype).t()  # (D, N)

    scores = []
    for query in features.to(dtype).split(chunk_size):
        sim = query @ memory_t  # (m, N)
        sim_top, index = sim.topk(k, dim=1)  # (m, k), (m, k)
        weight = (sim_top / temperature).exp()  # (m, k)
        votes = memory_labels[index]  # (m, k)
        chunk_scores = sim.new_zeros(query.shape[0], num_classes)  # (m, C)
        scores.append(chunk_scores.scatter_add_(1, votes, weight))
    if not scores:  # M == 0
        return features.new_zeros(0, num_classes, dtype=dtype)
    return torch.cat(scores)  # (M, C)


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
    _check_positive_int(num_classes, "num_classes")
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


def _check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
