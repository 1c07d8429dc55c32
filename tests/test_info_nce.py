import math
import re
import sys

import pytest
import torch
import torch.nn.functional as F
from references import reference_decoupled_info_nce, reference_info_nce

from infonce import (
    InfoNCE,
    contrastive_entropy,
    info_nce,
    info_nce_logits,
    info_nce_stats,
    nt_xent,
    separated_loss,
    supcon,
)


def make_inputs(form, N=5, M=4, K=7, D=6, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(N, D, generator=g, dtype=dtype) * scale
    k = torch.randn(N, D, generator=g, dtype=dtype) * scale
    negatives = {
        "shared": torch.randn(K, D, generator=g, dtype=dtype) * scale,
        "per_query": torch.randn(N, M, D, generator=g, dtype=dtype) * scale,
        "in_batch": None,
    }[form]
    return q, k, negatives


FORMS = ["shared", "per_query", "in_batch"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("normalize", [True, False])
def test_info_nce_equals_loop_reference_in_float64(form, reduction, normalize):
    q, k, n = make_inputs(form, scale=1.0 if normalize else 0.3)
    temperature = 0.2
    loss = info_nce(q, k, n, temperature, reduction, normalize)
    expected = reference_info_nce(q, k, n, temperature, reduction, normalize)
    assert loss.dtype == torch.float64
    assert loss.shape == expected.shape
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("normalize", [True, False])
def test_info_nce_passes_gradcheck(form, normalize):
    q, k, n = make_inputs(form, N=3, M=2, K=4, D=5, scale=0.5)
    inputs = [t.requires_grad_() for t in (q, k, n) if t is not None]

    def fn(*args):
        negatives = args[2] if len(args) == 3 else None
        return info_nce(args[0], args[1], negatives, 0.5, "none", normalize)

    assert torch.autograd.gradcheck(fn, inputs)


def logits_path_loss(q, k, n, temperature):
    return F.cross_entropy(*info_nce_logits(q, k, n, temperature))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_famous_example_high_temperature_keeps_pushing_low_one_stops(dtype):
    """1,023 negatives at similarity -1, the positive at 1: 4.94 at T = 1, ~4e-10 at T = 0.07,
    each equal to the closed form through both the logits path and the chunked path."""
    e1 = torch.zeros(1, 1024, dtype=dtype)
    e1[0, 0] = 1.0
    negatives = -e1.repeat(1023, 1)  # 1,023 >= CHUNKED_FROM: info_nce runs the chunked path
    for temperature, closed in ((1.0, 4.9377), (0.07, 3.9945e-10)):
        assert separated_loss(1023, temperature) == pytest.approx(closed, rel=1e-4)
        chunked = info_nce(e1, e1, negatives, temperature=temperature)
        logits = logits_path_loss(e1, e1, negatives, temperature)
        # float32: 4.94 to float rounding; 4e-10 is below the rounding of a logit of 1/0.07
        # (float32 ulp of 14.3 is 1e-6), so only "zero to within it" can be asked for
        tol = 1e-12 if dtype == torch.float64 else 2e-6
        for loss in (chunked, logits):
            assert loss.dtype == dtype
            assert abs(loss.item() - separated_loss(1023, temperature)) <= tol * max(1, closed)
    if dtype == torch.float64:  # the small side, relative to itself
        low = info_nce(e1, e1, negatives, temperature=0.07).item()
        assert low == pytest.approx(separated_loss(1023, 0.07), rel=1e-4)
        assert logits_path_loss(e1, e1, negatives, 0.07).item() == pytest.approx(low, rel=1e-4)


def test_separated_loss_closed_form_values():
    assert separated_loss(1023, 1.0) == pytest.approx(
        math.log(1 + 1023 * math.exp(-2.0)), rel=1e-15
    )
    assert separated_loss(1023, 0.07) == pytest.approx(3.9945e-10, rel=1e-4)
    assert separated_loss(0, 0.1) == 0.0
    # the softplus form stays finite where exp overflows
    assert separated_loss(
        10, 1e-3, positive_similarity=-1.0, negative_similarity=1.0
    ) == pytest.approx(2000.0 + math.log(10), rel=1e-12)


@pytest.mark.parametrize("form", FORMS)
def test_the_normalised_path_is_cross_entropy_of_the_logits_divided_once(form):
    """Normalised logits lie in [-1/T, 1/T]: no shift by the row maximum before the division
    (cross_entropy subtracts it itself), so the loss is bit for bit that of info_nce_logits."""
    q, k, n = make_inputs(form, dtype=torch.float32)
    for T in (0.07, torch.tensor(0.2)):
        logits, labels = info_nce_logits(q, k, n, T)
        assert torch.equal(info_nce(q, k, n, T), F.cross_entropy(logits, labels))
        if form != "shared":  # shared negatives: the chunked statistics
            stats = info_nce_stats(q, k, n, T)
            assert torch.equal(stats.loss, F.cross_entropy(logits, labels, reduction="none"))


def test_in_batch_form_is_cross_entropy_over_similarity_matrix():
    q, k, _ = make_inputs("in_batch", dtype=torch.float32)
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.1
    expected = F.cross_entropy(logits, torch.arange(q.shape[0]))
    torch.testing.assert_close(info_nce(q, k, None, 0.1), expected)


def test_loss_is_float32_under_bfloat16_autocast_and_matches_fp32():
    q, k, n = make_inputs("shared", N=16, K=64, D=32, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = info_nce(q, k, n, 0.07)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, info_nce(q, k, n, 0.07), rtol=1e-6, atol=1e-6)


def test_half_inputs_give_float32_loss():
    q, k, n = make_inputs("shared", dtype=torch.float64)
    loss = info_nce(q.bfloat16(), k.bfloat16(), n.bfloat16(), 0.1)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), info_nce(q, k, n, 0.1), rtol=2e-2, atol=0)


