"""Which logs of a run folder python -m infonce.plot draws: the training curves, whatever
validate or test logged after them (at step 0), and a resume superseding the abandoned attempt."""

import pytest
from test_export import moco_checkpoint
from train_helpers import REPO, run_train

from infonce.plot import is_evaluation_log, main, read_metrics, split_logs

FIT_CONFIG = "seed_everything: 0\ntrainer:\n  max_steps: 6\nmodel:\n  lr: 0.1\nckpt_path: null\n"
RESUME_CONFIG = FIT_CONFIG.replace("ckpt_path: null", "ckpt_path: last")
VALIDATE_CONFIG = RESUME_CONFIG + "verbose: true\nweights_only: null\n"
PREDICT_CONFIG = RESUME_CONFIG + "return_predictions: null\n"


def _version(root, n, csv_text, config=None):
    folder = root / f"version_{n}"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text(csv_text)
    if config is not None:
        (folder / "config.yaml").write_text(config)
    return folder / "metrics.csv"


FIT = "epoch,step,train/loss,val/top1\n0,0,3.0,\n0,1,2.0,\n0,2,1.0,\n0,2,,40.0\n"
VALIDATE = "epoch,step,val/top1\n0,0,40.0\n"
TEST = "epoch,step,test/top1\n0,0,38.0\n"


@pytest.mark.parametrize("with_config", [True, False])
def test_a_validate_and_a_test_after_the_fit_leave_its_curves_whole(tmp_path, with_config):
    fit = _version(tmp_path, 0, FIT, FIT_CONFIG if with_config else None)
    validate = _version(tmp_path, 1, VALIDATE, VALIDATE_CONFIG if with_config else None)
    test = _version(tmp_path, 2, TEST, VALIDATE_CONFIG if with_config else None)
    assert split_logs(tmp_path) == ([fit], [validate, test])
    assert read_metrics(tmp_path) == {
        "train/loss": [(0, 3.0), (1, 2.0), (2, 1.0)],
        "val/top1": [(2, 40.0)],
    }


def test_a_resume_after_a_validate_still_supersedes_the_abandoned_attempt(tmp_path):
    _version(tmp_path, 0, FIT + "0,3,0.9,\n0,4,0.8,\n", FIT_CONFIG)  # killed after step 4
    _version(tmp_path, 1, VALIDATE, VALIDATE_CONFIG)  # of the checkpoint at step 2
    _version(tmp_path, 2, "epoch,step,train/loss\n1,3,0.5\n1,4,0.4\n1,5,0.3\n", RESUME_CONFIG)
    metrics = read_metrics(tmp_path)
    assert metrics["train/loss"] == [(0, 3.0), (1, 2.0), (2, 1.0), (3, 0.5), (4, 0.4), (5, 0.3)]
    assert metrics["val/top1"] == [(2, 40.0)]


def test_config_yaml_decides_over_the_metric_names(tmp_path):
    # a resumed fit killed after its first validation logged val/* only: still a fit
    resumed = _version(tmp_path, 0, "epoch,step,val/top1\n1,6,45.0\n", RESUME_CONFIG)
    # a validate whose metric is not named like one: still an evaluation
    validate = _version(tmp_path, 1, "epoch,step,knn_top1\n0,0,45.0\n", VALIDATE_CONFIG)
    predict = _version(tmp_path, 2, "epoch,step,score\n0,0,1.0\n", PREDICT_CONFIG)
    assert not is_evaluation_log(resumed)
    assert is_evaluation_log(validate) and is_evaluation_log(predict)


@pytest.mark.parametrize(
    "names, evaluation",
    [
        (["val/knn_top1", "val/alignment"], True),
        (["val_loss", "validation/acc", "valid-f1", "test/top1", "test_acc", "predict.x"], True),
        (["val/top1", "train/loss"], False),
        (["loss"], False),
        (["valley_depth"], False),
        (["testing_acc"], False),
        ([], False),
    ],
)
def test_without_config_yaml_the_metric_names_decide(tmp_path, names, evaluation):
    file = tmp_path / "metrics.csv"
    file.write_text(",".join(["epoch", "step", *names]) + "\n")
    assert is_evaluation_log(file) is evaluation


