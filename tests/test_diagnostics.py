"""Alignment, uniformity, contrastive entropy, hardest-negative similarity and dL/dT vs loops."""

import math

import pytest
import torch
import torch.nn.functional as F

from infonce import (
    alignment,
    contrastive_entropy,
    embedding_diagnostics,
    hardest_negative_similarity,
    info_nce,
    temperature_gradient,
    uniformity,
)


def _unit(N, D=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(N, D, generator=g, dtype=torch.float64), dim=1)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_alignment_equals_the_mean_distance_to_the_alpha(alpha):
    x, y = _unit(7), _unit(7, seed=1)
    expected = sum(float((x[i] - y[i]).norm()) ** alpha for i in range(7)) / 7
    assert alignment(x, y, alpha).item() == pytest.approx(expected, rel=1e-12)
    assert alignment(x, x).item() == 0.0
    assert alignment(x, -x).item() == pytest.approx(4.0)


@pytest.mark.parametrize("t", [0.5, 2.0])
def test_uniformity_equals_wang_and_isolas_formula_and_a_pair_loop(t):
    x = _unit(9)
    pairs = [(i, j) for i in range(9) for j in range(i + 1, 9)]
    loop = math.log(sum(math.exp(-t * float((x[i] - x[j]).norm()) ** 2) for i, j in pairs) / 36)
    theirs = torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()  # their paper's code
    assert uniformity(x, t).item() == pytest.approx(loop, rel=1e-12)
    assert uniformity(x, t).item() == pytest.approx(theirs.item(), rel=1e-12)


def test_uniformity_stays_finite_where_exp_then_log_underflows():
    x = _unit(6).float() * 1e3  # squared distances ~1e6: exp(-2e6) is 0 in float32
    assert torch.isfinite(uniformity(x))


def test_uniformity_is_zero_for_a_collapsed_embedding_and_lower_when_spread():
    collapsed = _unit(1).expand(10, -1)
    assert uniformity(collapsed).item() == pytest.approx(0.0, abs=1e-12)
    assert uniformity(_unit(500)).item() < -2.0


@pytest.mark.parametrize("form", ["shared", "in_batch"])
def test_contrastive_entropy_equals_a_softmax_loop(form):
    q, k, n = _unit(5), _unit(5, seed=1), _unit(8, seed=2)
    negatives = n if form == "shared" else None
    T, total = 0.2, 0.0
    for i in range(5):
        others = list(n) if form == "shared" else [k[j] for j in range(5) if j != i]
        logits = [float(q[i] @ k[i]) / T] + [float(q[i] @ v) / T for v in others]
        z = sum(math.exp(s) for s in logits)
        total += -sum(math.exp(s) / z * (s - math.log(z)) for s in logits)
    assert contrastive_entropy(q, k, negatives, T).item() == pytest.approx(total / 5, rel=1e-12)


def test_contrastive_entropy_spans_zero_to_log_one_plus_k():
    q, n = _unit(4), _unit(63, seed=3)
    assert contrastive_entropy(q, q, n, 1e6).item() == pytest.approx(math.log(64), rel=1e-6)
    assert contrastive_entropy(q, q, n, 1e-3).item() == pytest.approx(0.0, abs=1e-6)


def test_hardest_negative_similarity_is_the_mean_top_k_cosine():
    q, n = _unit(4), _unit(20, seed=4)
    sims = [sorted((float(q[i] @ v) for v in n), reverse=True) for i in range(4)]
    for top_k in (1, 3):
        expected = sum(sum(s[:top_k]) / top_k for s in sims) / 4
        assert hardest_negative_similarity(q, n * 5.0, top_k).item() == pytest.approx(expected)


def test_gradcheck_of_each_diagnostic():
    x, y, n = (_unit(5, D=3, seed=s).requires_grad_() for s in range(3))
    assert torch.autograd.gradcheck(lambda x, y: alignment(x, y), (x, y))
    assert torch.autograd.gradcheck(lambda x: uniformity(x), (x,))
    assert torch.autograd.gradcheck(lambda x, y, n: contrastive_entropy(x, y, n, 0.5), (x, y, n))
    assert torch.autograd.gradcheck(lambda x, n: hardest_negative_similarity(x, n, 2), (x, n))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: alignment(_unit(3), _unit(4)), r"x and y must be one \(N, D\) shape"),
        (lambda: alignment(_unit(3), _unit(3), 0.0), "alpha must be a positive finite number"),
        (lambda: uniformity(_unit(1)), "x needs N >= 2 rows"),
        (lambda: uniformity(_unit(3), -1.0), "t must be a positive finite number, got -1.0"),
        (
            lambda: hardest_negative_similarity(_unit(3), _unit(2), 3),
            r"top_k must be <= 2, the number of negatives per query \(negatives of shape "
            r"\(2, 6\)\), got 3",
        ),
        (lambda: hardest_negative_similarity(_unit(3), _unit(2, D=5)), r"negatives must have"),
    ],
)
def test_bad_inputs_are_value_errors_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_embedding_diagnostics_gathers_the_four_and_drops_the_negative_one_without_negatives():
    q, k, n = _unit(5), _unit(5, seed=1), _unit(8, seed=2)
    values = embedding_diagnostics(q, k, n, 0.2)
    assert values == {
        "alignment": alignment(q, k),
        "uniformity": uniformity(q),
        "entropy": contrastive_entropy(q, k, n, 0.2),
        "hardest_negative": hardest_negative_similarity(q, n),
    }
    assert set(embedding_diagnostics(q, k, None)) == {"alignment", "uniformity", "entropy"}


