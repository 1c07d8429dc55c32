"""``python -m infonce.plot``: training curves, and the temperature pictures as subcommands."""

import argparse
import sys

from infonce.plot.curves import plot_metrics, read_metrics
from infonce.plot.temperature import (
    DEFAULT_LOGITS,
    DEFAULT_QUEUE_SIZES,
    DEFAULT_TEMPERATURES,
    plot_lower_bound,
    plot_reliability,
    plot_temperature,
    read_logits_file,
)

SUBCOMMANDS = ("curves", "temperature", "lower-bound", "reliability")
USAGE = """python -m infonce.plot [curves] RUN_OR_CSV [RUN_OR_CSV ...] [-o curves.png] [--title T]
       python -m infonce.plot temperature [--logits 1 5 7 10] [--temperatures ...] [-o FILE.png]
       python -m infonce.plot lower-bound [--queue-sizes 1024 4096 65536] [-o FILE.png]
       python -m infonce.plot reliability LOGITS.pt [--bins 15] [--fit-fraction 0.5] [-o FILE.png]
(a run folder named like a subcommand: python -m infonce.plot curves temperature)"""


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), draw, print the image path; 0 on success."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "curves"
    parser = argparse.ArgumentParser(prog=f"python -m infonce.plot {command}", usage=USAGE)
    if command == "curves":
        parser.description = "Lightning CSVLogger metrics, one subplot per metric against step."
        parser.add_argument("runs", nargs="+", metavar="RUN_OR_CSV",
                            help="a metrics.csv or a run directory")  # fmt: skip
        parser.add_argument("--title", default=None, help="figure title (default: the runs)")
    elif command == "temperature":
        parser.add_argument("--logits", type=float, nargs="+", default=list(DEFAULT_LOGITS))
        parser.add_argument("--temperatures", type=float, nargs="+",
                            default=list(DEFAULT_TEMPERATURES))  # fmt: skip
    elif command == "lower-bound":
        parser.add_argument("--queue-sizes", type=int, nargs="+",
                            default=list(DEFAULT_QUEUE_SIZES))  # fmt: skip
    else:
        parser.add_argument("logits_file", help='torch.save({"logits": (N, C), "labels": (N,)})')
        parser.add_argument("--bins", type=int, default=15)
        parser.add_argument("--fit-fraction", type=float, default=0.5,
                            help="share of rows T is fitted on; the rest are drawn")  # fmt: skip
    default = "curves.png" if command == "curves" else f"{command}.png"
    parser.add_argument("-o", "--output", default=default, help="image to write (.png, .pdf, .svg)")
    args = parser.parse_args(argv)
    try:
        if command == "curves":
            runs = {run: read_metrics(run) for run in args.runs}
            output = plot_metrics(runs, args.output, args.title)
        elif command == "temperature":
            if min(args.temperatures) <= 0:
                raise ValueError(f"--temperatures must be > 0, got {args.temperatures}")
            output = plot_temperature(args.output, args.logits, args.temperatures)
        elif command == "lower-bound":
            output = plot_lower_bound(args.output, args.queue_sizes)
        else:
            logits, labels = read_logits_file(args.logits_file)
            output, t = plot_reliability(args.output, logits, labels, args.bins, args.fit_fraction)
            print(f"fitted temperature: {t:.4f}")
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    print(output)
    return 0