def test_empty_queue_gives_zero_loss():
    q, k, _ = make_inputs("in_batch", dtype=torch.float32)
    loss = info_nce(q, k, torch.zeros(0, q.shape[1]), 0.07)
    assert loss.item() == 0.0


def test_module_matches_function_and_validates_once():
    q, k, n = make_inputs("shared", dtype=torch.float32)
    criterion = InfoNCE(temperature=0.2, reduction="sum", normalize=False)
    torch.testing.assert_close(criterion(q, k, n), info_nce(q, k, n, 0.2, "sum", False))
    assert "temperature=0.2" in repr(criterion)
    with pytest.raises(ValueError, match="temperature"):
        InfoNCE(temperature=0.0)
    with pytest.raises(ValueError, match="reduction"):
        InfoNCE(reduction="avg")


@pytest.mark.parametrize("temperature", [0.0, -0.07, math.nan, math.inf, -math.inf])
def test_bad_temperature_is_a_value_error_naming_the_value(temperature):
    q, k, n = make_inputs("shared", dtype=torch.float32)
    with pytest.raises(
        ValueError, match=rf"temperature must be a positive finite number, got {temperature}"
    ):
        info_nce(q, k, n, temperature)


def test_query_key_shape_mismatch_is_rejected_not_broadcast():
    q = torch.randn(4, 8)
    with pytest.raises(
        ValueError, match=r"key must have the shape of query \(4, 8\), got \(1, 8\)"
    ):
        info_nce(q, torch.randn(1, 8), torch.randn(3, 8))
    with pytest.raises(
        ValueError, match=r"key must have the shape of query \(4, 8\), got \(4, 9\)"
    ):
        info_nce(q, torch.randn(4, 9))


@pytest.mark.parametrize("shape", [(3, 7), (4, 2, 7), (5, 2, 8), (8,), (1, 1, 1, 8)])
def test_negatives_with_another_shape_are_rejected(shape):
    q, k = torch.randn(4, 8), torch.randn(4, 8)
    with pytest.raises(
        ValueError,
        match=rf"negatives must have shape .*got {tuple(shape)}".replace("(", r"\(").replace(
            ")", r"\)"
        ),
    ):
        info_nce(q, k, torch.randn(*shape))


def test_empty_batch_and_zero_dim_features_are_rejected():
    with pytest.raises(ValueError, match=r"non-empty.*\(0, 8\)"):
        info_nce(torch.randn(0, 8), torch.randn(0, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"non-empty.*\(4, 0\)"):
        info_nce(torch.randn(4, 0), torch.randn(4, 0))


@pytest.mark.parametrize("name", ["query", "key", "negatives"])
def test_integer_tensors_are_rejected(name):
    args = {"query": torch.randn(4, 8), "key": torch.randn(4, 8), "negatives": torch.randn(3, 8)}
    args[name] = torch.ones(args[name].shape, dtype=torch.long)
    with pytest.raises(
        ValueError, match=rf"{name} must be a floating-point tensor, got dtype torch.int64"
    ):
        info_nce(**args)


def test_query_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"query must have 2 dimensions, got shape \(8,\)"):
        info_nce(torch.randn(8), torch.randn(8))


def test_bad_reduction_is_rejected():
    with pytest.raises(ValueError, match="reduction must be one of"):
        info_nce(torch.randn(2, 3), torch.randn(2, 3), reduction="avg")


