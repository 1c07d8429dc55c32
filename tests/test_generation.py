"""sample_with_temperature: argmax at T = 0, frequencies by chi-square, top-k/top-p sets."""

import pytest
import torch

from infonce import sample_with_temperature, softmax_with_temperature

# chi-square 0.999 quantiles (scipy.stats.chi2.ppf(0.999, df)): a correct sampler fails one
# run in 1,000 per test, and the seeds are fixed, so the outcome is the same every run
CHI2_999 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515}


def _chi_square(draws, probs):
    counts = torch.bincount(draws, minlength=probs.numel()).double()
    expected = probs.double() * draws.numel()
    keep = expected > 0
    assert counts[~keep].sum() == 0  # nothing drawn where the probability is 0
    return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()), int(keep.sum())


def test_zero_temperature_is_argmax_with_the_first_on_ties():
    logits = torch.tensor([[1.0, 5.0, 5.0, 2.0], [9.0, 0.0, 1.0, 2.0]])
    assert sample_with_temperature(logits, 0.0).tolist() == [1, 0]


@pytest.mark.parametrize("T", [0.5, 1.0, 3.0])
def test_frequencies_follow_softmax_with_temperature_by_chi_square(T):
    logits = torch.tensor([1.0, 2.0, 0.5, 3.0, 2.5, 0.0])
    n = 200_000
    g = torch.Generator().manual_seed(0)
    draws = sample_with_temperature(logits.expand(n, -1), T, generator=g)  # (n,)
    stat, cells = _chi_square(draws, softmax_with_temperature(logits, T))
    assert stat < CHI2_999[cells - 1]


def test_top_k_keeps_exactly_the_k_largest_and_renormalises():
    logits = torch.tensor([1.0, 4.0, 2.0, 3.5, 0.0, 3.9])
    n = 100_000
    draws = sample_with_temperature(logits.expand(n, -1), 1.0, top_k=3,
                                    generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert set(draws.unique().tolist()) == {1, 3, 5}
    probs = torch.softmax(
        logits.masked_fill(torch.tensor([1, 0, 1, 0, 1, 0]).bool(), -torch.inf), 0
    )
    stat, cells = _chi_square(draws, probs)
    assert stat < CHI2_999[cells - 1]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15])
    logits = probs.log()
    n = 100_000
    # sorted: 0.4, 0.3, 0.15, 0.1, 0.05; p = 0.7 is reached by {0.4, 0.3}; p = 0.71 needs 0.15
    for p, kept in ((0.7, {1, 3}), (0.71, {1, 3, 4}), (0.3, {1}), (1.0, {0, 1, 2, 3, 4})):
        g = torch.Generator().manual_seed(2)
        draws = sample_with_temperature(logits.expand(n, -1), 1.0, top_p=p, generator=g)
        assert set(draws.unique().tolist()) == kept, p
        mask = torch.tensor([i not in kept for i in range(5)])
        stat, cells = _chi_square(draws, torch.softmax(logits.masked_fill(mask, -torch.inf), 0))
        if cells > 1:
            assert stat < CHI2_999[cells - 1]


