import math
import subprocess
import sys

import pytest
import torch

from infonce.plot import find_metrics_files, main, plot_metrics, read_metrics

HEADER = "epoch,step,train/acc,train/loss,train/lr,val/knn_top1\n"


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def run_dir(tmp_path):
    """A run resumed once: version_0 logged steps 0..59, crashed, version_1 resumed at 50."""
    rows0 = [f"0,{s},,{5 - s / 20:.4f},{0.03 * (1 - s / 200):.6f},\n" for s in range(60)]
    rows0 += ["0,49,0.25,,,0.31\n"]  # epoch-end row: only some cells filled
    rows1 = [f"1,{s},,{5 - s / 20:.4f},{0.03 * (1 - s / 200):.6f},\n" for s in range(50, 120)]
    rows1 += ["1,99,0.5,,,0.42\n", "2,119,0.75,,,0.55\n"]
    _write(tmp_path / "moco" / "version_0" / "metrics.csv", HEADER + "".join(rows0))
    _write(tmp_path / "moco" / "version_1" / "metrics.csv", HEADER + "".join(rows1))
    return tmp_path / "moco"


def test_read_metrics_merges_versions_by_step_and_skips_empty_cells(run_dir):
    metrics = read_metrics(run_dir)
    assert set(metrics) == {"train/acc", "train/loss", "train/lr", "val/knn_top1"}
    assert metrics["val/knn_top1"] == [(49, 0.31), (99, 0.42), (119, 0.55)]
    assert metrics["train/acc"] == [(49, 0.25), (99, 0.5), (119, 0.75)]
    steps = [step for step, _ in metrics["train/loss"]]
    assert steps == list(range(120))
    assert metrics["train/loss"][10] == (10, pytest.approx(4.5))


def test_read_metrics_drops_the_earlier_versions_points_from_the_resume_step_on(tmp_path):
    _write(tmp_path / "version_0" / "metrics.csv", "step,loss\n0,1.0\n1,2.0\n2,3.0\n3,4.0\n")
    _write(tmp_path / "version_1" / "metrics.csv", "step,loss,extra\n2,30.0,\n4,50.0,7\n")
    metrics = read_metrics(tmp_path)
    assert metrics["loss"] == [(0, 1.0), (1, 2.0), (2, 30.0), (4, 50.0)]
    assert metrics["extra"] == [(4, 7.0)]


def test_find_metrics_files_sorts_versions_numerically(tmp_path):
    for v in (10, 2, 0):
        _write(tmp_path / f"version_{v}" / "metrics.csv", "step,loss\n")
    files = find_metrics_files(tmp_path)
    assert [f.parent.name for f in files] == ["version_0", "version_2", "version_10"]


def test_read_metrics_accepts_csv_paths_in_the_given_order(run_dir):
    files = [run_dir / "version_0" / "metrics.csv", run_dir / "version_1" / "metrics.csv"]
    assert read_metrics(files) == read_metrics(run_dir)
    only_first = read_metrics(files[0])
    assert only_first["train/loss"][-1][0] == 59


def test_read_metrics_reads_what_lightning_csvlogger_writes(tmp_path):
    from lightning.fabric.loggers import CSVLogger

    for version, steps in ((0, range(0, 6)), (1, range(4, 9))):
        logger = CSVLogger(tmp_path, name="run", version=version)
        for step in steps:
            logger.log_metrics({"train/loss": 10.0 - step}, step=step)
            if step % 4 == 3:
                logger.log_metrics({"val/knn_top1": step / 10}, step=step)
        logger.finalize("success")
    metrics = read_metrics(tmp_path / "run")
    assert metrics["train/loss"] == [(s, 10.0 - s) for s in range(9)]
    assert metrics["val/knn_top1"] == [(3, 0.3), (7, 0.7)]


