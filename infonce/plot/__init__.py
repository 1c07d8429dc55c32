"""Pictures, drawn with matplotlib (``pip install "infonce[plot]"``, imported only to draw).

``python -m infonce.plot`` draws the training curves of runs (:mod:`infonce.plot.curves`) and,
as subcommands, what a temperature does (:mod:`infonce.plot.temperature`): ``temperature``,
``lower-bound`` and ``reliability``. Run it with ``--help`` for the usage.
"""

from infonce.plot.cli import main
from infonce.plot.curves import find_metrics_files, plot_metrics, read_metrics
from infonce.plot.temperature import (
    plot_lower_bound,
    plot_reliability,
    plot_temperature,
    read_logits_file,
)

__all__ = [
    "find_metrics_files",
    "main",
    "plot_lower_bound",
    "plot_metrics",
    "plot_reliability",
    "plot_temperature",
    "read_logits_file",
    "read_metrics",
]
