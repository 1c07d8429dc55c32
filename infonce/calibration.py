"""Calibration with one temperature (Guo et al., 2017), and the expected calibration error."""

import math
import warnings

import torch
from torch import Tensor, nn

from infonce._checks import check_class_scores, check_float_tensor, check_int, check_labels
from infonce._numerics import compute_dtype

__all__ = ["TemperatureScaler", "expected_calibration_error", "reliability_bins"]


# How far a row of probabilities may sum from 1: one rounding of the probabilities to the next
# lower precision (a float16 softmax stored as float32, a float32 one stored as float64) moves
# a sum by up to ~2.5e-4 and ~4e-6 (measured at 1e5 classes); bfloat16 rounding, by up to
# ~4e-3. Each tolerance is a few times that, and still far below what a mistake gives
# (logits, unnormalised scores, a dropped class).
_SUM_TOLERANCE = {
    torch.float64: 1e-5,
    torch.float32: 1e-3,
    torch.float16: 1e-2,
    torch.bfloat16: 1e-2,
}


def _check_probs(probs: Tensor) -> tuple[int, int]:
    """Raise ValueError unless ``probs`` is (N, C) floating point, N >= 1, C >= 2, finite,
    non-negative, each row summing to 1 within :data:`_SUM_TOLERANCE` of its dtype."""
    N, C = check_class_scores(probs, "probs")
    p = probs.detach()
    bad = ~torch.isfinite(p).all(dim=1)  # (N,)
    if bad.any():
        row = int(bad.nonzero()[0])
        raise ValueError(
            f"probs must be finite probabilities, got row {row}: {p[row].tolist()[:8]}"
        )
    bad = (p < 0).any(dim=1)
    if bad.any():
        row = int(bad.nonzero()[0])
        raise ValueError(
            f"probs must be non-negative probabilities, got {float(p[row].min())} in row {row}"
        )
    tolerance = _SUM_TOLERANCE.get(probs.dtype, 1e-3)
    sums = p.to(torch.float64).sum(dim=1)  # (N,)
    bad = (sums - 1).abs() > tolerance
    if bad.any():
        row = int(bad.nonzero()[0])
        raise ValueError(
            f"probs must be probabilities, each row summing to 1 (within {tolerance:g} for "
            f"{probs.dtype}; pass softmax(logits), not logits), got row {row} summing to "
            f"{float(sums[row]):.6g}"
        )
    return N, C


