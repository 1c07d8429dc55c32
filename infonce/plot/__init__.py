"""Pictures, drawn with matplotlib (``pip install "infonce[plot]"``, imported only to draw).

``python -m infonce.plot`` draws the training curves of runs (:mod:`infonce.plot.curves`) and,
as subcommands, what a temperature does (:mod:`infonce.plot.temperature`): ``temperature``,
``lower-bound`` and ``reliability``. Run it with ``--help`` for the usage, the output rule
(:mod:`infonce.plot._figure`) and which logs of a run folder are drawn
(:mod:`infonce.plot.curves`).
"""

from infonce.plot.cli import main
from infonce.plot.curves import (
    find_metrics_files,
    is_evaluation_log,
    non_finite_counts,
    plot_metrics,
    read_metrics,
    read_run,
    split_logs,
)
from infonce.plot.temperature import (
    check_logits_and_labels,
    plot_lower_bound,
    plot_reliability,
    plot_temperature,
    read_logits_file,
)

# the union of the __all__ of cli, curves and temperature (tests/test_layout.py checks it)
__all__ = [
    "check_logits_and_labels",
    "find_metrics_files",
    "is_evaluation_log",
    "main",
    "non_finite_counts",
    "plot_lower_bound",
    "plot_metrics",
    "plot_reliability",
    "plot_temperature",
    "read_logits_file",
    "read_metrics",
    "read_run",
    "split_logs",
]