@pytest.mark.parametrize("form", FORMS)
def test_info_nce_stats_are_the_per_query_loss_and_logit_statistics(form):
    q, k, n = make_inputs(form, N=6, M=5, K=9)
    stats = info_nce_stats(q, k, n, 0.2)
    logits, labels = info_nce_logits(q, k, n, 0.2)
    torch.testing.assert_close(stats.loss, reference_info_nce(q, k, n, 0.2, "none", True))
    positive = logits.gather(1, labels[:, None])[:, 0]
    negatives = logits[~F.one_hot(labels, logits.shape[1]).bool()].view(6, -1)  # (N, C-1)
    torch.testing.assert_close(stats.positive_logit, positive)
    torch.testing.assert_close(stats.max_negative_logit, negatives.amax(dim=1))
    torch.testing.assert_close(stats.mean_negative_logit, negatives.mean(dim=1))


def _overflowing():
    """Unnormalised: q.k+ = 2^30, the negative's q.k = 2^30 + 2^16 (exact in float32); at
    T = 2^-100 the logits are 2^130 > float32's max: inf, and the loss nan, before. The loss
    is 2^16 / T + log(1 + exp(-2^16 / T)) = 2^116 exactly in float32."""
    q = torch.tensor([[2.0**16, 0.0]])
    k = torch.tensor([[2.0**14, 0.0]])
    n = torch.tensor([[2.0**14 + 1, 0.0]])
    return q, k, n, 2.0**-100


def test_info_nce_without_normalize_does_not_overflow_at_a_tiny_temperature():
    q, k, n, T = _overflowing()
    assert info_nce(q, k, n, T, normalize=False).item() == 2.0**116
    assert info_nce_stats(q, k, n[None], T, normalize=False).loss.item() == 2.0**116
    logits, _ = info_nce_logits(q, k, n, T, normalize=False)
    assert torch.isinf(logits).all()  # the logits themselves do not fit float32, documented
    # in-batch: the diagonal wins by 2^30 / T: the loss is exactly 0
    q2 = torch.tensor([[2.0**16, 0.0], [0.0, 2.0**16]])
    assert info_nce(q2, q2, None, T, normalize=False).item() == 0.0


def test_info_nce_gradient_at_a_tiny_temperature_is_finite():
    q, k, n, T = _overflowing()
    q.requires_grad_()
    info_nce(q, k, n, T, normalize=False).backward()
    # dL/dq = (p_neg n + p_pos k - k) / T = (n - k) / T: the negative takes all the mass
    assert q.grad.tolist() == [[2.0**100, 0.0]]


@pytest.mark.parametrize("tensor_t", [False, True])
def test_chunked_path_without_normalize_does_not_overflow(tensor_t, monkeypatch):
    q, k, n, T = _overflowing()
    monkeypatch.setattr(sys.modules["infonce.info_nce"], "CHUNKED_FROM", 1)
    temperature = torch.tensor(T) if tensor_t else T
    assert info_nce(q, k, n, temperature, normalize=False).item() == 2.0**116
    stats = info_nce_stats(q, k, n, temperature, normalize=False)
    assert stats.loss.item() == 2.0**116
    assert torch.isinf(stats.positive_logit).all()  # 2^130 does not fit: inf, not nan


def test_nt_xent_and_supcon_without_normalize_do_not_overflow():
    z = torch.tensor([[2.0**16, 0.0], [0.0, 2.0**16]])  # each view's positive wins by 2^32 / T
    assert nt_xent(z, z.clone(), 2.0**-100, normalize=False).item() == 0.0
    assert supcon(torch.stack([z, z], dim=1), None, 2.0**-100, normalize=False).item() == 0.0


@pytest.mark.parametrize("temperature", [1e-45, 1e-39, 1e39])
def test_a_temperature_outside_float32s_normal_range_is_a_value_error(temperature):
    q, k, n = make_inputs("shared", dtype=torch.float32)
    match = rf"temperature must lie in .*got {re.escape(str(temperature))}"
    for call in (info_nce, info_nce_logits, info_nce_stats, contrastive_entropy):
        with pytest.raises(ValueError, match=match):
            call(q, k, n, temperature)
    with pytest.raises(ValueError, match=match):
        InfoNCE(temperature)(q, k, n)


def test_separated_loss_refuses_similarities_that_are_not_finite_numbers():
    with pytest.raises(ValueError, match="positive_similarity must be a finite number, got nan"):
        separated_loss(3, 0.1, positive_similarity=math.nan)
    with pytest.raises(ValueError, match="negative_similarity must be a finite number, got '1'"):
        separated_loss(3, 0.1, negative_similarity="1")


# Decoupled contrastive loss (DCL, Yeh et al., 2022): the positive out of the denominator


