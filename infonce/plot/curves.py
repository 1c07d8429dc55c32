"""Training curves from Lightning ``CSVLogger`` files, one subplot per metric.

Usage::

    python -m infonce.plot runs/cpu_quick/logs -o curves.png
    python -m infonce.plot runs/t0.07 runs/t0.2 -o compare.png

Each argument is one run: a ``metrics.csv`` or a directory, whose ``**/metrics.csv`` files
(``version_0``, ``version_1`` of a resumed run, ...) are merged by step. Several runs are drawn
on the same axes with a legend. Reading uses only the standard library; drawing needs
matplotlib (``pip install "infonce[plot]"``), imported only when a figure is drawn.

Which logs of a run folder are drawn: every command on a run (``fit``, a resumed ``fit``,
``validate``, ``test``) writes its own ``logs/version_N``. A resumed fit logs from its
checkpoint's step on and supersedes the abandoned attempt's points from there. An evaluation
command is different: Lightning 2.6 logs its metrics at step 0 and epoch 0 whatever the step of
the checkpoint it evaluated (it does not restore the loop counters), so merged by step it would
wipe out the training curves and put its values at the wrong step. Such a log is recognised
(:func:`is_evaluation_log`) and left out of the curves of a run that has training logs; the
command prints which (``not drawn: ...``). The step of the checkpoint it evaluated is not in the
log, so it is not drawn elsewhere either; plotting that ``version_N`` by itself draws it.
"""

import csv
import math
import re
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

from infonce._files import UnreadableFileError
from infonce.plot._figure import check_output, new_figure, save

__all__ = [
    "find_metrics_files",
    "is_evaluation_log",
    "non_finite_counts",
    "plot_metrics",
    "read_metrics",
    "read_run",
    "split_logs",
]

Metrics = dict[str, list[tuple[int, float]]]
_NOT_METRICS = frozenset({"step", "epoch"})
_SMOOTH_ABOVE = 200  # series longer than this also get a running mean
# Top-level keys of LightningCLI's config.yaml that only evaluation commands have: arguments of
# Trainer.validate / test (verbose) and Trainer.predict (return_predictions), not of fit.
_EVALUATION_ARGUMENTS = frozenset({"verbose", "return_predictions"})
_EVALUATION_NAME = re.compile(r"(val|valid|validation|test|predict)([/_.\-]|$)", re.IGNORECASE)


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
        raise FileNotFoundError(f"run {path} does not exist (give a run folder or a metrics.csv)")
    files = sorted(path.rglob("metrics.csv"), key=_natural_key)
    if not files:
        raise FileNotFoundError(f"no metrics.csv below directory {path}")
    return files


def _natural_key(path: Path) -> tuple:
    # re.split with a group alternates text and digits, so the tuples compare element-wise
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix()))


def is_evaluation_log(file: str | PathLike) -> bool:
    """Whether a ``metrics.csv`` was written by an evaluation command (validate, test, predict)
    rather than by a fit.

    The ``config.yaml`` LightningCLI writes beside every command's ``metrics.csv`` decides when
    it is there: an evaluation's has the ``verbose`` (validate, test) or ``return_predictions``
    (predict) argument, which ``fit`` does not take. Without it (a plain ``CSVLogger``), a file
    is an evaluation's when every metric it logged is named as one: ``val``, ``valid``,
    ``validation``, ``test`` or ``predict``, then ``/``, ``_``, ``.``, ``-`` or the end
    (``val/knn_top1``, ``test_acc``); a fit logs its training steps under other names.
    """
    file = Path(file)
    config = file.with_name("config.yaml")
    if file.name == "metrics.csv" and config.is_file():
        try:
            text = config.read_text(errors="replace")
        except OSError:
            text = None
        if text is not None:
            keys = set(re.findall(r"^([A-Za-z_]\w*):", text, flags=re.MULTILINE))
            return bool(keys & _EVALUATION_ARGUMENTS)
    names = [n for n in _header(file) if n not in _NOT_METRICS]
    return bool(names) and all(_EVALUATION_NAME.match(n) for n in names)


def _header(file: Path) -> list[str]:
    """The column names of a CSV file; none if it cannot be read (reading it says why)."""
    try:
        with file.open(newline="") as f:
            return next(csv.reader(f), [])
    except (OSError, ValueError, csv.Error):
        return []


def split_logs(paths: str | PathLike | Iterable[str | PathLike]) -> tuple[list[Path], list[Path]]:
    """The ``metrics.csv`` files of one run: those drawn, and the evaluation logs left out.

    Args:
        paths: one path or several; each a ``metrics.csv`` or a directory (see
            :func:`find_metrics_files`), in the order given.

    Returns:
        ``(drawn, left_out)``: ``left_out`` holds the evaluation logs
        (:func:`is_evaluation_log`) of a run that also has training logs; a run of evaluation
        logs only is drawn whole.

    Raises:
        FileNotFoundError: as :func:`find_metrics_files`.
    """
    drawn, left_out, _ = _split(paths)
    return drawn, left_out


def _split(paths) -> tuple[list[Path], list[Path], bool]:
    """:func:`split_logs`, and whether the files drawn are training logs (else evaluation
    logs only, read whole)."""
    if isinstance(paths, str | PathLike):
        paths = [paths]
    files = [f for p in paths for f in find_metrics_files(p)]
    evaluations = [f for f in files if is_evaluation_log(f)]
    if len(evaluations) == len(files):
        return files, [], False
    return [f for f in files if f not in evaluations], evaluations, True


