"""Pictures of what a temperature does: a softmax and its entropy, the InfoNCE of a separated
batch, and a classifier's reliability before and after temperature scaling."""

import math
from collections.abc import Sequence
from numbers import Integral, Real
from os import PathLike
from pathlib import Path

import torch
from torch import Tensor

from infonce._checks import check_class_scores, check_labels
from infonce._files import load_torch_file
from infonce.calibration import TemperatureScaler, expected_calibration_error, reliability_bins
from infonce.info_nce import separated_loss
from infonce.plot._figure import check_output, new_figure, save
from infonce.softmax import softmax_with_temperature

__all__ = [
    "check_logits_and_labels",
    "plot_lower_bound",
    "plot_reliability",
    "plot_temperature",
    "read_logits_file",
]

DEFAULT_LOGITS = (1.0, 5.0, 7.0, 10.0)
DEFAULT_TEMPERATURES = (0.07, 0.5, 1.0, 2.0, 5.0, 20.0)
DEFAULT_QUEUE_SIZES = (1024, 4096, 65536)


def _entropy(logits: Tensor, temperature: float) -> float:
    log_p = torch.log_softmax(logits / temperature, dim=0)
    return float(-(log_p.exp() * log_p).sum())


def plot_temperature(
    output: str | PathLike,
    logits: Sequence[float] = DEFAULT_LOGITS,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
) -> Path:
    """Left: ``softmax(logits / T)`` as bars for each T. Right: its entropy against T (log
    axis, 0.01 to 100), from 0 (one-hot, T -> 0) to ``log(n)`` (uniform, T -> inf).

    Raises:
        ValueError: fewer than 2 logits or a non-finite one; no temperature, or one that is
            not a finite number > 0; ``output`` not an image path (see :func:`plot_metrics`).
    """
    output = check_output(output)
    if len(logits) < 2 or not all(_is_finite(v) for v in logits):
        raise ValueError(f"logits must be at least 2 finite numbers, got {list(logits)}")
    if not temperatures or not all(_is_finite(t) and t > 0 for t in temperatures):
        raise ValueError(f"temperatures must be finite numbers > 0, got {list(temperatures)}")
    z = torch.tensor(logits, dtype=torch.float64)
    fig = new_figure((11, 4))
    bars, curve = fig.subplots(1, 2)
    width = 0.8 / len(temperatures)
    for i, t in enumerate(temperatures):
        p = softmax_with_temperature(z, t).tolist()
        xs = [j + (i - (len(temperatures) - 1) / 2) * width for j in range(len(p))]
        bars.bar(xs, p, width=width, label=f"T = {t:g}", color=f"C{i}")
    bars.set_xticks(range(len(logits)), [f"{v:g}" for v in logits])
    bars.set_xlabel("logit")
    bars.set_ylabel("probability")
    bars.set_title("softmax(logits / T)")
    bars.legend(fontsize="small")
    grid = torch.logspace(-2, 2, 400, dtype=torch.float64).tolist()
    curve.plot(grid, [_entropy(z, t) for t in grid], color="k")
    for i, t in enumerate(temperatures):
        curve.plot([t], [_entropy(z, t)], "o", color=f"C{i}")
    curve.axhline(math.log(len(logits)), linestyle="--", color="gray", label="log n (uniform)")
    curve.set_xscale("log")
    curve.set_xlabel("temperature T")
    curve.set_ylabel("entropy (nats)")
    curve.set_title(f"entropy of softmax({list(logits)} / T)")
    curve.legend(fontsize="small")
    for ax in (bars, curve):
        ax.grid(alpha=0.3)
    return save(fig, output)


def plot_lower_bound(
    output: str | PathLike, queue_sizes: Sequence[int] = DEFAULT_QUEUE_SIZES
) -> Path:
    """:func:`infonce.separated_loss` (positive at similarity 1, every negative at -1)
    against T for each K, log-log: how much a perfectly separated batch still costs. Marked:
    K = 1,024 at T = 1 (4.94: it keeps pushing) and at MoCo's T = 0.07 (about 4e-10: nothing
    left to learn from it).

    Raises:
        ValueError: no queue size, or one that is not an integer >= 1; ``output`` not an
            image path.
    """
    output = check_output(output)
    if not queue_sizes or not all(
        isinstance(k, Integral) and not isinstance(k, bool) and k >= 1 for k in queue_sizes
    ):
        raise ValueError(f"queue sizes must be integers >= 1, got {list(queue_sizes)}")
    fig = new_figure((7, 4.5))
    ax = fig.subplots()
    grid = torch.logspace(-2, 1, 400, dtype=torch.float64).tolist()
    for i, k in enumerate(queue_sizes):
        ax.plot(grid, [separated_loss(k, t) for t in grid], color=f"C{i}", label=f"K = {k:,}")
    for t in (1.0, 0.07):
        value = separated_loss(1024, t)
        ax.plot([t], [value], "o", color="k")
        ax.annotate(f"K = 1,024, T = {t:g}: {value:.3g}", (t, value), textcoords="offset points",
                    xytext=(8, -12 if t == 1.0 else 6), fontsize="small")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-12, 30)
    ax.set_xlabel("temperature T")
    ax.set_ylabel("InfoNCE loss (nats)")
    ax.set_title("InfoNCE of a separated batch: log(1 + K exp(-2 / T))")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return save(fig, output)