def _decoupled_inputs(form, normalize, requires_grad=False):
    q, k, n = make_inputs(form, scale=1.0 if normalize else 0.3)
    if requires_grad:
        q, k = q.requires_grad_(), k.requires_grad_()
        n = None if n is None else n.requires_grad_()
    return q, k, n


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("normalize", [True, False])
def test_decoupled_info_nce_equals_the_dcl_loop_in_float64(form, reduction, normalize):
    q, k, n = _decoupled_inputs(form, normalize)
    expected = reference_decoupled_info_nce(q, k, n, 0.2, normalize)  # (N,)
    expected = {"mean": expected.mean(), "sum": expected.sum(), "none": expected}[reduction]
    loss = info_nce(q, k, n, 0.2, reduction, normalize, decoupled=True)
    assert loss.dtype == torch.float64 and loss.shape == expected.shape
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("normalize", [True, False])
def test_decoupled_gradients_equal_the_dcl_loops_including_the_temperatures(form, normalize):
    q, k, n = _decoupled_inputs(form, normalize, requires_grad=True)
    T = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    inputs = [t for t in (q, k, n, T) if t is not None]
    weights = torch.linspace(0.5, 1.5, q.shape[0], dtype=torch.float64)  # not just the mean
    got = torch.autograd.grad(
        (info_nce(q, k, n, T, "none", normalize, decoupled=True) * weights).sum(), inputs
    )
    want = torch.autograd.grad(
        (reference_decoupled_info_nce(q, k, n, T, normalize) * weights).sum(), inputs
    )
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
def test_decoupled_is_info_nce_plus_log_of_one_minus_the_positives_probability(form):
    """lse over the negatives = lse over all + log(1 - p+), so DCL = L + log(1 - exp(-L)),
    with L = -log p+ the InfoNCE loss: the decoupled loss is the smaller of the two."""
    q, k, n = make_inputs(form)
    standard = info_nce(q, k, n, 0.2, "none")
    decoupled = info_nce(q, k, n, 0.2, "none", decoupled=True)
    torch.testing.assert_close(
        decoupled, standard + torch.log(-torch.expm1(-standard)), rtol=1e-12, atol=1e-12
    )
    assert (decoupled < standard).all()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("normalize", [True, False])
def test_decoupled_info_nce_passes_gradcheck_with_a_tensor_temperature(form, normalize):
    q, k, n = make_inputs(form, N=3, M=2, K=4, D=5, scale=0.5)
    T = torch.tensor(0.5, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (q, k, n, T) if t is not None]

    def fn(*args):
        negatives = args[2] if len(args) == 4 else None
        return info_nce(args[0], args[1], negatives, args[-1], "none", normalize, decoupled=True)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize(
    ("negatives", "query", "match"),
    [
        (torch.zeros(0, 6), torch.randn(4, 6), "got K = 0 negatives"),
        (torch.zeros(4, 0, 6), torch.randn(4, 6), "got M = 0 per query"),
        (None, torch.randn(1, 6), r"got N = 1 \(in-batch negatives"),
    ],
)
def test_decoupled_without_any_negative_is_a_value_error_naming_decoupled(negatives, query, match):
    """An empty log-sum-exp (-inf): the decoupled loss is undefined, not 0 or -inf."""
    key = torch.randn_like(query)
    message = rf"decoupled=True needs at least one negative .*{match}"
    for call in (info_nce, info_nce_stats):
        with pytest.raises(ValueError, match=message):
            call(query, key, negatives, 0.1, decoupled=True)
    with pytest.raises(ValueError, match=message):
        InfoNCE(0.1, decoupled=True)(query, key, negatives)
    assert torch.isfinite(info_nce(query, key, negatives, 0.1))  # InfoNCE itself is defined


@pytest.mark.parametrize("form", FORMS)
def test_decoupled_stats_give_the_decoupled_loss_and_the_same_logit_statistics(form):
    q, k, n = make_inputs(form, N=6, M=5, K=9)
    stats = info_nce_stats(q, k, n, 0.2, decoupled=True)
    standard = info_nce_stats(q, k, n, 0.2)
    torch.testing.assert_close(stats.loss, reference_decoupled_info_nce(q, k, n, 0.2, True))
    for got, want in zip(stats[1:], standard[1:], strict=True):
        assert torch.equal(got, want)


def test_module_with_decoupled_matches_the_function():
    q, k, n = make_inputs("per_query", dtype=torch.float32)
    criterion = InfoNCE(temperature=0.2, decoupled=True)
    assert torch.equal(criterion(q, k, n), info_nce(q, k, n, 0.2, decoupled=True))
    assert "decoupled=True" in repr(criterion) and "decoupled" not in repr(InfoNCE())


def test_decoupled_without_normalize_does_not_overflow_at_a_tiny_temperature():
    """DCL = (s_neg - s_pos) / T + log(1) = 2^16 / 2^-100 = 2^116: finite though the logits
    2^130 are not (each row's maximum is subtracted first)."""
    q, k, n, T = _overflowing()
    assert info_nce(q, k, n, T, normalize=False, decoupled=True).item() == 2.0**116
    stats = info_nce_stats(q, k, n[None], T, normalize=False, decoupled=True)
    assert stats.loss.item() == 2.0**116
