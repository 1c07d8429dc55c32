"""TemperatureScaler and expected_calibration_error: known over-confidence, torchmetrics."""

import pytest
import torch
import torch.nn.functional as F

from infonce import TemperatureScaler, expected_calibration_error, reliability_bins


def _calibrated_logits(N=20_000, C=10, seed=0):
    """Logits whose softmax is the true label distribution: labels are drawn from it."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, C, generator=g) * 2.0
    labels = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=g)[:, 0]
    return logits, labels


@pytest.mark.parametrize("factor", [0.4, 2.5, 4.0])
def test_scaler_recovers_a_known_overconfidence_within_2_percent_and_halves_ece(factor):
    logits, labels = _calibrated_logits()
    distorted = logits * factor  # T = factor undoes it
    scaler = TemperatureScaler().fit(distorted, labels)
    assert scaler.temperature == pytest.approx(factor, rel=0.02)
    before = expected_calibration_error(torch.softmax(distorted, 1), labels)
    after = expected_calibration_error(torch.softmax(scaler(distorted), 1), labels)
    assert after < before / 2


def test_fitted_temperature_minimises_the_nll_on_a_fine_grid():
    logits, labels = _calibrated_logits(N=2_000, seed=1)
    logits = logits.double() * 1.7
    scaler = TemperatureScaler().fit(logits, labels)
    grid = torch.linspace(0.5, 4.0, 3501, dtype=torch.float64)
    nll = torch.stack([F.cross_entropy(logits / t, labels) for t in grid])
    best = F.cross_entropy(scaler(logits), labels)
    assert best <= nll.min() + 1e-12
    assert scaler.temperature == pytest.approx(grid[nll.argmin()].item(), abs=1e-3)


def test_scaling_keeps_every_argmax_and_the_temperature_is_in_the_state_dict():
    logits, labels = _calibrated_logits(N=500)
    scaler = TemperatureScaler().fit(logits * 3, labels)
    assert torch.equal(scaler(logits * 3).argmax(1), logits.argmax(1))
    fresh = TemperatureScaler()
    fresh.load_state_dict(scaler.state_dict())
    assert fresh.temperature == scaler.temperature


def test_separable_logits_return_the_bound_with_a_warning():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    with pytest.warns(UserWarning, match="NLL still falls"):
        scaler = TemperatureScaler().fit(logits, torch.tensor([0, 1]))
    assert scaler.temperature == pytest.approx(0.01)


def test_ece_equals_torchmetrics_calibration_error():
    torchmetrics = pytest.importorskip("torchmetrics")
    logits, labels = _calibrated_logits(N=5_000, seed=2)
    for scale in (0.3, 1.0, 3.0, 50.0):  # 50: many confidences of exactly 1
        probs = torch.softmax(logits * scale, dim=1)
        for n_bins in (1, 10, 15):
            metric = torchmetrics.classification.MulticlassCalibrationError(
                num_classes=10, n_bins=n_bins, norm="l1"
            )
            ours = expected_calibration_error(probs, labels, n_bins)
            assert ours.item() == pytest.approx(metric(probs, labels).item(), abs=1e-6)


def test_ece_by_hand_on_four_predictions():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    labels = torch.tensor([0, 1, 1, 0])
    # bins of width 0.5: [0.5, 1) holds all four: accuracy 2/4, confidence (0.9+0.8+0.7+0.55)/4
    expected = abs(0.5 - (0.9 + 0.8 + 0.7 + 0.55) / 4)
    assert expected_calibration_error(probs, labels, n_bins=2).item() == pytest.approx(expected)
    # 10 bins: 0.9 | 0.8 | 0.7 | 0.55 each alone: |1-.9| + |0-.8| + |1-.7| + |0-.55|, / 4
    expected = (0.1 + 0.8 + 0.3 + 0.55) / 4
    assert expected_calibration_error(probs, labels, n_bins=10).item() == pytest.approx(expected)


def _fit(logits, labels):
    return TemperatureScaler().fit(logits, labels)


ZEROS4 = torch.zeros(4, dtype=torch.long)
P4 = torch.softmax(torch.randn(4, 3), dim=1)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: _fit(torch.randn(4), ZEROS4), "logits must have 2 dimensions"),
        (
            lambda: _fit(torch.randn(4, 3), torch.zeros(5).long()),
            r"labels must be an int64 tensor of shape \(4,\), one per row of logits, got shape "
            r"\(5,\)",
        ),
        (lambda: _fit(torch.randn(4, 3), torch.zeros(4)), r"labels .*dtype torch.float32"),
        (lambda: _fit(torch.randn(4, 3), [0, 0, 0, 0]), r"labels must be .*got list"),
        (lambda: _fit(torch.randn(4, 3), torch.full((4,), 3)), r"labels must lie in \[0, 3\)"),
        (lambda: _fit(torch.full((4, 3), float("nan")), ZEROS4), "logits must be finite"),
        (lambda: expected_calibration_error(P4, ZEROS4, 0), "n_bins must be"),
        (lambda: expected_calibration_error(P4, ZEROS4, 2.5), "n_bins must be an integer"),
        (
            lambda: TemperatureScaler().fit(torch.randn(4, 3), ZEROS4, max_temperature=True),
            "max_temperature must be finite and > 1, got True",
        ),
        (lambda: TemperatureScaler()(torch.tensor(1.0)), r"logits must be \(\*, C\)"),
    ],
)
def test_bad_inputs_are_value_errors_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_max_temperature_must_exceed_one_and_either_bound_warns():
    logits, labels = _calibrated_logits(N=500)
    with pytest.raises(ValueError, match="max_temperature must be finite and > 1, got 0.5"):
        TemperatureScaler().fit(logits, labels, max_temperature=0.5)
    with pytest.warns(UserWarning, match="NLL still falls at T = 2"):
        scaler = TemperatureScaler().fit(logits * 5, labels, max_temperature=2.0)
    assert scaler.temperature == pytest.approx(2.0)


@pytest.fixture
def float64_default():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def test_ece_and_bins_work_under_a_float64_default_dtype(float64_default):
    """linspace and zeros took the default dtype while confidences were float32: bucketize and
    scatter_add_ raised. Every dtype is explicit now: the same float32 values either way."""
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]], dtype=torch.float32)
    labels = torch.tensor([0, 1, 1, 0])
    ece = expected_calibration_error(probs, labels, n_bins=10)
    assert ece.dtype == torch.float32
    assert ece.item() == pytest.approx((0.1 + 0.8 + 0.3 + 0.55) / 4, rel=1e-6)  # as by hand
    count, accuracy, confidence = reliability_bins(probs.double(), labels, n_bins=10)
    assert count.dtype == accuracy.dtype == confidence.dtype == torch.float32
    assert count.tolist() == [0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 0]
    logits, labels = _calibrated_logits(N=500)
    scaler = TemperatureScaler().fit(logits.float() * 2, labels)
    assert scaler.inverse_temperature.dtype == torch.float64  # as under a float32 default
    assert scaler.temperature == pytest.approx(2.0, rel=0.2)


@pytest.mark.parametrize(
    "probs, match",
    [
        (  # rows that do not sum to 1: logits passed by mistake
            torch.tensor([[0.7, 0.2, 0.1], [2.0, 0.5, -1.0]]),
            "probs must be non-negative probabilities, got -1.0 in row 1",
        ),
        (
            torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.3, 0.1]]),
            r"probs must be probabilities, each row summing to 1 .*got row 1 summing to 0.9\b",
        ),
        (  # the largest value negative: it crashed with "index -1 is out of bounds"
            torch.tensor([[0.7, 0.2, 0.1], [-0.1, -0.2, -0.3]]),
            "probs must be non-negative probabilities, got -0.3.* in row 1",
        ),
        (
            torch.tensor([[0.7, 0.2, 0.1], [float("nan"), 0.5, 0.5]]),
            "probs must be finite probabilities, got row 1",
        ),
        (
            torch.tensor([[0.7, 0.2, 0.1], [float("inf"), 0.0, 0.0]]),
            "probs must be finite probabilities, got row 1",
        ),
        (
            torch.tensor([[0.5, 0.5], [0.5, 0.5 + 2e-5]], dtype=torch.float64),
            r"within 1e-05 for torch.float64.*row 1 summing to 1.00002",
        ),
    ],
)
def test_ece_refuses_what_is_not_a_probability_naming_the_first_bad_row(probs, match):
    labels = torch.zeros(probs.shape[0], dtype=torch.long)
    with pytest.raises(ValueError, match=match):
        expected_calibration_error(probs, labels)
    with pytest.raises(ValueError, match=match):
        reliability_bins(probs, labels)


@pytest.mark.parametrize(
    "dtype, error",
    [(torch.float64, 9e-6), (torch.float32, 9e-4), (torch.bfloat16, 0.0), (torch.float16, 0.0)],
)
def test_ece_accepts_rows_summing_to_1_within_the_dtypes_tolerance(dtype, error):
    logits, labels = _calibrated_logits(N=200, C=1000, seed=3)
    probs = torch.softmax(logits, dim=1)  # float32 rows of 1000 classes: sums off by ~1e-7
    probs[:, 0] += error  # rounding of a lower precision, within the tolerance
    probs = probs.to(dtype)  # a bfloat16 row of 1000 rounded values: off by up to ~4e-3
    assert 0.0 <= expected_calibration_error(probs, labels).item() <= 1.0


@pytest.mark.parametrize("length", [3, 5])
def test_labels_of_another_length_than_probs_are_a_value_error(length):
    with pytest.raises(ValueError, match=rf"labels must be .*\(4,\).*got shape \({length},\)"):
        expected_calibration_error(P4, torch.zeros(length, dtype=torch.long))
