"""``train.py`` end to end, in fresh processes, as users run it: fit, validate, the run folder,
resuming with other arguments, a diverging run, the linear probe. (Exact resume: test_resume.py.)"""

import csv
import json
import subprocess
import sys

import pytest
import torch
import yaml
from train_helpers import CPU_QUICK, REPO, load, run_train, tiny_args

pytestmark = pytest.mark.slow


def test_fit_runs_the_documented_smoke_command_then_validate_prints_knn(tiny_folder, tmp_path):
    run_train(
        [
            "fit",
            *tiny_args(
                tiny_folder,
                "--seed_everything",
                "7",
                "--trainer.deterministic",
                "true",
                "--trainer.max_steps",
                "16",
            ),
        ],
        cwd=tmp_path,
    )
    last = tmp_path / "runs/cpu_quick/checkpoints/last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 16
    assert int(ckpt["state_dict"]["queue.filled"]) == 64
    result = run_train(["validate", *tiny_args(tiny_folder, "--ckpt_path", str(last))], tmp_path)
    assert result.stdout.count("val/knn_top1") == 1  # one table row, not one per dataloader


def test_typo_in_a_config_key_is_an_error(tiny_folder, tmp_path):
    result = run_train(
        ["fit", *tiny_args(tiny_folder), "--model.temprature", "0.1"], tmp_path, check=False
    )
    assert result.returncode != 0
    assert "temprature" in result.stderr
    bad = yaml.safe_load(open(CPU_QUICK))
    bad["data"]["batchsize"] = 8
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(bad))
    result = run_train(["fit", "--config", str(tmp_path / "typo.yaml")], tmp_path, check=False)
    assert result.returncode != 0 and "batchsize" in result.stderr


