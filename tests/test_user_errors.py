"""Every mistake a user can make with ``train.py`` ends in one line naming the option or the
file, a non-zero exit, no traceback, and nothing written over: wrong values, wrong files for
``--ckpt_path``, data trees without classes or with unreadable images, a batch larger than
the data, folders that cannot be written."""

import pickle
import shutil
import subprocess
import sys

import pytest
import torch
from train_helpers import REPO, TRAIN, load, run_train, tiny_args

import infonce.trainer.checkpoint
from infonce.trainer.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended"),
]


def run_main(args: list[str], capsys) -> tuple[int, str]:
    """``train.py`` in this process: (exit code, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    return exit_.value.code, capsys.readouterr().err


def assert_one_clear_line(code: int, err: str, *expected: str, exit_code: int | None = None):
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code not in (0, None), err
    assert exit_code is None or code == exit_code, (code, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--model.queue_size", "-5", "--model.queue_size: queue_size must be an integer >= 1"),
        ("--model.temperature", "0", "--model.temperature: temperature must be a positive"),
        ("--model.momentum", "1.5", "--model.momentum: momentum must be a number in [0, 1]"),
        ("--model.lr", "-0.1", "--model.lr: lr must be > 0"),
        ("--model.knn_k", "0", "--model.knn_k: knn_k must be an integer >= 1"),
        ("--model.backbone", "resnet1", "unknown backbone 'resnet1': did you mean 'resnet18'"),
        ("--model.head", "deep", "--model.head: expected one of 'linear', 'mlp', got deep"),
        ("--model.bn_guard", "sync", "--model.bn_guard: bn_guard: sync"),
        ("--model.temprature", "0.1", "--model.temprature is not an option"),
        ("--model.queue_size", "lots", "--model.queue_size: expected an int, got lots"),
        ("--data.batch_size", "0", "--data.batch_size: batch_size must be an integer >= 1"),
        ("--data.batch_size", "0.5", "--data.batch_size: expected an int, got 0.5"),
        ("--data.crop_scale", "[0.5]", "--data.crop_scale: expected a tuple with 2 elements"),
        ("--data.crop_scale", "[0.9, 0.2]", "--data.crop_scale: crop_scale must be (low, high)"),
        ("--data.std", "[0.2, 0.2, 0]", "--data.std: std must be 3 finite numbers > 0"),
        ("--data.mean", "[0.5, 0.5]", "--data.mean: expected a tuple with 3 elements"),
        ("--data.dataset", "imagenet", "--data.dataset: expected one of"),
        ("--trainer.max_epochs", "-5", "--trainer.max_epochs: `max_epochs` must be"),
        ("--trainer.max_epochs", "many", "--trainer.max_epochs: expected an int, got many"),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_option(
    option, value, expected, tiny_folder, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["fit", *tiny_args(tiny_folder), option, value], capsys)
    assert_one_clear_line(code, err, expected, exit_code=2)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


def test_the_same_mistake_in_a_real_process_prints_one_line_and_no_traceback(tiny_folder, tmp_path):
    result = run_train(["fit", *tiny_args(tiny_folder), "--model.queue_size", "-5"], tmp_path,
                       check=False)  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --model.queue_size: queue_size must be an integer >= 1, got -5"]


@pytest.fixture(scope="module")
def trained_run(tiny_folder, tmp_path_factory):
    """A 3-step run: (the working directory, its last.ckpt, an exported backbone)."""
    cwd = tmp_path_factory.mktemp("trained")
    run_train(["fit", *tiny_args(tiny_folder, "--trainer.max_steps", "3")], cwd)
    last = cwd / "runs/cpu_quick/checkpoints/last.ckpt"
    backbone = cwd / "backbone.pt"
    subprocess.run(
        [sys.executable, "-m", "infonce.trainer.export", str(last), "-o", str(backbone)],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    return cwd, last, backbone


def _bad_checkpoint(kind: str, directory, last, backbone):
    """A file (or folder) that is not a checkpoint this trainer can resume."""
    path = directory / f"{kind}.ckpt"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif kind == "random_bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "pickled_module":
        path.write_bytes(pickle.dumps(torch.nn.Linear(2, 2)))
    elif kind == "plain_tensors":
        torch.save({"weights": torch.ones(3)}, path)
    elif kind == "exported_backbone":
        shutil.copy(backbone, path)
    elif kind == "another_model":
        state = load(last)
        state["hyper_parameters"]["_class_path"] = "infonce.trainer.linear_probe.LinearProbe"
        torch.save(state, path)
    elif kind == "other_tensors":
        state = load(last)
        state["state_dict"] = {"classifier.1.weight": torch.ones(3, 128)}
        torch.save(state, path)
    return path


CHECKPOINT_PROBLEMS = {
    "missing": "checkpoint not found",
    "directory": "is a directory",
    "empty": "is empty",
    "truncated": "a torch.save file cut short",
    "random_bytes": "cannot read checkpoint",
    "text": "cannot read checkpoint",
    "pickled_module": "cannot read checkpoint",
    "plain_tensors": "not a Lightning training checkpoint",
    "exported_backbone": "is a backbone written by python -m infonce.trainer.export",
    "another_model": "holds a infonce.trainer.linear_probe.LinearProbe, this run trains a "
    "infonce.trainer.moco.MoCo",
    "other_tensors": "does not hold this model's state",
}


@pytest.mark.parametrize("subcommand", ["fit", "validate"])
@pytest.mark.parametrize("kind", sorted(CHECKPOINT_PROBLEMS))
def test_a_ckpt_path_that_is_not_a_checkpoint_of_this_model_is_one_line(
    kind, subcommand, trained_run, tiny_folder, tmp_path, monkeypatch, capsys
):
    _, last, backbone = trained_run
    bad = _bad_checkpoint(kind, tmp_path, last, backbone)
    monkeypatch.chdir(tmp_path)
    args = [subcommand, *tiny_args(tiny_folder), "--ckpt_path", str(bad)]
    code, err = run_main(args, capsys)
    assert_one_clear_line(
        code, err, "--ckpt_path", str(bad), CHECKPOINT_PROBLEMS[kind], exit_code=2
    )


def test_resuming_with_an_argument_that_shapes_the_state_names_both_values(
    trained_run, tiny_folder, monkeypatch, capsys
):
    cwd, _, _ = trained_run
    monkeypatch.chdir(cwd)
    args = ["fit", *tiny_args(tiny_folder), "--ckpt_path", "last", "--model.head", "linear"]
    code, err = run_main(args, capsys)
    assert_one_clear_line(code, err, "head='linear' (checkpoint: 'mlp')", exit_code=1)


def test_a_remote_ckpt_path_is_left_to_lightning():
    from infonce.trainer.cli import CLI

    class Fake:  # only what _check_ckpt_path reads before it decides
        config_init = {"ckpt_path": "s3://bucket/run/last.ckpt"}
        subcommand = None

        def _get(self, config, key):
            return config[key]

    CLI._check_ckpt_path(Fake(), "fit")  # no ConfigError: Lightning reads remote files


def test_validate_with_ckpt_path_last_and_no_checkpoint_says_so(
    tiny_folder, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["validate", *tiny_args(tiny_folder), "--ckpt_path", "last"], capsys)
    assert_one_clear_line(code, err, "--ckpt_path last found no last checkpoint", exit_code=2)


def test_ckpt_path_best_in_a_new_process_names_the_files_to_give_instead(
    trained_run, tiny_folder, monkeypatch, capsys
):
    cwd, last, _ = trained_run
    monkeypatch.chdir(cwd)
    code, err = run_main(["validate", *tiny_args(tiny_folder), "--ckpt_path", "best"], capsys)
    assert_one_clear_line(code, err, "--ckpt_path best", "runs/cpu_quick/checkpoints/last.ckpt")


def _tree(root, splits: dict[str, dict[str, int]], source) -> None:
    """``root/<split>/<class>/<i>.png`` copied from ``source``'s images; 0 images: an empty
    class folder."""
    images = sorted((source / "train").rglob("*.png"))
    for split, classes in splits.items():
        (root / split).mkdir(parents=True)
        for name, count in classes.items():
            (root / split / name).mkdir()
            for i in range(count):
                shutil.copy(images[i], root / split / name / f"{i}.png")


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ({"test": {"a": 2}}, "image folder split not found"),
        ({"train": {}, "test": {}}, "holds no images in class folders"),
        ({"train": {"a": 0, "b": 0}, "test": {"a": 2}}, "holds no images in class folders"),
    ],
    ids=["no_train_split", "no_class_folders", "empty_class_folders"],
)
def test_a_data_tree_without_classes_is_one_line(
    layout, expected, tiny_folder, tmp_path, monkeypatch, capsys
):
    root = tmp_path / "data"
    _tree(root, layout, tiny_folder)
    monkeypatch.chdir(tmp_path)
    args = ["fit", *tiny_args(tiny_folder), "--data.root", str(root)]
    code, err = run_main(args, capsys)
    assert_one_clear_line(code, err, expected, str(root), exit_code=1)


@pytest.mark.parametrize("resident", ["true", "false"])
def test_a_batch_larger_than_the_data_is_refused_instead_of_training_nothing(
    resident, tiny_folder, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    args = ["fit", *tiny_args(tiny_folder), "--data.batch_size", "32", "--model.bn_splits", "1"]
    code, err = run_main([*args, "--data.resident", resident], capsys)
    assert_one_clear_line(code, err, "--data.batch_size 32", "the train split has 24", exit_code=2)
    assert not any((tmp_path / "runs").rglob("*.ckpt"))


@pytest.fixture
def folder_with_bad_images(tiny_folder, tmp_path):
    root = tmp_path / "bad_data"
    shutil.copytree(tiny_folder, root)
    good = root / "train" / "red" / "000.png"
    (root / "train" / "red" / "001.png").write_bytes(good.read_bytes()[:200])  # truncated
    (root / "train" / "blue" / "zz.jpg").write_text("not an image")
    return root


@pytest.mark.parametrize("resident", ["true", "false"])
def test_unreadable_images_are_named_before_training_starts(
    resident, folder_with_bad_images, tiny_folder, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    args = ["fit", *tiny_args(folder_with_bad_images), "--data.resident", resident]
    code, err = run_main(args, capsys)
    assert_one_clear_line(
        code,
        err,
        "2 of 25 images",
        str(folder_with_bad_images / "train" / "red" / "001.png"),
        str(folder_with_bad_images / "train" / "blue" / "zz.jpg"),
        "--data.bad_images skip",
        exit_code=1,
    )
    assert not any((tmp_path / "runs").rglob("*.ckpt"))  # refused before the first step


@pytest.mark.parametrize("resident", ["true", "false"])
def test_bad_images_skip_trains_without_them_and_warns(resident, folder_with_bad_images, tmp_path):
    args = tiny_args(folder_with_bad_images, "--trainer.max_steps", "4", "--data.resident",
                     resident, "--data.bad_images", "skip")  # fmt: skip
    result = run_train(["fit", *args], tmp_path)
    assert "leaving out 2 unreadable images" in result.stderr
    assert load(tmp_path / "runs/cpu_quick/checkpoints/last.ckpt")["global_step"] == 4


def test_a_checkpoint_folder_that_is_a_file_is_refused_before_any_data_is_read(
    tiny_folder, tmp_path, monkeypatch, capsys
):
    (tmp_path / "runs/cpu_quick").mkdir(parents=True)
    (tmp_path / "runs/cpu_quick/checkpoints").write_text("a file where a folder should be")
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["fit", *tiny_args(tiny_folder)], capsys)
    assert_one_clear_line(
        code, err, "checkpoint folder runs/cpu_quick/checkpoints is a file", exit_code=1
    )
    assert "checking" not in err and "decoding" not in err  # before any image was read


def test_a_run_folder_that_cannot_be_written_is_refused_before_training(
    tiny_folder, tmp_path, monkeypatch, capsys
):
    # as root a read-only folder is still writable, so the write itself is made to fail
    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(infonce.trainer.checkpoint.tempfile, "TemporaryFile", refuse)
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["fit", *tiny_args(tiny_folder)], capsys)
    assert_one_clear_line(
        code, err, "cannot write in the run folder", "Permission denied", exit_code=1
    )


def test_a_renamed_run_folder_resumes_into_its_last_ckpt(tiny_folder, tmp_path):
    run_train(["fit", *tiny_args(tiny_folder, "--trainer.max_steps", "3")], tmp_path)
    (tmp_path / "runs/cpu_quick").rename(tmp_path / "runs/renamed")
    args = tiny_args(tiny_folder, "--trainer.max_steps", "6", "--trainer.default_root_dir",
                     "runs/renamed", "--ckpt_path", "last")  # fmt: skip
    run_train(["fit", *args], tmp_path)
    folder = tmp_path / "runs/renamed/checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # no last-v1.ckpt
    assert load(folder / "last.ckpt")["global_step"] == 6


def test_train_py_help_still_works(tmp_path):
    result = subprocess.run([sys.executable, TRAIN, "fit", "--help"], capture_output=True,
                            text=True, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0 and "--model" in result.stdout