def read_metrics(paths: str | PathLike | Iterable[str | PathLike]) -> Metrics:
    """The metrics of one run: ``read_run(paths)[0]`` (see :func:`read_run`).

    Raises:
        FileNotFoundError, UnreadableFileError, ValueError: as :func:`read_run`.
    """
    return read_run(paths)[0]


def read_run(paths: str | PathLike | Iterable[str | PathLike]) -> tuple[Metrics, list[Path]]:
    """Read the metrics of one run, merging its ``metrics.csv`` files by step, and say which
    logs were left out.

    Files are read in order (the given order; within a directory, by version). A resumed run
    restarts logging at its checkpoint's step, so a later file supersedes an earlier one from
    its first step on: the earlier file's points at or after that step are dropped (they
    belong to the abandoned attempt). Evaluation logs (``validate``, ``test``: see
    :func:`is_evaluation_log`) are left out of a run that has training logs, since Lightning
    logs them at step 0; a run of evaluation logs only is read whole, without superseding.
    Empty cells (metrics not logged on that row) are skipped; the ``step`` and ``epoch``
    columns are not metrics. Values are kept as logged, NaN and inf included.

    Args:
        paths: one path or several; each a ``metrics.csv`` or a directory (see
            :func:`find_metrics_files`).

    Returns:
        ``(metrics, left_out)``: ``{metric name: [(step, value), ...]}`` with steps
        increasing (a metric logged twice at one step keeps the last value), and the
        evaluation logs left out, as :func:`split_logs` returns them.

    Raises:
        FileNotFoundError: a path does not exist or a directory holds no ``metrics.csv``.
        UnreadableFileError: (a ValueError) a file that is not a text CSV file.
        ValueError: a file has no ``step`` column, or a cell that is not a number.
    """
    files, left_out, supersede = _split(paths)  # evaluation logs only: no superseding
    merged: dict[str, dict[int, float]] = {}
    for file in files:
        rows = _read_file(file)
        if rows and supersede:
            first = min(step for step, _, _ in rows)
            for points in merged.values():
                for step in [s for s in points if s >= first]:
                    del points[step]
        for step, name, value in rows:
            merged.setdefault(name, {})[step] = value
    metrics = {name: sorted(points.items()) for name, points in merged.items() if points}
    return metrics, left_out


def _read_file(file: Path) -> list[tuple[int, str, float]]:
    """(step, metric, value) for every non-empty metric cell of one CSVLogger file."""
    try:
        with file.open(newline="") as f:
            return _read_rows(csv.DictReader(f), file)
    except UnicodeDecodeError:
        raise UnreadableFileError(f"{file} is not a text CSV file (undecodable bytes)") from None
    except csv.Error as err:
        raise UnreadableFileError(f"{file} is not a CSV file ({err})") from None
    except OSError as err:
        raise UnreadableFileError(f"cannot read {file}: {err.strerror or err}") from None


def _read_rows(reader: csv.DictReader, file: Path) -> list[tuple[int, str, float]]:
    if reader.fieldnames is None:  # empty file
        return []
    if "step" not in reader.fieldnames:
        shown = reader.fieldnames[:8]
        raise ValueError(f"{file} has no 'step' column, got columns {shown} (not a "
                         "Lightning CSVLogger metrics.csv?)")  # fmt: skip
    names = [n for n in reader.fieldnames if n not in _NOT_METRICS]
    rows = []
    for row in reader:
        if not row["step"]:
            continue
        try:
            step = int(float(row["step"]))
        except (ValueError, OverflowError):
            raise ValueError(f"{file}, line {reader.line_num}, column 'step': expected a step "
                             f"number, got {row['step']!r}") from None  # fmt: skip
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


def non_finite_counts(metrics: Metrics) -> dict[str, tuple[int, int]]:
    """``{metric: (NaN or inf values, values)}`` for each metric that has a NaN or inf."""
    counts = {}
    for name, points in metrics.items():
        bad = sum(not math.isfinite(v) for _, v in points)
        if bad:
            counts[name] = (bad, len(points))
    return counts


def plot_metrics(runs: dict[str, Metrics], output: str | PathLike, title: str | None = None):
    """Draw one subplot per metric (x = step) in a grid and save it as an image.

    Only finite values are drawn: NaN and inf points are left out (a metric with no finite
    value gets no subplot; :func:`non_finite_counts` says which).

    Args:
        runs: ``{run label: metrics}``, metrics as :func:`read_metrics` returns them. With
            more than one run, each subplot holds one line (and legend entry) per run. Series
            of more than 200 points are drawn faintly with a bold trailing running mean over
            2% of their length.
        output: image path; the format follows its suffix (``.png``, ``.pdf``, ``.svg``; see
            :mod:`infonce.plot._figure` for the rule), written atomically.
        title: figure title; defaults to the run labels.

    Returns:
        ``output`` as a :class:`~pathlib.Path`.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
        ValueError: a run holds no finite metric value; ``output`` has no image suffix.
        IsADirectoryError: ``output`` is a directory.
        OSError: ``output`` cannot be written.
    """
    output = check_output(output)
    runs = {
        label: {n: [(s, v) for s, v in points if math.isfinite(v)] for n, points in m.items()}
        for label, m in runs.items()
    }
    if not runs:
        raise ValueError("no runs to draw")
    for label, metrics in runs.items():
        if not any(metrics.values()):
            raise ValueError(f"run {label} holds no metrics to draw (no finite value in its "
                             "metrics.csv files)")  # fmt: skip
    names = sorted({name for metrics in runs.values() for name, pts in metrics.items() if pts})
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
    return save(fig, output)


def _trailing_mean(values: tuple[float, ...], window: int) -> list[float]:
    """Mean of each value and the ``window - 1`` before it (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