def test_missing_data_is_one_clear_message_without_traceback(tmp_path):
    # download false: tests never download (a failed download: test_datasets.py)
    args = ["--config", CPU_QUICK, "--data.root", str(tmp_path / "nowhere")]
    result = run_train(["fit", *args, "--data.download", "false"], tmp_path, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"{tmp_path / 'nowhere'}/cifar-10-batches-py/data_batch_1" in result.stderr
    assert "--data.root" in result.stderr and "download" in result.stderr


def test_print_config_emits_the_full_schema(tmp_path):
    result = run_train(["fit", "--config", CPU_QUICK, "--print_config"], tmp_path)
    config = yaml.safe_load(result.stdout)
    assert config["model"]["class_path"] == "infonce.trainer.moco.MoCo"
    assert config["model"]["init_args"]["temperature"] == 0.1
    assert config["data"]["batch_size"] == 256


def probe_args(tiny_folder, pretrained, *extra: str) -> list[str]:
    return [
        "--config",
        str(REPO / "configs/linear_probe.yaml"),
        "--model.pretrained",
        str(pretrained),
        "--model.num_classes",
        "3",
        "--data.dataset",
        "folder",
        "--data.root",
        str(tiny_folder),
        "--data.batch_size",
        "8",
        "--data.num_workers",
        "0",
        "--trainer.max_epochs",
        "2",
        "--trainer.accelerator",
        "cpu",
        *extra,
    ]


def test_linear_probe_trains_on_a_moco_checkpoint_and_reports_test_top1(tiny_folder, tmp_path):
    run_train(["fit", *tiny_args(tiny_folder, "--trainer.max_steps", "3")], cwd=tmp_path)
    pretrained = tmp_path / "runs/cpu_quick/checkpoints/last.ckpt"
    probe = probe_args(tiny_folder, pretrained)
    run_train(["fit", *probe], cwd=tmp_path)
    pretrained.rename(tmp_path / "moved.ckpt")  # the probe checkpoint holds its backbone
    logits_file = tmp_path / "test_logits.pt"
    result = run_train(
        ["test", *probe, "--ckpt_path", "last", "--model.logits_file", str(logits_file)], tmp_path
    )
    assert result.stdout.count("test/top1") == 1
    saved = torch.load(logits_file, weights_only=True)  # all 12 test images
    assert (
        saved["logits"].shape == (12, 3) and saved["labels"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    )
    (line,) = [row for row in result.stdout.splitlines() if "test/top1" in row]
    top1 = 100.0 * (saved["logits"].argmax(1) == saved["labels"]).float().mean().item()
    assert float(line.split()[-1]) == pytest.approx(top1, abs=1e-3)
    plot = subprocess.run(
        [sys.executable, "-m", "infonce.plot", "reliability", str(logits_file), "-o", "r.png"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert plot.returncode == 0, plot.stderr
    assert "fitted temperature" in plot.stdout and (tmp_path / "r.png").stat().st_size > 10_000
    wrong = probe_args(tiny_folder, tmp_path / "moved.ckpt", "--model.num_classes", "10")
    wrong += ["--trainer.default_root_dir", str(tmp_path / "wrong")]
    result = run_train(["fit", *wrong], tmp_path, check=False)
    assert result.returncode != 0
    assert "num_classes is 10 but the dataset has 3 classes" in result.stderr


def test_export_writes_the_backbone_that_the_probe_and_load_backbone_read(tiny_folder, tmp_path):
    run_train(["fit", *tiny_args(tiny_folder, "--trainer.max_steps", "3")], cwd=tmp_path)
    last = tmp_path / "runs/cpu_quick/checkpoints/last.ckpt"
    export = subprocess.run(
        [
            sys.executable,
            "-m",
            "infonce.trainer.export",
            str(last),
            "-o",
            str(tmp_path / "backbone.pt"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert export.returncode == 0, export.stderr
    assert "wrote" in export.stdout and "convnet" in export.stdout
    exported = torch.load(tmp_path / "backbone.pt", weights_only=True)
    moco = load(last)["state_dict"]
    assert exported["state_dict"].keys() == {
        k.removeprefix("encoder.0.") for k in moco if k.startswith("encoder.0.")
    }
    assert exported["source"]["global_step"] == 3
    assert exported["preprocessing"]["image_size"] == 32
    run_train(["fit", *probe_args(tiny_folder, tmp_path / "backbone.pt")], cwd=tmp_path)
    probe = load(tmp_path / "runs/linear_probe/checkpoints/last.ckpt")
    assert probe["hyper_parameters"]["architecture"] == {"backbone": "convnet", "cifar_stem": True}
    for key, tensor in exported["state_dict"].items():  # the frozen backbone, unchanged
        assert torch.equal(probe["state_dict"][f"backbone.{key}"], tensor), key


def test_one_flag_puts_every_output_of_a_run_in_its_folder(tiny_folder, tmp_path):
    run = tmp_path / "experiments" / "t0.2"
    args = tiny_args(
        tiny_folder, "--trainer.max_steps", "2", "--trainer.default_root_dir", str(run)
    )
    run_train(["fit", *args], cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiments"]  # nothing elsewhere
    assert (run / "checkpoints" / "last.ckpt").is_file()
    for name in ("metrics.csv", "hparams.yaml", "config.yaml"):
        assert (run / "logs" / "version_0" / name).is_file(), name
    config = yaml.safe_load(open(run / "logs" / "version_0" / "config.yaml"))
    assert config["trainer"]["default_root_dir"] == str(run)


def test_a_new_run_never_overwrites_an_earlier_runs_checkpoints(tiny_folder, tmp_path):
    args = tiny_args(tiny_folder, "--trainer.max_steps", "2")
    run_train(["fit", *args], cwd=tmp_path)
    last = tmp_path / "runs/cpu_quick/checkpoints/last.ckpt"
    before = last.read_bytes()
    again = run_train(["fit", *args], cwd=tmp_path, check=False)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert "already holds the checkpoints of an earlier run" in again.stderr
    assert "--ckpt_path last" in again.stderr and "--trainer.default_root_dir" in again.stderr
    assert last.read_bytes() == before


def test_resume_uses_an_explicit_learning_rate_and_weight_decay(tiny_folder, tmp_path):
    run_train(["fit", *tiny_args(tiny_folder, "--trainer.max_steps", "2")], cwd=tmp_path)
    resumed = run_train(
        [
            "fit",
            *tiny_args(tiny_folder, "--trainer.max_steps", "3", "--ckpt_path", "last"),
            "--model.lr",
            "0.01",
            "--model.weight_decay",
            "0.0",
        ],
        cwd=tmp_path,
    )
    assert "lr=0.01 (checkpoint: 0.06)" in resumed.stderr + resumed.stdout
    ckpt = load(tmp_path / "runs/cpu_quick/checkpoints/last.ckpt")
    assert ckpt["hyper_parameters"]["lr"] == 0.01
    group, probe = ckpt["optimizer_states"][0]["param_groups"]  # the method's, the probe's
    assert probe["name"] == "probe" and probe["weight_decay"] == 0.0
    assert group["weight_decay"] == 0.0  # not the checkpoint's 5e-4
    assert group["lr"] < 0.01  # this run's lr on its cosine schedule, not 0.06's


def test_resume_refuses_an_argument_the_checkpoint_cannot_take(tiny_folder, tmp_path):
    run_train(["fit", *tiny_args(tiny_folder, "--trainer.max_steps", "2")], cwd=tmp_path)
    args = tiny_args(tiny_folder, "--trainer.max_steps", "3", "--ckpt_path", "last")
    result = run_train(["fit", *args, "--model.queue_size", "32"], tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "queue_size=32 (checkpoint: 64)" in result.stderr
    assert "--model.queue_size 64" in result.stderr
    assert load(tmp_path / "runs/cpu_quick/checkpoints/last.ckpt")["global_step"] == 2


def test_a_diverging_run_stops_with_the_step_and_keeps_the_last_finite_checkpoint(
    tiny_folder, tmp_path
):
    config = yaml.safe_load(open(CPU_QUICK))
    config["trainer"]["callbacks"][0]["init_args"]["every_n_train_steps"] = 1
    (tmp_path / "every1.yaml").write_text(yaml.safe_dump(config))
    args = tiny_args(tiny_folder, "--model.lr", "1e6", "--trainer.max_steps", "40")
    args[1] = str(tmp_path / "every1.yaml")
    result = run_train(["fit", *args], tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "train/loss is nan at step " in result.stderr
    step = int(result.stderr.split("train/loss is nan at step ")[1].split()[0])
    ckpt = load(tmp_path / "runs/cpu_quick/checkpoints/last.ckpt")
    assert ckpt["global_step"] == step  # the last finite state, saved after every step
    for name, tensor in ckpt["state_dict"].items():
        assert not tensor.is_floating_point() or torch.isfinite(tensor).all(), name


def test_a_learned_temperature_and_the_diagnostics_reach_the_metrics_file(tiny_folder, tmp_path):
    extra = ["--model.learnable_temperature", "true", "--trainer.max_steps", "6"]
    extra += ["--trainer.check_val_every_n_epoch", "1"]
    run_train(["fit", *tiny_args(tiny_folder, *extra)], cwd=tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "runs/cpu_quick/logs/version_0/metrics.csv")))
    temperatures = [float(r["train/temperature"]) for r in rows if r.get("train/temperature")]
    assert len(temperatures) == 6 and temperatures[0] == pytest.approx(0.1)
    assert temperatures[-1] != pytest.approx(0.1)
    validations = [r for r in rows if r.get("val/knn_top1")]
    assert len(validations) == 2  # after each of the 2 epochs
    for name in ("val/alignment", "val/uniformity", "val/entropy", "val/hardest_negative"):
        assert all(r.get(name) for r in validations), name


FIVE_LINES = """\
seed_everything: 0
model:
  class_path: infonce.trainer.simclr.SimCLR
  init_args: {backbone: convnet, hidden_dim: 32, feature_dim: 16, bn_splits: 4}
trainer: {max_epochs: 4, default_root_dir: mine}
"""


def test_a_five_line_config_keeps_every_run_guarantee(tiny_folder, tmp_path):
    """No callbacks or plugins in the config: train.py adds the RunCheckpoint (run folder,
    final save, stop signals) and the atomic checkpoint writer."""
    (tmp_path / "mine.yaml").write_text(FIVE_LINES)
    assert len(FIVE_LINES.splitlines()) == 5
    data = ["--data.dataset", "folder", "--data.root", str(tiny_folder),
            "--data.batch_size", "8", "--data.num_workers", "0"]  # fmt: skip
    stop = {"class_path": "tests.ddp_helpers.SignalAtStep", "init_args": {"step": 2}}
    args = ["fit", "--config", "mine.yaml", *data]
    stopped = run_train([*args, f"--trainer.callbacks+={json.dumps(stop)}"], tmp_path, False)
    assert stopped.returncode == 143, stopped.stderr[-2000:]  # the signal ends it, saved
    last = tmp_path / "mine/checkpoints/last.ckpt"
    assert load(last)["global_step"] == 2
    again = run_train(args, tmp_path, check=False)  # the run folder is guarded
    assert again.returncode == 1 and "already holds the checkpoints" in again.stderr
    run_train([*args, "--ckpt_path", "last"], tmp_path)
    assert load(last)["global_step"] == 12  # the final state, at max_epochs
    assert not list((tmp_path / "mine/checkpoints").glob(".tmp-*"))


def test_run_guarantees_are_added_only_where_a_config_lacks_them():
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from infonce.trainer.checkpoint import RunCheckpoint
    from infonce.trainer.checkpoint_io import AtomicCheckpointIO
    from infonce.trainer.cli import with_run_guarantees

    added = with_run_guarantees({})
    (callback,) = added["callbacks"]
    assert isinstance(callback, RunCheckpoint) and callback.save_last
    assert [type(p) for p in added["plugins"]] == [AtomicCheckpointIO]
    best = RunCheckpoint(monitor="val/knn_top1", mode="max")  # no save_last: last one added
    assert len(with_run_guarantees({"callbacks": [best]})["callbacks"]) == 2
    mine = RunCheckpoint(save_last=True, every_n_train_steps=7)
    assert with_run_guarantees({"callbacks": [mine]})["callbacks"] == [mine]
    assert with_run_guarantees({"enable_checkpointing": False})["callbacks"] == []
    io = TorchCheckpointIO()
    assert with_run_guarantees({"plugins": io})["plugins"] == [io]
