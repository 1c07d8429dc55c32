"""python -m infonce.plot on what it cannot draw honestly: one line naming the input and exit
status 1; option values out of range are argparse's errors (status 2); the path printed is
exactly the file written."""

import errno
import math
import os
import subprocess
import sys

import pytest
import torch
from test_export import moco_checkpoint
from test_export_errors import BAD_KINDS, assert_one_line_error, bad_file

from infonce.plot import main, plot_lower_bound, plot_metrics, plot_reliability, plot_temperature

pytest.importorskip("matplotlib")


def _logits_file(path, n=40, c=4, seed=0, **replace):
    g = torch.Generator().manual_seed(seed)
    data = {
        "logits": torch.randn(n, c, generator=g),
        "labels": torch.randint(0, c, (n,), generator=g),
    }
    data.update(replace)
    torch.save(data, path)
    return path


def _csv(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_curves_refuse_each_kind_of_bad_input_in_one_line_naming_it(tmp_path, kind, capsys):
    path = bad_file(tmp_path, kind)
    output = tmp_path / "curves.png"
    assert main([str(path), "-o", str(output)]) == 1
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, path)
    assert captured.out == ""
    assert not output.exists()


@pytest.mark.parametrize("kind", [*BAD_KINDS, "checkpoint"])
def test_reliability_refuses_each_kind_of_bad_file_in_one_line_naming_it(tmp_path, kind, capsys):
    if kind == "checkpoint":
        path = tmp_path / "last.ckpt"
        moco_checkpoint(path, backbone="convnet")
    else:
        path = bad_file(tmp_path, kind)
    output = tmp_path / "r.png"
    assert main(["reliability", str(path), "-o", str(output)]) == 1
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, path)
    assert captured.out == ""
    assert not output.exists()


@pytest.mark.parametrize(
    "replace, args, message",
    [
        ({"logits": torch.full((40, 4), math.nan)}, [], "logits must be finite"),
        ({"logits": torch.tensor([[0.0, math.inf]] * 40)}, [], "logits must be finite"),
        ({"logits": torch.zeros(40)}, [], "logits must have 2 dimensions, got shape (40,)"),
        ({"logits": torch.zeros(40, 4, dtype=torch.long)}, [], "dtype torch.int64"),
        ({"logits": torch.zeros(1, 4), "labels": torch.zeros(1, dtype=torch.long)}, [], "N >= 2"),
        ({"logits": torch.zeros(40, 1), "labels": torch.zeros(40, dtype=torch.long)}, [], "C >= 2"),
        ({"labels": torch.zeros(30, dtype=torch.long)}, [], "shape (40,)"),
        ({"labels": torch.zeros(40, dtype=torch.int32)}, [], "int64"),
        ({"labels": torch.full((40,), 4)}, [], "must lie in [0, 4)"),
        ({"labels": torch.full((40,), -1)}, [], "must lie in [0, 4)"),
        ({"logits": torch.randn(3, 4), "labels": torch.zeros(3, dtype=torch.long)},
         ["--fit-fraction", "0.1"], "leave 0 to fit T on and 3 to draw"),
        ({"logits": torch.randn(3, 4), "labels": torch.zeros(3, dtype=torch.long)},
         ["--fit-fraction", "0.9"], "leave 3 to fit T on and 0 to draw"),
    ],
)  # fmt: skip
def test_reliability_refuses_logits_it_cannot_draw_honestly(
    tmp_path, replace, args, message, capsys
):
    path = _logits_file(tmp_path / "logits.pt", **replace)
    output = tmp_path / "r.png"
    assert main(["reliability", str(path), *args, "-o", str(output)]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err, path)
    assert message in err
    assert not output.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["reliability", "x.pt", "--bins", "0"], "--bins: expected an integer >= 1, got '0'"),
        (["reliability", "x.pt", "--fit-fraction", "1"], "--fit-fraction: expected a number"),
        (["temperature", "--temperatures", "1", "0"], "--temperatures: expected a finite number"),
        (["temperature", "--temperatures", "nan"], "--temperatures: expected a finite number"),
        (["temperature", "--logits", "1", "inf"], "--logits: expected a finite number, got 'inf'"),
        (["temperature", "--logits", "3"], "--logits: expected at least 2 values"),
        (["lower-bound", "--queue-sizes", "0"], "--queue-sizes: expected an integer >= 1"),
    ],
)  # fmt: skip
def test_option_values_out_of_range_are_usage_errors(tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as info:
        main([*args, "-o", str(tmp_path / "x.png")])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_the_library_functions_refuse_the_same_values(tmp_path):
    with pytest.raises(ValueError, match="temperatures must be finite numbers > 0"):
        plot_temperature(tmp_path / "t.png", temperatures=[1.0, -1.0])
    with pytest.raises(ValueError, match="at least 2 finite numbers"):
        plot_temperature(tmp_path / "t.png", logits=[1.0])
    with pytest.raises(ValueError, match="queue sizes must be integers >= 1"):
        plot_lower_bound(tmp_path / "lb.png", queue_sizes=[0])
    logits, labels = torch.randn(10, 3), torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="n_bins must be an integer >= 1"):
        plot_reliability(tmp_path / "r.png", logits, labels, n_bins=0)
    with pytest.raises(ValueError, match="labels must be an int64 tensor of shape"):
        plot_reliability(tmp_path / "r.png", logits, labels[:5])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["curves", "curves.ckpt", "logits.pt"])
