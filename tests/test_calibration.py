"""TemperatureScaler and expected_calibration_error: known over-confidence, torchmetrics."""

import pytest
import torch
import torch.nn.functional as F

from infonce import TemperatureScaler, expected_calibration_error


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


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: _fit(torch.randn(4), ZEROS4), "logits must have 2 dimensions"),
        (lambda: _fit(torch.randn(4, 3), torch.zeros(5).long()), r"labels must be an \(4,\) int64"),
        (lambda: _fit(torch.randn(4, 3), torch.full((4,), 3)), r"labels must lie in \[0, 3\)"),
        (lambda: _fit(torch.full((4, 3), float("nan")), ZEROS4), "logits must be finite"),
        (lambda: expected_calibration_error(torch.rand(4, 3), ZEROS4, 0), "n_bins must be"),
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