def test_hardest_negative_similarity_is_float32_under_bfloat16_autocast():
    q, n = _unit(4).float(), _unit(20, seed=4).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = hardest_negative_similarity(q, n)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(hardest_negative_similarity(q, n).item(), rel=1e-6)


Q, K, N = _unit(5), _unit(5, seed=1), _unit(8, seed=2)


@pytest.mark.parametrize(
    "args, match",
    [  # alignment(x, y), uniformity(x) and hardest_negative(..., top_k) said x, y, top_k
        ((Q, _unit(4), N), r"key must have the shape of query \(5, 6\), got \(4, 6\)"),
        ((Q, K.long(), N), "key must be a floating-point tensor"),
        ((Q[:1], K[:1], N), r"query needs N >= 2 rows for pairs .*\(1, 6\)"),
        ((Q, K, _unit(8, D=3)), r"negatives must have shape \(K, 6\) or \(5, M, 6\)"),
        ((Q, K, [[0.0] * 6]), "negatives must be a torch.Tensor, got list"),
        ((Q, K, N.long()), "negatives must be a floating-point tensor"),
        ((None, K, N), "query must be a torch.Tensor, got NoneType"),
        ((Q, K, N, 0.0), "temperature must be a positive finite number, got 0.0"),
    ],
)
def test_embedding_diagnostics_errors_name_its_own_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        embedding_diagnostics(*args)


def test_hardest_negative_similarity_without_negatives_is_a_value_error_naming_them():
    with pytest.raises(ValueError, match=r"negatives must be a \(K, D\) or \(N, M, D\) tensor"):
        hardest_negative_similarity(Q, None)  # was: 'NoneType' object has no attribute 'dim'


def test_hardest_negative_similarity_takes_per_query_negatives_like_info_nce():
    per_query = torch.stack([_unit(4, seed=10 + i) for i in range(5)])  # (5, 4, 6)
    expected = sum(max(float(Q[i] @ v) for v in per_query[i]) for i in range(5)) / 5
    assert hardest_negative_similarity(Q, per_query).item() == pytest.approx(expected)
    values = embedding_diagnostics(Q, K, per_query, 0.2)
    assert values["hardest_negative"].item() == pytest.approx(expected)


def test_embedding_diagnostics_with_an_empty_queue_has_no_hardest_negative():
    values = embedding_diagnostics(Q, K, N[:0], 0.2)  # (0, D): no negatives yet
    assert set(values) == {"alignment", "uniformity", "entropy"}
    assert values["entropy"].item() == 0.0  # a softmax over the positive alone


def test_contrastive_entropy_does_not_overflow_at_a_tiny_temperature_without_normalize():
    q = torch.tensor([[1e4, 0.0], [0.0, 1e4]])  # q.k / T = 1e8 / 1e-31: inf (nan) before
    entropy = contrastive_entropy(q, q, None, 1e-31, normalize=False)
    assert entropy.item() == 0.0  # one-hot softmax


@pytest.mark.parametrize("form", ["shared", "per_query", "in_batch", "raw"])
@pytest.mark.parametrize("T", [0.05, 0.1, 0.7])
def test_temperature_gradient_equals_autograd_of_info_nce_and_a_loop(form, T):
    q, k = _unit(5, seed=1) * 3.0, _unit(5, seed=2)  # un-normalised queries: normalize matters
    negatives = {"shared": _unit(7, seed=3), "per_query": _unit(35, seed=3).view(5, 7, 6),
                 "in_batch": None, "raw": _unit(7, seed=3)}[form]  # fmt: skip
    normalize = form != "raw"
    t = torch.tensor(T, dtype=torch.float64, requires_grad=True)
    info_nce(q, k, negatives, t, normalize=normalize).backward()
    got = temperature_gradient(q, k, negatives, T, normalize=normalize)
    assert got.dtype == torch.float64 and not got.requires_grad
    assert got.item() == pytest.approx(t.grad.item(), rel=1e-10)
    # the closed form by hand: mean_i (s_i+ - sum_j p_ij s_ij) / T^2
    qn = F.normalize(q, dim=1) if normalize else q
    kn, nn_ = (F.normalize(k, dim=1), None if negatives is None else F.normalize(negatives, dim=-1)
               ) if normalize else (k, negatives)  # fmt: skip
    total = 0.0
    for i in range(5):
        if nn_ is None:
            sims = [float(qn[i] @ kn[j]) for j in range(5)]
            positive = sims[i]
        else:
            rows = nn_ if nn_.dim() == 2 else nn_[i]
            positive = float(qn[i] @ kn[i])
            sims = [positive] + [float(qn[i] @ r) for r in rows]
        m = max(s / T for s in sims)
        weights = [math.exp(s / T - m) for s in sims]
        mean_s = sum(w * s for w, s in zip(weights, sims, strict=True)) / sum(weights)
        total += (positive - mean_s) / T**2
    assert got.item() == pytest.approx(total / 5, rel=1e-10)


def test_temperature_gradient_is_positive_when_every_positive_wins_and_negative_when_none_does():
    q = _unit(6, seed=4)
    far = -q  # every negative as far from its query as can be: T is pushed down
    assert temperature_gradient(q, q, far[:, None, :], 0.1).item() > 0
    # every query's key is its antipode and its negatives coincide with it: T is pushed up
    assert temperature_gradient(q, -q, q[:, None, :], 0.1).item() < 0