def test_top_p_applies_after_top_k_and_temperature():
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0])
    # T = 0.5 -> probabilities over the top-3 {1, 2, 3}: softmax([2, 4, 6]) = .016 .117 .867
    draws = sample_with_temperature(logits.expand(20_000, -1), 0.5, top_k=3, top_p=0.9,
                                    generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert set(draws.unique().tolist()) == {2, 3}


def test_draws_are_reproducible_with_a_generator_and_keep_leading_dims():
    logits = torch.randn(2, 3, 50)
    a = sample_with_temperature(logits, 1.0, generator=torch.Generator().manual_seed(7))
    b = sample_with_temperature(logits, 1.0, generator=torch.Generator().manual_seed(7))
    assert a.shape == (2, 3) and a.dtype == torch.int64 and torch.equal(a, b)


def test_minus_inf_logits_are_never_drawn():
    logits = torch.tensor([0.0, -torch.inf, 0.0])
    draws = sample_with_temperature(logits.expand(1000, -1), 5.0,
                                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert 1 not in draws.tolist()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": -1.0}, "temperature must be a finite number >= 0"),
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"top_p": 0.0}, r"top_p must be a number in \(0, 1\], got 0.0"),
        ({"top_p": 1.5}, r"top_p must be a number in \(0, 1\], got 1.5"),
        ({"logits": torch.full((2, 3), -torch.inf)}, "at least one finite entry per row"),
        ({"logits": torch.ones(2, 3, dtype=torch.long)}, "logits must be a floating-point"),
    ],
)
def test_bad_arguments_are_value_errors_naming_them(kwargs, match):
    kwargs = {"logits": torch.randn(2, 3), **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_with_temperature(**kwargs)


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_a_0d_tensor_temperature_is_read_once():
    logits = torch.tensor([[0.0, 3.0, 1.0]])
    assert sample_with_temperature(logits, torch.tensor(0.0)).tolist() == [1]
    a = sample_with_temperature(logits, torch.tensor(0.7), generator=_seeded(1))
    b = sample_with_temperature(logits, 0.7, generator=_seeded(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "logits, temperature, match",
    [
        (torch.tensor([[0.0, torch.inf]]), 1.0, "no nan and no \\+inf"),
        (torch.tensor([[0.0, 1.0]]), 1e-40, r"temperature must lie in \[1.175e-38, .*got 1e-40"),
        (torch.tensor([[0.0, 1.0]]), 1e-45, r"temperature must lie in \[1.175e-38, .*got 1e-45"),
    ],
)
def test_logits_that_would_break_the_softmax_are_value_errors(logits, temperature, match):
    with pytest.raises(ValueError, match=match):
        sample_with_temperature(logits, temperature)


def test_a_tiny_valid_temperature_with_large_logits_draws_among_the_maxima():
    """logits / T overflowed (1e4 / 1e-37 = inf): refused before; (logits - max) / T is a
    one-hot, or uniform over tied maxima."""
    logits = torch.tensor([[1e4, 0.0, 1e4, -1e4]]).expand(2000, -1)
    draws = sample_with_temperature(logits, 1e-37, generator=_seeded(4))
    assert set(draws.unique().tolist()) == {0, 2}
    assert 800 < int((draws == 0).sum()) < 1200  # ties share the mass


def test_ties_at_the_kth_value_keep_the_lowest_indices():
    """Ten equal logits: torch.topk kept index 8 for top_k=1; the docstring's rule (ties broken
    by index, lowest first) keeps 0, and {0, 1, 2} for top_k=3."""
    logits = torch.zeros(4000, 10)
    assert set(sample_with_temperature(logits, 1.0, top_k=1, generator=_seeded(5)).tolist()) == {0}
    draws = sample_with_temperature(logits, 1.0, top_k=3, generator=_seeded(6))
    assert set(draws.tolist()) == {0, 1, 2}
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0, 3.0, 0.0]]).expand(4000, -1)
    draws = sample_with_temperature(logits, 1.0, top_k=2, generator=_seeded(7))
    assert set(draws.tolist()) == {1, 3}  # the three 3.0 tie at k = 2: the lowest two


def test_ties_in_the_nucleus_keep_the_lowest_indices():
    logits = torch.zeros(4000, 10)  # each 0.1: p = 0.25 needs three entries
    draws = sample_with_temperature(logits, 1.0, top_p=0.25, generator=_seeded(8))
    assert set(draws.tolist()) == {0, 1, 2}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": torch.tensor([0.5])}, r"temperature must be a 0-d float.*\(1,\)"),
        ({"temperature": torch.tensor(1)}, "temperature must be a 0-d floating.*int64"),
        ({"temperature": None}, "temperature must be a finite number >= 0, got None"),
        ({"top_k": 1.5}, "top_k must be an integer >= 1, got 1.5"),
        ({"top_k": True}, "top_k must be an integer >= 1, got True"),
        ({"top_p": float("nan")}, r"top_p must be a number in \(0, 1\], got nan"),
        ({"generator": 7}, "generator must be a torch.Generator or None, got 7"),
        ({"logits": torch.tensor([[0.0, float("nan")]])}, "no nan and no \\+inf"),
        ({"logits": torch.zeros(2, 0)}, r"logits must be \(\*, V\) with V >= 1"),
    ],
)
def test_more_bad_arguments_are_value_errors_naming_them(kwargs, match):
    kwargs = {"logits": torch.randn(2, 3), **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_with_temperature(**kwargs)