def test_an_output_without_an_image_suffix_is_refused_listing_the_suffixes(tmp_path, name, capsys):
    output = tmp_path / name
    assert main(["lower-bound", "-o", str(output)]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err, output)
    assert ".png" in err and ".pdf" in err and ".svg" in err
    assert list(tmp_path.iterdir()) == []  # no curves.png beside it either


def test_reliability_names_a_bad_output_as_the_output_and_checks_the_logits_once(
    tmp_path, monkeypatch, capsys
):
    import infonce.plot.temperature as temperature

    labels = torch.arange(40) % 4
    logits = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    logits[torch.arange(40), labels] += 2.0  # informative: T is fitted inside its bounds
    path = _logits_file(tmp_path / "logits.pt", logits=logits, labels=labels)
    output = tmp_path / "r.ckpt"
    assert main(["reliability", str(path), "-o", str(output)]) == 1
    assert capsys.readouterr().err.startswith(f"error: output {output} ends in '.ckpt'")
    checks = []
    original = temperature.check_logits_and_labels
    monkeypatch.setattr(temperature, "check_logits_and_labels",
                        lambda *args: checks.append(args) or original(*args))  # fmt: skip
    assert main(["reliability", str(path), "-o", str(tmp_path / "r.png")]) == 0
    assert len(checks) == 1


def test_an_existing_directory_as_output_is_refused(tmp_path, capsys):
    (tmp_path / "figures.png").mkdir()
    assert main(["lower-bound", "-o", str(tmp_path / "figures.png")]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err, tmp_path / "figures.png")
    assert "is a directory" in err


@pytest.mark.parametrize("suffix", [".png", ".PDF", ".svg"])
def test_the_printed_path_is_the_file_written_and_missing_folders_are_created(
    tmp_path, suffix, capsys
):
    output = tmp_path / "new" / "folder" / f"lb{suffix}"
    assert main(["lower-bound", "-o", str(output)]) == 0
    assert capsys.readouterr().out == f"{output}\n"
    assert [p.name for p in output.parent.iterdir()] == [output.name]
    magic = {".png": b"\x89PNG", ".PDF": b"%PDF", ".svg": b"<?xm"}[suffix]
    assert output.read_bytes()[:4] == magic


def test_a_failed_write_keeps_the_previous_image(tmp_path, monkeypatch, capsys):
    output = tmp_path / "lb.png"
    output.write_bytes(b"the previous image")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    assert main(["lower-bound", "-o", str(output)]) == 1
    assert capsys.readouterr().err == f"error: cannot write {output}: No space left on device\n"
    assert output.read_bytes() == b"the previous image"
    assert [p.name for p in tmp_path.iterdir()] == ["lb.png"]


def test_a_run_without_metric_values_is_refused(tmp_path, capsys):
    empty = _csv(tmp_path / "empty" / "metrics.csv", "epoch,step,train/loss\n")
    nan = _csv(tmp_path / "nan" / "metrics.csv", "epoch,step,train/loss\n0,0,nan\n0,1,inf\n")
    good = _csv(tmp_path / "good.csv", "step,train/loss\n0,1.0\n")
    for run in (empty.parent, nan.parent):
        assert main([str(good), str(run), "-o", str(tmp_path / "c.png")]) == 1
        err = capsys.readouterr().err
        assert_one_line_error(err, run)
        assert "holds no metrics to draw" in err
    assert not (tmp_path / "c.png").exists()


def test_nan_and_inf_points_are_left_out_with_a_note(tmp_path, monkeypatch, capsys):
    rows = "".join(f"0,{s},{'nan' if s in (3, 7) else 5 - s / 10},nan,{s}\n" for s in range(10))
    run = _csv(tmp_path / "run" / "metrics.csv", "epoch,step,train/loss,train/diverged,lr\n" + rows)
    drawn = {}

    def keep(fig, output):
        drawn.update({ax.get_title(): [ln.get_ydata() for ln in ax.lines] for ax in fig.axes})
        return output  # the figure, not the file, is what this test reads

    monkeypatch.setattr("infonce.plot.curves.save", keep)
    assert main([str(run.parent), "-o", str(tmp_path / "c.png")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"note: train/loss of {run.parent}: 2 of 10 values are NaN or inf, not drawn" in err
    assert f"note: not drawn: train/diverged of {run.parent}: all 10 values are NaN or inf" in err
    assert sorted(title for title, lines in drawn.items() if lines) == ["lr", "train/loss"]
    (loss,) = drawn["train/loss"]
    assert len(loss) == 8 and all(math.isfinite(v) for v in loss)


def test_plot_metrics_draws_only_finite_points(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(
        "infonce.plot.curves.save",
        lambda fig, output: drawn.update({ax.get_title(): ax.lines for ax in fig.axes if ax.lines}),
    )
    plot_metrics(
        {"run": {"a": [(0, 1.0), (1, math.inf)], "b": [(0, math.nan)]}}, tmp_path / "x.png"
    )
    assert list(drawn) == ["a"]
    assert list(drawn["a"][0].get_ydata()) == [1.0]


def test_without_matplotlib_the_command_says_how_to_install_it_in_one_line(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["lower-bound", "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err == 'error: plotting needs matplotlib: pip install "infonce[plot]"\n'


@pytest.mark.parametrize("command", ["curves", "reliability"])
def test_the_command_in_a_fresh_process_prints_one_line_without_traceback(tmp_path, command):
    path = bad_file(tmp_path, "random bytes")
    result = subprocess.run(
        [sys.executable, "-m", "infonce.plot", command, str(path), "-o", str(tmp_path / "x.png")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert_one_line_error(result.stderr, path)
    assert not (tmp_path / "x.png").exists()
