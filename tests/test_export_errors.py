"""The export command and load_backbone on files they cannot use, and what export never
overwrites: one line naming the file, nothing written, the checkpoint never lost."""

import errno
import os
import subprocess
import sys

import lightning as L
import pytest
import torch
from test_export import moco_checkpoint
from torch import nn

from infonce import load_backbone
from infonce._files import UnreadableFileError
from infonce.trainer.export import NotABackboneError, export_backbone, main
from infonce.trainer.linear_probe import LinearProbe

BAD_KINDS = (
    "missing",
    "empty",
    "truncated",
    "random bytes",
    "directory",
    "pickled module",
    "text file",
    "wrong torch file",
)


def bad_file(tmp_path, kind, wrong=None):
    """A path of ``kind``: what a user may pass instead of the file a command wants.
    ``wrong`` is what the "wrong torch file" holds (default: a dict of one tensor)."""
    path = tmp_path / f"bad_{kind.replace(' ', '_')}.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        torch.save(
            {"logits": torch.randn(64, 4), "labels": torch.zeros(64, dtype=torch.long)}, path
        )
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
                         .to(torch.uint8).numpy().tobytes() + b"\xff\xfe")  # fmt: skip
    elif kind == "directory":
        path.mkdir()
    elif kind == "pickled module":
        torch.save(nn.Linear(2, 2), path)
    elif kind == "text file":
        path.write_text("this is a text file, not a checkpoint\n")
    elif kind == "wrong torch file":
        torch.save({"weights": torch.zeros(3)} if wrong is None else wrong, path)
    return path


