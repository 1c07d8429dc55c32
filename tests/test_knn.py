import math

import pytest
import torch
import torch.nn.functional as F
from fake_world import run_ranks

from infonce.distributed import gather_rows
from infonce.knn import knn_accuracy, knn_neighbours, knn_predict, sharded_knn_accuracy


def _random_bank(m: int, n: int, d: int, num_classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(m, d, generator=g), dim=1)
    memory = F.normalize(torch.randn(n, d, generator=g), dim=1)
    labels = torch.randint(num_classes, (n,), generator=g)
    return features, memory, labels


def _loop_reference(features, memory, labels, num_classes, k, temperature):
    """Plain Python, float64: sort every similarity, keep the top k, add up the votes, each
    exp((sim - nearest sim) / T): Wu et al.'s weight relative to the nearest neighbour's."""
    scores = []
    for q in features.double().tolist():
        sims = [
            (sum(a * b for a, b in zip(q, m, strict=True)), j)
            for j, m in enumerate(memory.double().tolist())
        ]
        sims.sort(reverse=True)
        row = [0.0] * num_classes
        for sim, j in sims[: min(k, len(sims))]:
            row[int(labels[j])] += math.exp((sim - sims[0][0]) / temperature)
        scores.append(row)
    return torch.tensor(scores, dtype=torch.float64)


@pytest.mark.parametrize(("k", "temperature"), [(1, 0.1), (7, 0.1), (20, 0.5), (60, 0.07)])
def test_knn_predict_matches_a_python_loop_in_float64(k, temperature):
    features, memory, labels = _random_bank(m=9, n=60, d=5, num_classes=4)
    want = _loop_reference(features, memory, labels, 4, k, temperature)
    got = knn_predict(features.double(), memory.double(), labels, 4, k=k, temperature=temperature)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_knn_predict_in_float32_agrees_with_the_loop():
    features, memory, labels = _random_bank(m=9, n=60, d=5, num_classes=4, seed=1)
    want = _loop_reference(features, memory, labels, 4, 10, 0.1)
    got = knn_predict(features, memory, labels, 4, k=10, temperature=0.1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_knn_on_two_separated_clusters_predicts_each_cluster_label():
    # class 0 around +x, class 1 around +y; queries sit near each axis
    memory = F.normalize(
        torch.tensor([[1.0, 0.1], [1.0, -0.1], [1.0, 0.0], [0.1, 1.0], [-0.1, 1.0], [0.0, 1.0]]),
        dim=1,
    )
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    queries = F.normalize(torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.9, 0.2]]), dim=1)
    scores = knn_predict(queries, memory, labels, num_classes=2, k=3, temperature=0.1)
    assert scores.argmax(dim=1).tolist() == [0, 1, 0]
    # with k=3 each query's neighbours are its own cluster: the other class gets no vote
    assert scores[0, 1] == 0 and scores[1, 0] == 0 and scores[2, 1] == 0
    acc = knn_accuracy(queries, torch.tensor([0, 1, 1]), memory, labels, 2, k=3)
    assert acc == pytest.approx(2 / 3)


def test_knn_weights_are_exp_of_similarity_over_temperature_relative_to_the_nearest():
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    query = F.normalize(torch.tensor([[3.0, 4.0]]), dim=1)  # cosines 0.6 and 0.8
    scores = knn_predict(query, memory, torch.tensor([0, 1]), num_classes=3, k=1, temperature=0.5)
    torch.testing.assert_close(scores, torch.tensor([[0.0, 1.0, 0.0]]))  # the nearest weighs 1
    scores = knn_predict(query, memory, torch.tensor([0, 1]), num_classes=3, k=2, temperature=0.5)
    expected = [[math.exp((0.6 - 0.8) / 0.5), 1.0, 0.0]]  # exp(0.6/T) / exp(0.8/T)
    torch.testing.assert_close(scores, torch.tensor(expected))


def test_knn_votes_do_not_overflow_at_a_small_temperature():
    """exp(sim / T) overflows float32 below T ~ 0.0113: every class would score inf and the
    argmax would pick class 0; relative to the nearest neighbour the weights stay <= 1."""
    memory = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.02], [0.9, 0.3]]), dim=1)
    labels = torch.tensor([1, 0, 0])  # the nearest is class 1; class 0 has two close votes
    query = torch.tensor([[1.0, 0.0]])
    scores = knn_predict(query, memory, labels, num_classes=2, k=3, temperature=0.001)
    assert torch.isfinite(scores).all() and scores[0, 1] == 1.0
    assert scores.argmax(dim=1).tolist() == [1]
    assert knn_accuracy(query, torch.tensor([1]), memory, labels, 2, k=3, temperature=0.001) == 1


