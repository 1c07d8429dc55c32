import math

import pytest
import torch

from infonce import softmax_with_temperature

LOGITS = [1.0, 5.0, 7.0, 10.0]
TABLE = {
    0.1: [8.194012623989748e-40, 1.928749847963737e-22, 9.357622968839298e-14, 0.9999999999999064],
    1.0: [0.00011679362893736733, 0.006376716075637758, 0.0471179128098403, 0.9463885774855847],
    10.0: [0.14763314666550595, 0.2202427743860977, 0.26900513210002774, 0.3631189468483686],
    100.0: [0.23827555570657363, 0.24799976560608047, 0.25300969319764466, 0.2607149854897012],
    10000.0: [0.2498812648459304, 0.2499812373450356, 0.2500312385924627, 0.2501062592165714],
}


@pytest.mark.parametrize("temperature", sorted(TABLE))
def test_softmax_with_temperature_matches_table_in_float64(temperature):
    p = softmax_with_temperature(torch.tensor(LOGITS, dtype=torch.float64), temperature)
    assert p.dtype == torch.float64
    torch.testing.assert_close(
        p, torch.tensor(TABLE[temperature], dtype=torch.float64), rtol=1e-12, atol=0
    )


def test_softmax_matches_closed_form_exp_ratio_in_float64():
    x = torch.randn(5, 7, dtype=torch.float64)
    for t in (0.3, 2.0):
        e = torch.exp(x / t)
        torch.testing.assert_close(softmax_with_temperature(x, t), e / e.sum(-1, keepdim=True))


def test_large_logits_at_low_temperature_do_not_overflow():
    x = torch.tensor([1e4, 0.0, -1e4])
    naive = torch.exp(x / 0.1) / torch.exp(x / 0.1).sum()
    assert torch.isnan(naive).any()  # what we protect against
    p = softmax_with_temperature(x, 0.1)
    assert torch.equal(p, torch.tensor([1.0, 0.0, 0.0]))


def test_temperature_limits_are_argmax_and_uniform():
    x = torch.tensor([0.3, 2.0, -1.0, 1.9], dtype=torch.float64)
    torch.testing.assert_close(
        softmax_with_temperature(x, 1e-6), torch.tensor([0, 1.0, 0, 0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        softmax_with_temperature(x, 1e9), torch.full((4,), 0.25, dtype=torch.float64)
    )


def test_softmax_along_dim_sums_to_one():
    x = torch.randn(3, 4, 5)
    p = softmax_with_temperature(x, 0.5, dim=1)
    torch.testing.assert_close(p.sum(1), torch.ones(3, 5))


def test_half_precision_logits_are_computed_in_float32():
    p = softmax_with_temperature(torch.tensor([1.0, 2.0], dtype=torch.float16), 0.07)
    assert p.dtype == torch.float32


@pytest.mark.parametrize(
    "temperature", [0.0, -1.0, math.nan, math.inf, "1", None, True, 1e-45, 1e-39, 1e39]
)
def test_bad_temperature_is_a_value_error_naming_it(temperature):
    with pytest.raises(ValueError, match="temperature"):
        softmax_with_temperature(torch.randn(3), temperature)


def test_integer_logits_are_rejected():
    with pytest.raises(ValueError, match=r"logits.*int64"):
        softmax_with_temperature(torch.tensor([1, 2, 3]), 1.0)


def test_dim_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="dim must be in"):
        softmax_with_temperature(torch.randn(3, 4), 1.0, dim=2)


@pytest.mark.parametrize("temperature", [1e-45, 1e-39])
def test_a_temperature_that_underflows_float32_is_refused_naming_it_and_its_value(temperature):
    """1e-45 passed the old check and gave nan: it is a float32 subnormal, x / T overflows."""
    with pytest.raises(
        ValueError, match=rf"temperature must lie in \[1.175e-38, .*got {temperature}"
    ):
        softmax_with_temperature(torch.tensor([1.0, 2.0]), temperature)
    # a normal float64: float64 logits are computed in float64, where it is valid
    p = softmax_with_temperature(torch.tensor([1.0, 2.0], dtype=torch.float64), temperature)
    assert p.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("temperature", [1e-30, 1.2e-38])
def test_large_logits_at_a_tiny_valid_temperature_give_a_one_hot_not_nan(temperature):
    """(logits - max) / T: logits / T overflowed to inf (1e4 / 1e-30 = 1e34 is fine, 1e10 is
    not) and the softmax of inf was nan. Ties share the mass."""
    x = torch.tensor([[1e4, 0.0, -1e4], [1e10, 1e10, -1e10]])
    p = softmax_with_temperature(x, temperature)
    assert torch.equal(p, torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]))
    p = softmax_with_temperature(x, torch.tensor(temperature))  # a tensor T, the same
    assert torch.equal(p, torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]))


def test_gradient_with_respect_to_t_ignores_minus_inf_entries():
    """d(-inf / T)/dT is nan; an entry at -inf has probability 0 at every T, so it adds 0."""
    x = torch.tensor([1.0, 3.0, -torch.inf], dtype=torch.float64)
    T = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(softmax_with_temperature(x, T)[1], T)
    T2 = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(softmax_with_temperature(x[:2], T2)[1], T2)
    assert grad.item() == pytest.approx(expected.item(), rel=1e-14)


def test_nan_and_all_minus_inf_rows_stay_nan():
    x = torch.tensor([[1.0, float("nan")], [-torch.inf, -torch.inf], [0.0, -torch.inf]])
    p = softmax_with_temperature(x, 0.5)
    assert torch.isnan(p[:2]).all() and p[2].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("dim, match", [(1.0, "dim must be an integer, got 1.0"),
                                        (None, "dim must be an integer, got None"),
                                        (True, "dim must be an integer, got True")])  # fmt: skip
def test_dim_that_is_not_an_integer_is_rejected(dim, match):
    with pytest.raises(ValueError, match=match):
        softmax_with_temperature(torch.randn(3, 4), 1.0, dim=dim)


def test_empty_and_0d_logits():
    assert softmax_with_temperature(torch.zeros(3, 0), 0.5).shape == (3, 0)
    assert softmax_with_temperature(torch.tensor(2.0), 0.5).item() == 1.0