def test_read_metrics_reports_missing_paths_and_bad_cells(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_metrics(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no metrics.csv below"):
        read_metrics(tmp_path)
    bad = _write(tmp_path / "metrics.csv", "step,loss\n0,1.0\n1,oops\n")
    with pytest.raises(ValueError, match=r"line 3, column 'loss'.*'oops'"):
        read_metrics(bad)
    no_step = _write(tmp_path / "other" / "metrics.csv", "epoch,loss\n0,1.0\n")
    with pytest.raises(ValueError, match="no 'step' column"):
        read_metrics(no_step)


def test_cli_writes_a_png_of_the_curves(run_dir, tmp_path, capsys):
    output = tmp_path / "curves.png"
    assert main([str(run_dir), "-o", str(output), "--title", "MoCo, CIFAR-10"]) == 0
    data = output.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1024
    assert str(output) in capsys.readouterr().out


def test_cli_overlays_several_runs(run_dir, tmp_path):
    other = _write(tmp_path / "other.csv", "step,train/loss,val/knn_top1\n0,6.0,\n99,2.0,0.6\n")
    output = tmp_path / "compare.png"
    assert main([str(run_dir), str(other), "-o", str(output)]) == 0
    assert output.read_bytes()[:4] == b"\x89PNG"


def test_cli_exits_with_one_line_for_a_missing_run(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "does not exist" in err and str(tmp_path / "missing") in err


def test_plot_without_matplotlib_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "infonce\[plot\]"'):
        plot_metrics({"run": {"loss": [(0, 1.0)]}}, tmp_path / "x.png")


def test_plot_metrics_rejects_runs_without_metrics(tmp_path):
    with pytest.raises(ValueError, match="no metrics"):
        plot_metrics({"run": {}}, tmp_path / "x.png")


def test_plot_metrics_lays_out_one_subplot_per_metric(tmp_path):
    pytest.importorskip("matplotlib")
    metrics = {f"m{i}": [(s, math.sin(s + i)) for s in range(20)] for i in range(7)}
    output = plot_metrics({"run": metrics}, tmp_path / "grid.png")
    from matplotlib.image import imread

    height, width, _ = imread(output).shape
    assert width > height  # 3 columns x 3 rows at 4.8 x 3.2 inches each


def test_long_series_get_a_trailing_running_mean():
    from infonce.plot.curves import _trailing_mean

    assert _trailing_mean((1.0, 3.0, 5.0, 7.0), window=2) == [1.0, 2.0, 4.0, 6.0]
    output_values = _trailing_mean(tuple(float(i % 2) for i in range(1000)), window=20)
    assert output_values[-1] == pytest.approx(0.5)


def _png_size(path):
    from matplotlib.image import imread

    height, width, _ = imread(path).shape
    return width, height


def test_temperature_subcommand_draws_the_softmax_and_its_entropy(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    output = tmp_path / "t.png"
    args = ["temperature", "--logits", "1", "5", "7", "10", "--temperatures", "0.1", "1", "10"]
    assert main([*args, "-o", str(output)]) == 0
    assert capsys.readouterr().out.strip() == str(output)
    width, height = _png_size(output)
    assert width > 1.5 * height  # two panels side by side


def test_lower_bound_subcommand_draws_one_curve_per_queue_size(tmp_path):
    pytest.importorskip("matplotlib")
    from infonce.plot import plot_lower_bound

    output = plot_lower_bound(tmp_path / "lb.png", queue_sizes=(1024, 65536))
    assert output.stat().st_size > 10_000
    assert main(["lower-bound", "-o", str(tmp_path / "default.png")]) == 0


def test_reliability_subcommand_fits_t_on_one_half_and_draws_the_other(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 5, generator=g) * 2
    labels = torch.multinomial(torch.softmax(logits, 1), 1, generator=g)[:, 0]
    torch.save({"logits": logits * 3, "labels": labels}, tmp_path / "logits.pt")
    assert main(["reliability", str(tmp_path / "logits.pt"), "-o", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    fitted = float(out.split("fitted temperature:")[1].split()[0])
    assert fitted == pytest.approx(3.0, rel=0.1)
    assert (tmp_path / "r.png").stat().st_size > 10_000


def test_reliability_reports_a_file_without_logits(tmp_path, capsys):
    torch.save({"scores": torch.zeros(2, 2)}, tmp_path / "bad.pt")
    assert main(["reliability", str(tmp_path / "bad.pt"), "-o", str(tmp_path / "r.png")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "must hold a dict with 'logits' and 'labels', got ['scores']" in err


def test_curves_subcommand_is_the_default_and_can_be_named(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    assert main(["curves", str(run_dir), "-o", str(tmp_path / "a.png")]) == 0
    assert main([str(run_dir), "-o", str(tmp_path / "b.png")]) == 0
    assert _png_size(tmp_path / "a.png") == _png_size(tmp_path / "b.png")


def test_python_dash_m_runs_the_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "infonce.plot", "lower-bound", "-o", str(tmp_path / "x.png")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.png").exists()