def assert_one_line_error(err: str, path) -> None:
    """``err`` is one line ``error: ...`` naming ``path``, without a traceback."""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert str(path) in err, err


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_export_refuses_each_kind_of_bad_file_in_one_line_naming_it(tmp_path, kind, capsys):
    path = bad_file(tmp_path, kind)
    output = tmp_path / "out" / "backbone.pt"
    assert main([str(path), "-o", str(output)]) == 1
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, path)
    assert captured.out == ""
    assert not output.exists()


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_load_backbone_raises_one_line_naming_each_kind_of_bad_file(tmp_path, kind):
    path = bad_file(tmp_path, kind)
    expected = FileNotFoundError if kind == "missing" else ValueError
    with pytest.raises(expected) as info:
        load_backbone(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    if kind in ("wrong torch file",):
        assert isinstance(info.value, NotABackboneError)
    elif kind != "missing":
        assert isinstance(info.value, UnreadableFileError)


def test_a_logits_file_is_not_a_backbone(tmp_path, capsys):
    path = tmp_path / "logits.pt"
    torch.save({"logits": torch.zeros(4, 3), "labels": torch.zeros(4, dtype=torch.long)}, path)
    assert main([str(path), "-o", str(tmp_path / "b.pt")]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err, path)
    assert "neither a MoCo checkpoint" in err and "['labels', 'logits']" in err


@pytest.mark.parametrize("how", ["same path", "another path", "symlink", "hard link"])
@pytest.mark.parametrize("force", [False, True])
def test_export_never_writes_over_its_checkpoint(tmp_path, how, force, capsys):
    checkpoint = tmp_path / "run" / "last.ckpt"
    checkpoint.parent.mkdir()
    moco_checkpoint(checkpoint, backbone="convnet")
    before = checkpoint.read_bytes()
    output = {
        "same path": checkpoint,
        "another path": tmp_path / "run" / ".." / "run" / "last.ckpt",
        "symlink": tmp_path / "link.ckpt",
        "hard link": tmp_path / "hard.ckpt",
    }[how]
    if how == "symlink":
        output.symlink_to(checkpoint)
    elif how == "hard link":
        os.link(checkpoint, output)
    assert main([str(checkpoint), "-o", str(output), *(["--force"] if force else [])]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err, output)
    assert "is the checkpoint being exported" in err
    assert checkpoint.read_bytes() == before


def test_export_replaces_an_existing_file_only_with_force(tmp_path, capsys):
    moco_checkpoint(tmp_path / "moco.ckpt", backbone="convnet")
    output = tmp_path / "backbone.pt"
    output.write_bytes(b"an earlier export")
    assert main([str(tmp_path / "moco.ckpt"), "-o", str(output)]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err, output)
    assert "already exists; pass --force" in err
    assert output.read_bytes() == b"an earlier export"
    assert main([str(tmp_path / "moco.ckpt"), "-o", str(output), "--force"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {output}: convnet")
    assert torch.load(output, weights_only=True)["format"] == "infonce-backbone"


def test_export_to_a_directory_is_one_line(tmp_path, capsys):
    moco_checkpoint(tmp_path / "moco.ckpt", backbone="convnet")
    (tmp_path / "exports").mkdir()
    assert main([str(tmp_path / "moco.ckpt"), "-o", str(tmp_path / "exports"), "--force"]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err, tmp_path / "exports")
    assert "is a directory" in err
    assert list((tmp_path / "exports").iterdir()) == []


def test_a_full_disk_leaves_the_previous_file_whole_and_no_partial_file(
    tmp_path, monkeypatch, capsys
):
    moco_checkpoint(tmp_path / "moco.ckpt", backbone="convnet")
    output = tmp_path / "out" / "backbone.pt"
    output.parent.mkdir()
    output.write_bytes(b"the previous export")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)  # the bytes written, the disk then full
    assert main([str(tmp_path / "moco.ckpt"), "-o", str(output), "--force"]) == 1
    assert capsys.readouterr().err == f"error: cannot write {output}: No space left on device\n"
    assert output.read_bytes() == b"the previous export"
    assert sorted(p.name for p in output.parent.iterdir()) == ["backbone.pt"]  # no temporary


def _rewrite_hparams(path, **hparams):
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"].update(hparams)
    torch.save(checkpoint, path)


@pytest.mark.parametrize(
    "built, recorded, key",
    [
        ({"backbone": "convnet"}, {"backbone": "resnet18"}, "layers.0.weight"),
        ({"backbone": "resnet18", "cifar_stem": True}, {"cifar_stem": False}, "conv1.weight"),
    ],
)
def test_hparams_that_disagree_with_the_tensors_are_refused_before_writing(
    tmp_path, built, recorded, key, capsys
):
    checkpoint = tmp_path / "moco.ckpt"
    moco_checkpoint(checkpoint, **built)
    _rewrite_hparams(checkpoint, **recorded)
    output = tmp_path / "backbone.pt"
    assert main([str(checkpoint), "-o", str(output)]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err, checkpoint)
    architecture = f"resnet18 (cifar_stem={recorded.get('cifar_stem', True)})"
    assert f"do not fit the architecture it records, {architecture}" in err
    assert key in err
    assert not output.exists()
    with pytest.raises(NotABackboneError, match=key) as info:
        load_backbone(checkpoint)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "recorded, message",
    [
        ({"backbone": "resnet_18"}, "records backbone 'resnet_18'.*did you mean 'resnet18'"),
        ({"backbone": 7}, "records backbone 7, which this infonce does not build"),
        ({"backbone": {"init_args": {}}}, "neither a name nor a class_path"),
        ({"backbone": {"class_path": "os.system"}}, "'os.system' is not an nn.Module subclass"),
        ({"backbone_kwargs": [1, 2]}, r"records backbone_kwargs=\[1, 2\], not a dict"),
    ],
)
def test_an_architecture_this_infonce_does_not_build_is_refused(tmp_path, recorded, message):
    moco_checkpoint(tmp_path / "moco.ckpt", backbone="convnet")
    _rewrite_hparams(tmp_path / "moco.ckpt", **recorded)
    with pytest.raises(NotABackboneError, match=message) as info:
        export_backbone(tmp_path / "moco.ckpt", tmp_path / "b.pt")
    assert str(tmp_path / "moco.ckpt") in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "b.pt").exists()


def test_a_linear_probe_checkpoint_exports_its_frozen_backbone(tmp_path):
    moco_checkpoint(tmp_path / "moco.ckpt", backbone="convnet")
    probe = LinearProbe(str(tmp_path / "moco.ckpt"), num_classes=3)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_steps=0)
    trainer.strategy.connect(probe)
    trainer.save_checkpoint(tmp_path / "probe.ckpt")
    data = export_backbone(tmp_path / "probe.ckpt", tmp_path / "backbone.pt")
    assert data["architecture"] == {"backbone": "convnet", "cifar_stem": True}
    assert data["feature_dim"] == 128
    expected = probe.backbone.state_dict()
    assert data["state_dict"].keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(data["state_dict"][name], tensor), name
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        reference = probe.backbone.eval()(x)
        for path in (tmp_path / "probe.ckpt", tmp_path / "backbone.pt"):
            torch.testing.assert_close(load_backbone(path)(x), reference)


def test_a_missing_output_argument_is_argparses_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "moco.ckpt")])
    assert info.value.code == 2
    assert "-o/--output" in capsys.readouterr().err


def test_the_command_in_a_fresh_process_prints_one_line_without_traceback(tmp_path):
    path = bad_file(tmp_path, "random bytes")
    result = subprocess.run(
        [sys.executable, "-m", "infonce.trainer.export", str(path), "-o", str(tmp_path / "b.pt")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert_one_line_error(result.stderr, path)
    assert not (tmp_path / "b.pt").exists()