def test_knn_with_k_above_the_memory_size_uses_every_memory_item():
    features, memory, labels = _random_bank(m=4, n=10, d=3, num_classes=3)
    clamped = knn_predict(features, memory, labels, 3, k=1000)
    assert torch.equal(clamped, knn_predict(features, memory, labels, 3, k=10))
    sims = features @ memory.t()  # (M, N)
    weights = torch.exp((sims - sims.amax(dim=1, keepdim=True)) / 0.1)  # relative to the nearest
    total = weights.sum(dim=1)
    torch.testing.assert_close(clamped.sum(dim=1), total)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 100])
def test_knn_chunking_gives_the_same_scores_as_one_chunk(chunk_size, dtype):
    features, memory, labels = _random_bank(m=25, n=80, d=6, num_classes=5, seed=2)
    features, memory = features.to(dtype), memory.to(dtype)
    whole = knn_predict(features, memory, labels, 5, k=15, chunk_size=10_000)
    chunked = knn_predict(features, memory, labels, 5, k=15, chunk_size=chunk_size)
    # equal up to rounding: BLAS may sum a (1, D) x (D, N) product in another order than an
    # (M, D) one, and exp(sim / 0.1) multiplies the relative error by ~10
    tol = 1e-5 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(chunked, whole, rtol=tol, atol=0)
    assert torch.equal(chunked.argmax(dim=1), whole.argmax(dim=1))


def test_knn_predict_does_not_track_gradients():
    features, memory, labels = _random_bank(m=3, n=10, d=4, num_classes=2)
    scores = knn_predict(features.requires_grad_(), memory, labels, 2, k=3)
    assert not scores.requires_grad


def test_knn_accuracy_of_the_memory_against_itself_with_k_1_is_one():
    _, memory, labels = _random_bank(m=1, n=50, d=8, num_classes=10)
    assert knn_accuracy(memory, labels, memory, labels, num_classes=10, k=1) == 1.0


def test_knn_predict_with_no_queries_returns_an_empty_score_matrix():
    _, memory, labels = _random_bank(m=1, n=5, d=3, num_classes=2)
    assert knn_predict(torch.empty(0, 3), memory, labels, 2).shape == (0, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": torch.zeros(4)}, r"features must have 2 dimensions, got shape \(4,\)"),
        ({"features": torch.zeros(2, 4, dtype=torch.long)}, "features must be a floating"),
        ({"memory_features": torch.zeros(5, 3, 1)}, r"memory_features .*\(5, 3, 1\)"),
        ({"memory_features": torch.zeros(5, 4)}, r"same dimension D.*\(2, 3\) and \(5, 4\)"),
        ({"memory_features": torch.zeros(0, 3)}, r"at least one row.*\(0, 3\)"),
        ({"memory_labels": torch.zeros(5, dtype=torch.int32)}, "memory_labels must be an int64"),
        ({"memory_labels": torch.zeros(4, dtype=torch.long)}, r"\(5,\), .* got shape \(4,\)"),
        (
            {"memory_labels": torch.tensor([0, 1, 2, 3, 4])},
            r"memory_labels must lie in \[0, 3\), got values from 0 to 4",
        ),
        ({"num_classes": 0}, "num_classes must be an integer >= 1, got 0"),
        ({"k": 0}, "k must be an integer >= 1, got 0"),
        ({"chunk_size": -1}, "chunk_size must be an integer >= 1, got -1"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_knn_predict_rejects_bad_arguments_naming_them(kwargs, match):
    args = {
        "features": torch.zeros(2, 3),
        "memory_features": torch.zeros(5, 3),
        "memory_labels": torch.zeros(5, dtype=torch.long),
        "num_classes": 3,
    }
    with pytest.raises(ValueError, match=match):
        knn_predict(**{**args, **kwargs})


def test_knn_accuracy_rejects_labels_of_the_wrong_length_or_no_queries():
    _, memory, labels = _random_bank(m=1, n=5, d=3, num_classes=2)
    with pytest.raises(ValueError, match=r"labels .*shape \(2,\), .* got shape \(3,\)"):
        knn_accuracy(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), memory, labels, 2)
    with pytest.raises(ValueError, match="at least one query"):
        knn_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), memory, labels, 2)


