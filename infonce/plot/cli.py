"""``python -m infonce.plot``: training curves, and the temperature pictures as subcommands."""

import argparse
import math
import sys

from infonce.plot._figure import OutputError
from infonce.plot.curves import non_finite_counts, plot_metrics, read_run
from infonce.plot.temperature import (
    DEFAULT_LOGITS,
    DEFAULT_QUEUE_SIZES,
    DEFAULT_TEMPERATURES,
    plot_lower_bound,
    plot_reliability,
    plot_temperature,
    read_logits_file,
)

__all__ = ["main"]

SUBCOMMANDS = ("curves", "temperature", "lower-bound", "reliability")
USAGE = """python -m infonce.plot [curves] RUN_OR_CSV [RUN_OR_CSV ...] [-o curves.png] [--title T]
       python -m infonce.plot temperature [--logits 1 5 7 10] [--temperatures ...] [-o FILE.png]
       python -m infonce.plot lower-bound [--queue-sizes 1024 4096 65536] [-o FILE.png]
       python -m infonce.plot reliability LOGITS.pt [--bins 15] [--fit-fraction 0.5] [-o FILE.png]
(a run folder named like a subcommand: python -m infonce.plot curves temperature)"""
EPILOG = """output: -o must end in an image suffix matplotlib writes (.png, .pdf, .svg, .jpg, ...;
the format follows it), so the path printed is exactly the file written; a name without one,
or an existing directory, is refused. Missing parent folders are created; an existing image is
replaced, atomically.

exit status: 0 drawn (the image path is printed on stdout, notes on stderr); 1 an input or
output that cannot be used (one line on stderr, "error: ..." naming the file); 2 a malformed
command line or an option value out of range (argparse's usage and message)."""
CURVES = """Lightning CSVLogger metrics, one subplot per metric against step. A run folder draws
its training curves (fit, and resumed fits, which supersede the abandoned attempt's points from
their first step on). Logs of evaluation commands (validate, test, predict: recognised by the
config.yaml LightningCLI writes beside them, else by metric names that all start with val, test
or predict) are left out and listed in a note: Lightning logs them at step 0, not at the step
of the checkpoint they evaluated. A folder or metrics.csv holding only such logs draws them.
NaN and inf values are not drawn (a note says how many); a metric with no finite value is left
out, and a run with none is refused."""


def _number(text: str, kind: type, accept, expected: str):
    """``kind(text)`` if ``accept`` takes it, else argparse's error (exit 2) saying what was
    expected."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "an integer >= 1")


def _finite_float(text: str) -> float:
    return _number(text, float, math.isfinite, "a finite number")


def _positive_float(text: str) -> float:
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def _fraction(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), draw, print the image path.

    Returns 0 on success and 1 when an input or the output cannot be used (one line
    ``error: ...`` on stderr); a malformed command line exits with status 2 (argparse).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "curves"
    parser = argparse.ArgumentParser(
        prog=f"python -m infonce.plot {command}",
        usage=USAGE,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if command == "curves":
        parser.description = CURVES
        parser.add_argument("runs", nargs="+", metavar="RUN_OR_CSV",
                            help="a metrics.csv or a run directory")  # fmt: skip
        parser.add_argument("--title", default=None, help="figure title (default: the runs)")
    elif command == "temperature":
        parser.description = "softmax(logits / T) for each T, and its entropy against T."
        parser.add_argument("--logits", type=_finite_float, nargs="+", default=list(DEFAULT_LOGITS),
                            help="at least 2 finite numbers")  # fmt: skip
        parser.add_argument("--temperatures", type=_positive_float, nargs="+",
                            default=list(DEFAULT_TEMPERATURES), help="numbers > 0")  # fmt: skip
    elif command == "lower-bound":
        parser.description = "InfoNCE of a perfectly separated batch against T, per queue size."
        parser.add_argument("--queue-sizes", type=_positive_int, nargs="+",
                            default=list(DEFAULT_QUEUE_SIZES), help="integers >= 1")  # fmt: skip
    else:
        parser.description = (
            "Reliability diagrams of a classifier's logits before and after temperature "
            "scaling: T is fitted on a random --fit-fraction of the rows, both diagrams are "
            "drawn on the rest (each part needs at least one row)."
        )
        parser.add_argument("logits_file", help='torch.save({"logits": (N, C), "labels": (N,)})')
        parser.add_argument("--bins", type=_positive_int, default=15, help="an integer >= 1")
        parser.add_argument("--fit-fraction", type=_fraction, default=0.5,
                            help="share of rows T is fitted on; the rest are drawn")  # fmt: skip
    default = "curves.png" if command == "curves" else f"{command}.png"
    parser.add_argument("-o", "--output", default=default,
                        help="image to write (.png, .pdf, .svg, ...: see below)")  # fmt: skip
    args = parser.parse_args(argv)
    if command == "temperature" and len(args.logits) < 2:
        parser.error(f"argument --logits: expected at least 2 values, got {args.logits}")
    try:  # the drawing function checks the output, once
        if command == "curves":
            output = _curves(args.runs, args.output, args.title)
        elif command == "temperature":
            output = plot_temperature(args.output, args.logits, args.temperatures)
        elif command == "lower-bound":
            output = plot_lower_bound(args.output, args.queue_sizes)
        else:
            logits, labels = read_logits_file(args.logits_file)
            try:
                output, t = plot_reliability(
                    args.output, logits, labels, args.bins, args.fit_fraction
                )
            except OutputError:
                raise
            except ValueError as e:  # what this file's tensors or rows cannot give
                raise ValueError(f"logits file {args.logits_file}: {e}") from None
            print(f"fitted temperature: {t:.4f}")
    except (ImportError, OSError, ValueError) as e:  # every message names the file
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(output)
    return 0


def _curves(paths: list[str], output: str, title: str | None):
    """Read each run and draw; then print, as notes on stderr, what was not drawn."""
    runs, notes = {}, []
    for path in paths:
        runs[path], left_out = read_run(path)
        notes += [
            f"not drawn: {file} (an evaluation's log: validate and test log at step 0, not at "
            "the step of the checkpoint they evaluated)"
            for file in left_out
        ]
        for name, (bad, total) in non_finite_counts(runs[path]).items():
            if bad == total:
                notes.append(f"not drawn: {name} of {path}: all {total} values are NaN or inf")
            else:
                notes.append(f"{name} of {path}: {bad} of {total} values are NaN or inf, not drawn")
    written = plot_metrics(runs, output, title)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return written