def test_a_folder_of_evaluation_logs_only_draws_them_all(tmp_path):
    _version(tmp_path, 0, VALIDATE, VALIDATE_CONFIG)
    _version(tmp_path, 1, TEST, VALIDATE_CONFIG)
    assert split_logs(tmp_path)[1] == []
    assert read_metrics(tmp_path) == {"val/top1": [(0, 40.0)], "test/top1": [(0, 38.0)]}


def test_the_command_names_the_logs_it_left_out(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    _version(tmp_path / "logs", 0, FIT, FIT_CONFIG)
    validate = _version(tmp_path / "logs", 1, VALIDATE, VALIDATE_CONFIG)
    output = tmp_path / "curves.png"
    assert main([str(tmp_path / "logs"), "-o", str(output)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{output}\n"
    assert captured.err.startswith(f"note: not drawn: {validate} (an evaluation's log")
    assert captured.err.count("\n") == 1


def _count_calls(monkeypatch, name: str) -> list:
    """Record every call of ``name`` in each module of infonce.plot that binds it."""
    import importlib

    calls = []
    for module in ("_figure", "cli", "curves", "temperature"):
        module = importlib.import_module(f"infonce.plot.{module}")
        if hasattr(module, name):
            original = getattr(module, name)

            def counted(*args, _original=original, **kwargs):
                calls.append(args)
                return _original(*args, **kwargs)

            monkeypatch.setattr(module, name, counted)
    return calls


def test_the_command_splits_each_run_once_and_checks_the_output_once(tmp_path, monkeypatch):
    """Each log's kind is decided once and the output checked once: the command calls the
    library functions, which do both, and does neither itself."""
    pytest.importorskip("matplotlib")
    _version(tmp_path / "a", 0, FIT, FIT_CONFIG)
    _version(tmp_path / "a", 1, VALIDATE, VALIDATE_CONFIG)
    _version(tmp_path / "b", 0, FIT, FIT_CONFIG)
    kinds = _count_calls(monkeypatch, "is_evaluation_log")
    checks = _count_calls(monkeypatch, "check_output")
    output = tmp_path / "curves.png"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(output)]) == 0
    assert len(kinds) == 3  # one per metrics.csv
    assert [str(path) for (path,) in checks] == [str(output)]
    checks.clear()
    assert main(["lower-bound", "-o", str(tmp_path / "lb.png")]) == 0
    assert len(checks) == 1


@pytest.mark.slow
def test_train_py_fit_validate_test_and_resume_draw_the_training_curves(tiny_folder, tmp_path):
    """The real sequence, as the README runs it (on a linear probe, which has a test step)."""
    pytest.importorskip("matplotlib")
    moco_checkpoint(tmp_path / "moco.ckpt", backbone="convnet")
    run = tmp_path / "probe"
    args = [
        "--config", str(REPO / "configs" / "linear_probe.yaml"),
        "--model.pretrained", str(tmp_path / "moco.ckpt"), "--model.num_classes", "3",
        "--data.dataset", "folder", "--data.root", str(tiny_folder),
        "--data.batch_size", "8", "--data.eval_batch_size", "24", "--data.num_workers", "0",
        "--trainer.accelerator", "cpu", "--trainer.check_val_every_n_epoch", "1",
        "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir", str(run),
    ]  # fmt: skip
    run_train(["fit", *args, "--trainer.max_steps", "3"], cwd=tmp_path)
    run_train(["validate", *args, "--ckpt_path", "last"], cwd=tmp_path)
    run_train(["test", *args, "--ckpt_path", "last"], cwd=tmp_path)
    run_train(["fit", *args, "--trainer.max_steps", "6", "--ckpt_path", "last"], cwd=tmp_path)
    logs = run / "logs"
    drawn, left_out = split_logs(logs)
    assert [f.parent.name for f in drawn] == ["version_0", "version_3"]
    assert [f.parent.name for f in left_out] == ["version_1", "version_2"]
    metrics = read_metrics(logs)
    assert [step for step, _ in metrics["train/loss"]] == [0, 1, 2, 3, 4, 5]
    assert [step for step, _ in metrics["val/top1"]] == [2, 5]  # the fits' validations only
    assert "test/top1" not in metrics
    alone = read_metrics(logs / "version_2")  # plotted by itself, the test log is drawn
    assert list(alone) == ["test/top1"] and alone["test/top1"][0][0] == 0
    output = tmp_path / "curves.png"
    assert main([str(logs), "-o", str(output)]) == 0
    assert output.read_bytes()[:4] == b"\x89PNG"
