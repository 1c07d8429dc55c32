"""The backbone taken out of a MoCo checkpoint: a weights-only file, torchvision-compatible."""

import lightning as L
import pytest
import torch
import torchvision
from torch import nn

from infonce import load_backbone
from infonce.trainer.export import export_backbone, main
from infonce.trainer.linear_probe import LinearProbe
from infonce.trainer.moco import MoCo


def moco_checkpoint(path, **model_args) -> MoCo:
    """A MoCo checkpoint as Lightning writes its model part (state_dict, hyperparameters)."""
    model = MoCo(**({"queue_size": 64} | model_args))
    with torch.no_grad():
        for p in model.encoder.parameters():  # not the initialisation: any trained values
            p.add_(torch.randn_like(p) * 0.01)
        for name, b in model.encoder.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 2.0)
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "global_step": 7,
        "epoch": 1,
        "ImageDataModule": {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3},
    }
    torch.save(checkpoint, path)
    return model


def test_export_keeps_only_the_query_backbone_in_a_weights_only_file(tmp_path):
    model = moco_checkpoint(tmp_path / "moco.ckpt", backbone="convnet")
    data = export_backbone(tmp_path / "moco.ckpt", tmp_path / "backbone.pt")
    loaded = torch.load(tmp_path / "backbone.pt", weights_only=True)
    assert loaded.keys() == data.keys()
    assert loaded["architecture"] == {"backbone": "convnet", "cifar_stem": True}
    assert loaded["feature_dim"] == 128
    assert loaded["preprocessing"] == {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    assert loaded["source"]["global_step"] == 7
    expected = model.encoder[0].state_dict()
    assert loaded["state_dict"].keys() == expected.keys()  # no head, no momentum encoder, no queue
    for key, tensor in expected.items():
        assert torch.equal(loaded["state_dict"][key], tensor), key


@pytest.mark.parametrize("source", ["checkpoint", "export"])
def test_load_backbone_gives_the_trained_features_in_eval_mode(tmp_path, source):
    model = moco_checkpoint(tmp_path / "moco.ckpt", backbone="convnet", bn_splits=4)
    export_backbone(tmp_path / "moco.ckpt", tmp_path / "backbone.pt")
    path = tmp_path / ("moco.ckpt" if source == "checkpoint" else "backbone.pt")
    backbone = load_backbone(path)
    assert not backbone.training
    x = torch.randn(5, 3, 32, 32)  # an odd batch: plain BatchNorm, no splits
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), model.encoder[0](x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cifar_stem", [True, False])
def test_resnet_keys_load_into_torchvisions_resnet18(tmp_path, cifar_stem):
    model = moco_checkpoint(tmp_path / "moco.ckpt", backbone="resnet18", cifar_stem=cifar_stem)
    state = export_backbone(tmp_path / "moco.ckpt", tmp_path / "backbone.pt")["state_dict"]
    resnet = torchvision.models.resnet18()
    resnet.fc = nn.Identity()
    if cifar_stem:
        resnet.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        resnet.maxpool = nn.Identity()
    resnet.load_state_dict(state)  # strict
    resnet.eval(), model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(resnet(x), model.encoder[0](x), rtol=1e-5, atol=1e-5)


def test_a_file_that_is_no_moco_checkpoint_is_a_clear_error(tmp_path):
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 0.1}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="neither a MoCo checkpoint"):
        load_backbone(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_backbone(tmp_path / "missing.ckpt")


def test_the_command_line_writes_the_file_and_reports_errors(tmp_path, capsys):
    moco_checkpoint(tmp_path / "moco.ckpt", backbone="convnet")
    assert main([str(tmp_path / "moco.ckpt"), "-o", str(tmp_path / "out" / "b.pt")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "out" / "b.pt").is_file()
    assert main([str(tmp_path / "missing.ckpt"), "-o", str(tmp_path / "b.pt")]) == 1
    assert "error: checkpoint not found" in capsys.readouterr().err


def test_a_probe_checkpoint_loads_after_its_moco_checkpoint_was_moved(tmp_path):
    moco_checkpoint(tmp_path / "moco.ckpt", backbone="convnet")
    probe = LinearProbe(str(tmp_path / "moco.ckpt"), num_classes=3)
    assert probe.hparams.architecture == {"backbone": "convnet", "cifar_stem": True}
    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_steps=0)
    trainer.strategy.connect(probe)
    trainer.save_checkpoint(tmp_path / "probe.ckpt")
    (tmp_path / "moco.ckpt").rename(tmp_path / "elsewhere.ckpt")
    restored = LinearProbe.load_from_checkpoint(tmp_path / "probe.ckpt", weights_only=True)
    for key, tensor in probe.state_dict().items():
        assert torch.equal(restored.state_dict()[key], tensor), key


@pytest.mark.parametrize(
    "backbone_args",
    [
        {"backbone": "mobilenet_v3_small"},
        {"backbone": {"class_path": "torchvision.models.VisionTransformer",
                      "init_args": {"image_size": 32, "patch_size": 8, "num_layers": 1,
                                    "num_heads": 2, "mlp_dim": 16}},
         "backbone_kwargs": {"hidden_dim": 8}, "bn_splits": 1},
    ],
    ids=["torchvision", "class_path"],
)  # fmt: skip
def test_a_moco_of_any_backbone_exports_its_architecture_and_loads_back(tmp_path, backbone_args):
    model = moco_checkpoint(tmp_path / "moco.ckpt", **backbone_args)
    data = export_backbone(tmp_path / "moco.ckpt", tmp_path / "backbone.pt")
    kwargs = backbone_args.get("backbone_kwargs")
    assert data["architecture"] == {"backbone": backbone_args["backbone"], "cifar_stem": True,
                                    **({"backbone_kwargs": kwargs} if kwargs else {})}  # fmt: skip
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    with torch.no_grad():  # close, not equal: MoCo's networks run channels_last
        want = model.encoder[0](x)
        torch.testing.assert_close(load_backbone(tmp_path / "backbone.pt")(x), want)
