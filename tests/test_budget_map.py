"""benchmarks/budget_map.py: each variant's command; the table's seeds, means and differences."""

import statistics
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import budget_map  # noqa: E402


def row(variant, seed, knn, linear, wall):
    return {"variant": variant, "seed": seed, "epochs": 12, "steps": 2340,
            "knn_top1": [(1169, 50.0), (2339, knn)], "linear_top1": [(2339, linear)],
            "wall_min": wall}  # fmt: skip


def test_the_table_reports_each_variants_last_evaluations_and_the_difference_to_its_reference():
    results = {f"b{i}": row("base", i, knn, 50.0, 9.0) for i, knn in enumerate([55.0, 56.0])}
    results |= {f"w{i}": row("wide", i, knn, 70.0 + i, 9.0 + i / 10)
                for i, knn in enumerate([73.0, 74.0, 78.0])}  # fmt: skip
    results |= {"m": row("moco_v2_e18", 0, 54.0, 49.0, 8.0), "s": row("supcon", 0, 66.5, 65.0, 7.0)}
    lines = budget_map.table(results).splitlines()
    (base,) = [line for line in lines if line.startswith("| base |")]
    assert "55.50 ± 0.71%" in base and "| 0, 1 |" in base and "vs" not in base
    (wide,) = [line for line in lines if "(64, 128, 256)" in line]
    assert f"{statistics.fmean([73, 74, 78]):.2f} ± {statistics.stdev([73, 74, 78]):.2f}%" in wide
    assert "| +19.50 vs base |" in wide and "71.00 ± 1.00%" in wide and "9.0-9.2 min" in wide
    (supcon,) = [line for line in lines if "SupCon" in line]
    assert "66.50% (1 seed)" in supcon and "| +12.50 vs moco_v2_e18 |" in supcon
    assert not any("SimCLR" in line for line in lines)  # not run: no row
    del results["m"]  # a reference without a result: no difference
    (supcon,) = [line for line in budget_map.table(results).splitlines() if "SupCon" in line]
    assert "| 66.50% (1 seed) |  |" in supcon


@pytest.mark.parametrize("name", list(budget_map.VARIANTS))
def test_each_variant_runs_its_config_with_the_seed_and_evaluates_its_middle_and_last_epoch(
    name, tmp_path
):
    variant = budget_map.VARIANTS[name]
    argv = budget_map.command(name, 2, tmp_path / "data", tmp_path / "run")
    config = Path(argv[argv.index("--config") + 1])
    assert config.is_file() and config.name == variant.config
    assert argv[argv.index("--seed_everything") + 1] == "2"
    assert variant.epochs % 2 == 0 and variant.reference in budget_map.VARIANTS
    epochs = int(argv[argv.index("--trainer.max_epochs") + 1])
    middle = int(argv[argv.index("--trainer.check_val_every_n_epoch") + 1])
    assert epochs == variant.epochs == 2 * middle
    assert all(arg in argv for arg in variant.args)


def test_the_base_variant_is_cpu_quick_as_it_is():
    base = budget_map.VARIANTS[budget_map.BASE]
    config = yaml.safe_load((budget_map.REPO / "configs" / base.config).read_text())
    assert base.args == () and base.epochs == config["trainer"]["max_epochs"]