# A memory split over ranks (infonce.knn.sharded_knn_accuracy), ranks simulated as threads


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 7, 200])
def test_sharded_knn_equals_one_process_holding_everything(world, k):
    """41 memory items and 17 queries dealt to ranks as ShardSampler does (r, r + R, ...):
    uneven shards, 6 classes, queries merged 5 at a time; every rank reports the
    single-process accuracy."""
    g = torch.Generator().manual_seed(world * 100 + k + 2)
    memory = F.normalize(torch.randn(41, 8, generator=g), dim=1)
    memory_labels = torch.randint(0, 6, (41,), generator=g)
    queries = F.normalize(torch.randn(17, 8, generator=g), dim=1)
    labels = torch.randint(0, 6, (17,), generator=g)
    expected = knn_accuracy(queries, labels, memory, memory_labels, 6, k=k, temperature=0.1)
    assert 0.0 < expected < 1.0

    def rank_accuracy(rank, all_gather):
        mine, my_queries = slice(rank, None, world), slice(rank, None, world)
        return sharded_knn_accuracy(
            queries[my_queries], labels[my_queries], memory[mine].half(), memory_labels[mine],
            k=k, temperature=0.1, all_gather=all_gather, chunk_size=5,
        )  # fmt: skip

    results = run_ranks(world, rank_accuracy)
    assert results == [pytest.approx(expected, abs=1e-12)] * world


def test_a_nan_query_or_memory_row_makes_the_knn_accuracy_nan_not_a_finite_guess():
    """A nan row gives nan scores, whose argmax would still name a class and count as a
    prediction: the accuracy is nan instead (nan propagates, as everywhere in the library)."""
    features, memory, labels = _random_bank(m=6, n=20, d=4, num_classes=3, seed=4)
    query_labels = torch.zeros(6, dtype=torch.int64)
    assert math.isfinite(knn_accuracy(features, query_labels, memory, labels, 3, k=5))
    nan_query, nan_memory = features.clone(), memory.clone()
    nan_query[2], nan_memory[7] = math.nan, math.nan
    assert torch.isnan(knn_predict(nan_query, memory, labels, 3, k=5)[2]).any()
    assert math.isnan(knn_accuracy(nan_query, query_labels, memory, labels, 3, k=5))
    assert math.isnan(knn_accuracy(features, query_labels, nan_memory, labels, 3, k=5))


@pytest.mark.parametrize("where", ["query", "memory"])
def test_sharded_knn_with_a_nan_on_one_rank_is_nan_on_every_rank_without_hanging(where):
    """The nan sits on rank 0 only; every rank merges the same scores, reaches every
    all_gather (no rank returns early) and returns nan."""
    g = torch.Generator().manual_seed(5)
    memory = F.normalize(torch.randn(20, 4, generator=g), dim=1)
    memory_labels = torch.randint(0, 3, (20,), generator=g)
    queries = F.normalize(torch.randn(9, 4, generator=g), dim=1)
    labels = torch.randint(0, 3, (9,), generator=g)
    if where == "query":
        queries[0] = math.nan  # rank 0's first query
    else:
        memory[2] = math.nan  # in rank 0's shard

    def rank_accuracy(rank, all_gather):
        mine = slice(rank, None, 2)
        return sharded_knn_accuracy(queries[mine], labels[mine], memory[mine],
                                    memory_labels[mine], k=5, all_gather=all_gather,
                                    chunk_size=2)  # fmt: skip

    results = run_ranks(2, rank_accuracy)
    assert len(results) == 2 and all(r is not None and math.isnan(r) for r in results)


def test_sharded_knn_is_none_without_queries_or_memory():
    memory = F.normalize(torch.randn(5, 4), dim=1)
    labels = torch.zeros(5, dtype=torch.int64)
    none = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
    assert sharded_knn_accuracy(*none, memory, labels) is None
    assert sharded_knn_accuracy(memory, labels, *none) is None


def test_gather_rows_concatenates_uneven_ranks_in_rank_order():
    rows = [torch.arange(n * 2.0).view(n, 2) + 10 * r for r, n in enumerate((3, 0, 2))]
    out = run_ranks(3, lambda r, gather: gather_rows(rows[r], gather))
    for got in out:
        assert torch.equal(got, torch.cat(rows))


def test_neighbours_searched_in_memory_chunks_equal_one_search():
    features, memory, labels = _random_bank(9, 50, 6, 4, seed=3)
    whole = knn_neighbours(features, memory, labels, k=10)
    chunked = knn_neighbours(features, memory.half(), labels, k=10, memory_chunk_size=7)
    torch.testing.assert_close(chunked[0], knn_neighbours(features, memory.half(), labels, 10)[0])
    assert torch.equal(chunked[1], knn_neighbours(features, memory.half(), labels, 10)[1])
    assert chunked[0].dtype == torch.float32 and whole[0].shape == (9, 10)
