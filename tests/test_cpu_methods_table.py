"""benchmarks/cpu_methods.py's table: every seed's final evaluation, mean and sample std."""

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cpu_methods  # noqa: E402


def row(method, seed, knn, linear, wall):
    return {"method": method, "seed": seed, "max_epochs": 12, "steps": 2340,
            "knn_top1": [(1169, 50.0), (2339, knn)], "linear_top1": [(2339, linear)],
            "wall_min": wall}  # fmt: skip


def test_the_table_reports_the_last_evaluation_of_each_seed_as_mean_and_sample_std():
    results = {f"s{i}": row("supcon", i, knn, 70.0 + i, 9.0 + i / 10)
               for i, knn in enumerate([73.0, 74.0, 78.0])}  # fmt: skip
    results["one"] = row("simclr", 0, 55.5, 50.25, 8.0)
    lines = cpu_methods.table(results).splitlines()
    (supcon,) = [line for line in lines if line.startswith("| supcon ")]
    assert f"{statistics.fmean([73, 74, 78]):.2f} ± {statistics.stdev([73, 74, 78]):.2f}%" in supcon
    assert "| 0, 1, 2 |" in supcon and "71.00 ± 1.00%" in supcon and "9.0-9.2 min" in supcon
    (simclr,) = [line for line in lines if line.startswith("| simclr ")]
    assert "55.50% (1 seed)" in simclr and "| 8.0 min |" in simclr  # no spread from one value
    assert not any(line.startswith("| moco_v3 ") for line in lines)  # not run: no row


@pytest.mark.parametrize("method", list(cpu_methods.CONFIGS))
def test_each_method_runs_its_cpu_config_with_the_seed(method, tmp_path):
    argv = cpu_methods.command(method, 2, tmp_path / "data", tmp_path / "run", ["--x", "1"])
    config = argv[argv.index("--config") + 1]
    assert Path(config).is_file() and Path(config).name == cpu_methods.CONFIGS[method]
    assert argv[argv.index("--seed_everything") + 1] == "2" and argv[-2:] == ["--x", "1"]
