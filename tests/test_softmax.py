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


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan, math.inf, "1", None, True])
def test_bad_temperature_is_a_value_error_naming_it(temperature):
    with pytest.raises(ValueError, match="temperature"):
        softmax_with_temperature(torch.randn(3), temperature)


def test_integer_logits_are_rejected():
    with pytest.raises(ValueError, match=r"logits.*int64"):
        softmax_with_temperature(torch.tensor([1, 2, 3]), 1.0)


def test_dim_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="dim must be in"):
        softmax_with_temperature(torch.randn(3, 4), 1.0, dim=2)
