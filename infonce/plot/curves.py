"""Training curves from Lightning ``CSVLogger`` files, one subplot per metric.

Usage::

    python -m infonce.plot runs/cpu_quick -o curves.png
    python -m infonce.plot runs/t0.07 runs/t0.2 -o compare.png

Each argument is one run: a ``metrics.csv`` or a directory, whose ``**/metrics.csv`` files
(``version_0``, ``version_1`` of a resumed run, ...) are merged by step. Several runs are drawn
on the same axes with a legend. Reading uses only the standard library; drawing needs
matplotlib (``pip install "infonce[plot]"``), imported only when a figure is drawn.
"""

import csv
import math
import re
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

from infonce.plot._figure import new_figure

Metrics = dict[str, list[tuple[int, float]]]
_NOT_METRICS = frozenset({"step", "epoch"})
_SMOOTH_ABOVE = 200  # series longer than this also get a running mean


def find_metrics_files(path: str | PathLike) -> list[Path]:
    """The ``metrics.csv`` files of one run, in version order.

    Args:
        path: a ``metrics.csv`` file, or a directory searched recursively for them.

    Returns:
        ``[path]`` for a file; for a directory, every ``metrics.csv`` below it in natural
        order of their paths, so ``version_2`` comes before ``version_10``.

    Raises:
        FileNotFoundError: ``path`` does not exist, or a directory holds no ``metrics.csv``.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"path {str(path)!r} does not exist")
    files = sorted(path.rglob("metrics.csv"), key=_natural_key)
    if not files:
        raise FileNotFoundError(f"no metrics.csv below directory {str(path)!r}")
    return files


def _natural_key(path: Path) -> tuple:
    # re.split with a group alternates text and digits, so the tuples compare element-wise
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix()))


def read_metrics(paths: str | PathLike | Iterable[str | PathLike]) -> Metrics:
    """Read the metrics of one run, merging its ``metrics.csv`` files by step.

    Files are read in order (the given order; within a directory, by version). A resumed run
    restarts logging at its checkpoint's step, so a later file supersedes an earlier one from
    its first step on: the earlier file's points at or after that step are dropped (they
    belong to the abandoned attempt). Empty cells (metrics not logged on that row) are
    skipped; the ``step`` and ``epoch`` columns are not metrics.

    Args:
        paths: one path or several; each a ``metrics.csv`` or a directory (see
            :func:`find_metrics_files`).

    Returns:
        ``{metric name: [(step, value), ...]}`` with steps increasing; a metric logged twice at
        one step keeps the last value.

    Raises:
        FileNotFoundError: a path does not exist or a directory holds no ``metrics.csv``.
        ValueError: a file has no ``step`` column, or a cell that is not a number.
    """
    if isinstance(paths, str | PathLike):
        paths = [paths]
    merged: dict[str, dict[int, float]] = {}
    for file in (f for p in paths for f in find_metrics_files(p)):
        rows = _read_file(file)
        if rows:
            first = min(step for step, _, _ in rows)
            for points in merged.values():
                for step in [s for s in points if s >= first]:
                    del points[step]
        for step, name, value in rows:
            merged.setdefault(name, {})[step] = value
    return {name: sorted(points.items()) for name, points in merged.items() if points}


def _read_file(file: Path) -> list[tuple[int, str, float]]:
    """(step, metric, value) for every non-empty metric cell of one CSVLogger file."""
    with file.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:  # empty file
            return []
        if "step" not in reader.fieldnames:
            raise ValueError(f"{file} has no 'step' column, got columns {reader.fieldnames}")
        names = [n for n in reader.fieldnames if n not in _NOT_METRICS]
        rows = []
        for row in reader:
            if not row["step"]:
                continue
            step = int(float(row["step"]))
            for name in names:
                cell = row.get(name)
                if not cell:
                    continue
                try:
                    rows.append((step, name, float(cell)))
                except ValueError:
                    raise ValueError(
                        f"{file}, line {reader.line_num}, column {name!r}: "
                        f"expected a number, got {cell!r}"
                    ) from None
    return rows


def plot_metrics(runs: dict[str, Metrics], output: str | PathLike, title: str | None = None):
    """Draw one subplot per metric (x = step) in a grid and save it as an image.

    Args:
        runs: ``{run label: metrics}``, metrics as :func:`read_metrics` returns them. With
            more than one run, each subplot holds one line (and legend entry) per run. Series
            of more than 200 points are drawn faintly with a bold trailing running mean over
            2% of their length.
        output: image path; the format follows its suffix (``.png``, ``.pdf``, ``.svg``).
        title: figure title; defaults to the run labels.

    Returns:
        ``output`` as a :class:`~pathlib.Path`.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
        ValueError: no run holds any metric.
    """
    names = sorted({name for metrics in runs.values() for name in metrics})
    if not names:
        raise ValueError(f"runs hold no metrics: {list(runs)}")
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = new_figure(figsize=(4.8 * ncols, 3.2 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        for i, (label, metrics) in enumerate(runs.items()):
            points = metrics.get(name, [])
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            color = f"C{i}"  # one colour per run across subplots
            if len(points) > _SMOOTH_ABOVE:  # noisy per-step metric: faint raw, bold mean
                ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
                values = _trailing_mean(values, window=max(2, len(values) // 50))
            marker = "o" if len(points) <= 50 else None  # e.g. once-per-epoch validation
            ax.plot(steps, values, label=label, color=color, marker=marker, markersize=3)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize="small")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(title if title is not None else ", ".join(runs))
    output = Path(output)
    fig.savefig(output, dpi=110)
    return output


def _trailing_mean(values: tuple[float, ...], window: int) -> list[float]:
    """Mean of each value and the ``window - 1`` before it (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