def plot_reliability(
    output: str | PathLike,
    logits: Tensor,
    labels: Tensor,
    n_bins: int = 15,
    fit_fraction: float = 0.5,
    seed: int = 0,
) -> tuple[Path, float]:
    """Reliability diagrams of a classifier before and after :class:`TemperatureScaler`.

    ``T`` is fitted on a seeded random ``round(fit_fraction * N)`` of the rows and both
    diagrams are drawn on the other rows (so the "after" is not flattered by fitting on what it
    shows); each part must hold at least one row.

    Returns:
        (the image path, the fitted T).

    Shape:
        logits (N, C) float, finite, N >= 2, C >= 2; labels (N,) int64 in [0, C).

    Raises:
        ValueError: logits or labels not as above; ``n_bins`` not an integer >= 1;
            ``fit_fraction`` not in (0, 1), or leaving no row to fit on or none to draw;
            ``output`` not an image path.
    """
    output = check_output(output)
    check_logits_and_labels(logits, labels)
    if isinstance(n_bins, bool) or not isinstance(n_bins, Integral) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    if not (_is_finite(fit_fraction) and 0.0 < fit_fraction < 1.0):
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
    N = len(logits)
    n_fit = round(fit_fraction * N)
    if not 1 <= n_fit <= N - 1:
        raise ValueError(
            f"{N} rows with fit fraction {fit_fraction:g} leave {n_fit} to fit T on and "
            f"{N - n_fit} to draw; each part needs at least one row"
        )
    order = torch.randperm(N, generator=torch.Generator().manual_seed(seed))
    fit, held = order[:n_fit], order[n_fit:]
    scaler = TemperatureScaler().fit(logits[fit], labels[fit])
    fig = new_figure((10, 4.5))
    for ax, (name, scaled) in zip(
        fig.subplots(1, 2),
        (("before", logits[held].float()), ("after", scaler(logits[held]))),
        strict=True,
    ):
        probs = torch.softmax(scaled, dim=1)
        count, accuracy, confidence = reliability_bins(probs, labels[held], n_bins)
        ece = float(expected_calibration_error(probs, labels[held], n_bins))
        centres = [(b + 0.5) / n_bins for b in range(n_bins)]
        shown = count[:n_bins] > 0
        ax.bar([c for c, s in zip(centres, shown.tolist(), strict=True) if s],
               accuracy[:n_bins][shown].tolist(), width=1 / n_bins, edgecolor="k",
               label="accuracy")  # fmt: skip
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        ax.plot(confidence[:n_bins][shown].tolist(), accuracy[:n_bins][shown].tolist(), "o",
                color="C3", markersize=3, label="bin mean confidence")  # fmt: skip
        t = 1.0 if name == "before" else scaler.temperature
        ax.set_title(f"{name}: T = {t:.3g}, ECE = {100 * ece:.2f}% ({len(held):,} held out)")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper left")
    return save(fig, output), scaler.temperature


def read_logits_file(path: str | PathLike) -> tuple[Tensor, Tensor]:
    """``(logits, labels)`` from ``torch.save({"logits": ..., "labels": ...})`` (what
    ``LinearProbe(logits_file=...)`` writes at test time), as stored: :func:`plot_reliability`
    checks them (:func:`check_logits_and_labels`).

    Raises:
        FileNotFoundError: no such file.
        UnreadableFileError: (a ValueError) not a file ``torch.load(weights_only=True)`` reads.
        ValueError: not a dict holding ``logits`` and ``labels`` (a checkpoint, say); the
            message names the file.
    """
    data = load_torch_file(path, "logits file")
    if not isinstance(data, dict) or not {"logits", "labels"} <= set(data):
        keys = sorted(map(str, data))[:8] if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"logits file {path} must hold a dict with 'logits' and 'labels', got "
                         f"{keys}")  # fmt: skip
    return data["logits"], data["labels"]


def check_logits_and_labels(logits: Tensor, labels: Tensor) -> None:
    """Raise ValueError unless logits are (N, C) floating point and finite with N >= 2 and
    C >= 2, and labels (N,) int64 in [0, C)."""
    N, C = check_class_scores(logits, "logits", min_rows=2, finite=True)
    check_labels(labels, "labels", N, C, rows_of="logits")


def _is_finite(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