class TemperatureScaler(nn.Module):
    """Temperature scaling: one ``T`` that divides a classifier's logits to calibrate them.

    :meth:`fit` finds the ``T`` minimising the negative log-likelihood of held-out logits
    (Guo et al., 2017). The NLL is convex in ``1 / T``, so a safeguarded Newton search in
    float64 finds the global minimum to ``1e-10`` relative (no learning rate, no
    iterations to tune). Dividing by ``T`` leaves every argmax, hence the accuracy, unchanged.
    Unlike scalers fitted on probabilities, this one takes logits, as the softmax of every
    function in :mod:`infonce` does.

    Shape:
        fit: logits (N, C) float, labels (N,) int64; call: logits (*, C) -> (*, C) float32
        (float64 for float64 logits).

    Raises:
        ValueError: from :meth:`fit` on logits that are not (N, C) floating point with C >= 2,
            labels not (N,) int64 in [0, C), non-finite logits or logits beyond 1e150 (whose
            squares overflow float64); from a call, logits not a floating-point tensor with
            a class dimension.

    Examples:
        >>> scaler = TemperatureScaler().fit(val_logits, val_labels)
        >>> probs = torch.softmax(scaler(test_logits), dim=1)
        >>> scaler.temperature
        1.83
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("inverse_temperature", torch.ones((), dtype=torch.float64))  # ()

    @property
    def temperature(self) -> float:
        """The fitted ``T`` (1.0 before :meth:`fit`)."""
        return 1.0 / float(self.inverse_temperature)

    @torch.no_grad()
    def fit(
        self, logits: Tensor, labels: Tensor, max_temperature: float = 100.0
    ) -> "TemperatureScaler":
        """Set ``T`` to the minimiser of ``NLL(logits / T, labels)`` over ``[1 / max, max]``.

        On data the logits already separate perfectly the NLL keeps falling as ``T -> 0``;
        a bound reached is returned with a warning.

        Raises:
            ValueError: bad logits or labels (see the class), ``max_temperature`` not a
                finite number > 1.
        """
        if isinstance(max_temperature, bool) or not (
            isinstance(max_temperature, int | float) and 1.0 < max_temperature < math.inf
        ):
            raise ValueError(f"max_temperature must be finite and > 1, got {max_temperature!r}")
        N, C = check_class_scores(logits, "logits", finite=True)
        check_labels(labels, "labels", N, C, rows_of="logits")
        z = logits.detach().to(torch.float64)
        if float(z.abs().max()) > 1e150:  # E_p[z^2] below would overflow float64
            raise ValueError(f"logits must lie within +-1e150, got {float(z.abs().max()):.3g}")
        true = z.gather(1, labels.to(z.device)[:, None])[:, 0]  # (N,)

        def slope_and_curvature(beta: float) -> tuple[float, float]:
            p = torch.softmax(beta * z, dim=1)  # (N, C)
            mean = (p * z).sum(dim=1)  # (N,) E_p[z]
            var = (p * (z - mean[:, None]) ** 2).sum(dim=1)  # (N,) Var_p[z] >= 0
            return float((mean - true).mean()), float(var.mean())

        low, high = 1.0 / max_temperature, max_temperature  # the bracket on beta = 1/T
        if slope_and_curvature(low)[0] >= 0:  # NLL rising from the smallest beta on
            warnings.warn(f"NLL still falls at T = {1 / low:g}: returning that bound", stacklevel=2)
            beta = low
        elif slope_and_curvature(high)[0] <= 0:
            warnings.warn(f"NLL still falls at T = 1/{high:g}: returning that bound", stacklevel=2)
            beta = high
        else:
            beta = 1.0
            for _ in range(200):  # Newton inside the bracket, else bisection (in log beta)
                slope, curvature = slope_and_curvature(beta)
                if abs(slope) < 1e-13 or high - low <= 1e-12 * high:
                    break
                if slope > 0:
                    high = beta
                else:
                    low = beta
                step = beta - slope / curvature if curvature > 0 else math.nan
                beta = step if low <= step <= high else math.sqrt(low * high)
        self.inverse_temperature.fill_(beta)
        return self

    def forward(self, logits: Tensor) -> Tensor:
        check_float_tensor(logits, "logits")
        if logits.dim() < 1:
            raise ValueError("logits must be (*, C), got a 0-d tensor")
        dtype = compute_dtype(logits)
        return logits.to(dtype) * self.inverse_temperature.to(device=logits.device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.4g}"


def reliability_bins(
    probs: Tensor, labels: Tensor, n_bins: int = 15
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-bin count, accuracy and mean confidence of the top-1 predictions.

    Bin ``b`` holds the confidences in ``[b / n, (b + 1) / n)``; a confidence of exactly 1
    forms bin ``n`` (as torchmetrics bins). Empty bins have accuracy and confidence 0.
    Binned in float32 whatever the default dtype. Arguments and errors as
    :func:`expected_calibration_error`.

    Shape:
        probs (N, C), labels (N,); three (n_bins + 1,) float32 tensors.
    """
    N, C = _check_probs(probs)
    check_labels(labels, "labels", N, C, rows_of="probs")
    check_int(n_bins, "n_bins")
    f32, device = torch.float32, probs.device
    confidence, prediction = probs.detach().to(f32).max(dim=1)  # (N,), (N,)
    correct = (prediction == labels.to(device)).to(f32)  # (N,)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=f32, device=device)  # (n_bins + 1,)
    bins = torch.bucketize(confidence, edges, right=True) - 1  # (N,) in [0, n_bins]

    def per_bin(values: Tensor) -> Tensor:
        return torch.zeros(n_bins + 1, dtype=f32, device=device).scatter_add_(0, bins, values)

    count = per_bin(torch.ones_like(confidence))
    return count, per_bin(correct) / count.clamp_min(1), per_bin(confidence) / count.clamp_min(1)


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> Tensor:
    """Expected calibration error of the top-1 prediction, with ``n_bins`` equal-width bins.

    ``ECE = sum_b |B_b| / N * |accuracy(B_b) - confidence(B_b)|``, where the confidence of a
    prediction is its largest probability. Binned exactly as torchmetrics'
    ``CalibrationError(task="multiclass", norm="l1")``: bin ``b`` holds confidences in
    ``[b / n, (b + 1) / n)`` and a confidence of exactly 1 forms a bin of its own
    (:func:`reliability_bins`).

    ``probs`` must be probabilities: finite, non-negative, each row summing to 1 within a
    tolerance of its dtype (1e-5 for float64, 1e-3 for float32, 1e-2 for float16 and
    bfloat16: a few times what one rounding to the next lower precision moves a sum, far
    below what passing logits or unnormalised scores gives).

    Args:
        probs: class probabilities, each row summing to 1 (e.g. ``softmax(logits / T)``).
        labels: the true classes.
        n_bins: number of bins (>= 1); 15 as Guo et al.

    Returns:
        ECE in [0, 1], a 0-d float32 tensor (whatever the default dtype).

    Shape:
        probs (N, C), labels (N,) int64; output ().

    Raises:
        ValueError: probs not (N, C) floating point with N >= 1 and C >= 2, or not
            probabilities (a non-finite or negative entry, or a row whose sum is not 1: the
            message gives the first such row); labels not (N,) int64 in [0, C); n_bins not
            an integer >= 1.
    """
    count, accuracy, confidence = reliability_bins(probs, labels, n_bins)
    return (count * (accuracy - confidence).abs()).sum() / count.sum()
