"""Any backbone: torchvision models by name, timm models, and nn.Module classes by path, each
built as a (B, F) encoder with SplitBatchNorm, exported and loaded back bit for bit."""

import sys
from functools import partial

import lightning as L
import pytest
import torch
import torchvision
from torch import nn

from infonce import load_backbone
from infonce.trainer.backbones import ConvNet, SplitBatchNorm, build_backbone, split_batchnorms
from infonce.trainer.export import NotABackboneError, export_backbone
from infonce.trainer.linear_probe import LinearProbe
from infonce.trainer.split_batchnorm import SplitBatchNorm1d


class TinyNet(nn.Module):
    """A small user network, built by class_path: conv, BN, pooled to (B, width)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x):
        return self.layers(x)  # (B, width)


TINY_NET = {"class_path": f"{__name__}.TinyNet", "init_args": {"width": 8}}
TINY_VIT = {  # torchvision's VisionTransformer class: named ViTs fix their shape arguments
    "class_path": "torchvision.models.VisionTransformer",
    "init_args": dict(
        image_size=32, patch_size=4, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64
    ),  # fmt: skip
}
TIMM_VIT = dict(img_size=32, patch_size=4, embed_dim=32, depth=1, num_heads=2)
# (spec, backbone_kwargs, F, needs timm)
KINDS = {
    "convnet": ("convnet", {"widths": (8, 16), "stem_width": 4}, 16, False),
    "resnet18": ("resnet18", None, 512, False),
    "mobilenet_v3_small": ("mobilenet_v3_small", None, 1024, False),
    "regnet_x_400mf": ("regnet_x_400mf", None, 400, False),
    "class_path": (TINY_NET, None, 8, False),
    "class_path_kwargs": (TINY_NET, {"width": 6}, 6, False),  # backbone_kwargs over init_args
    "torchvision_vit_class": (TINY_VIT, None, 32, False),
    "timm_resnet18": ("timm:resnet18", None, 512, True),
    "timm_vit": ("timm:vit_tiny_patch16_224", TIMM_VIT, 32, True),
}
EXPORTED = ["convnet", "mobilenet_v3_small", "class_path_kwargs", "torchvision_vit_class",
            "timm_resnet18", "timm_vit"]  # fmt: skip


def kind(name):
    spec, kwargs, dim, needs_timm = KINDS[name]
    if needs_timm:
        pytest.importorskip("timm")
    return spec, kwargs, dim


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_of_backbone_maps_images_to_features_of_its_width(name):
    spec, kwargs, dim = kind(name)
    encoder, width = build_backbone(spec, backbone_kwargs=kwargs)
    assert width == dim
    assert encoder.training  # the measuring forward left the mode alone
    out = encoder(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, dim) and torch.isfinite(out).all()


def test_a_named_vit_takes_its_image_size_in_backbone_kwargs():
    encoder, width = build_backbone("vit_b_16", backbone_kwargs={"image_size": 32})
    assert width == 768
    assert isinstance(encoder.heads.head, nn.Identity)
    assert encoder.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 768)


@pytest.mark.parametrize(("name", "cifar_stem"), [("resnet18", True), ("resnet18", False),
                                                  ("resnet50", True)])  # fmt: skip
def test_resnets_are_built_tensor_for_tensor_as_before_any_backbone(name, cifar_stem):
    """What the previous build_backbone did, by hand: MoCo's golden losses rest on it."""
    torch.manual_seed(0)
    make = getattr(torchvision.models, name)
    before = make(weights=None, norm_layer=partial(SplitBatchNorm, num_splits=8))
    if cifar_stem:
        before.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        before.maxpool = nn.Identity()
    before.fc = nn.Identity()
    after_before = torch.rand(3)  # the random stream after building
    torch.manual_seed(0)
    encoder, _ = build_backbone(name, bn_splits=8, cifar_stem=cifar_stem)
    assert torch.equal(torch.rand(3), after_before)
    assert repr(encoder) == repr(before)
    want, got = before.state_dict(), encoder.state_dict()
    assert list(got) == list(want)  # the same keys in the same order
    for key, tensor in want.items():
        assert torch.equal(got[key], tensor), key
    assert [n for n, _ in encoder.named_parameters()] == [n for n, _ in before.named_parameters()]


def test_convnet_is_built_as_before_any_backbone():
    torch.manual_seed(0)
    before = ConvNet(bn_splits=4)
    torch.manual_seed(0)
    encoder, _ = build_backbone("convnet", bn_splits=4)
    assert repr(encoder) == repr(before)
    pairs = zip(before.state_dict().items(), encoder.state_dict().items(), strict=True)
    for (key, tensor), (key_got, got) in pairs:
        assert key == key_got and torch.equal(got, tensor), key


def test_every_batchnorm2d_of_a_torchvision_model_becomes_a_split_batchnorm():
    plain = torchvision.models.mobilenet_v3_small(weights=None)
    batchnorms = sum(type(m) is nn.BatchNorm2d for m in plain.modules())
    encoder, _ = build_backbone("mobilenet_v3_small", bn_splits=4)
    splits = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(splits) == batchnorms == 34
    assert all(isinstance(m, SplitBatchNorm) and m.num_splits == 4 for m in splits)
    encoder(torch.randn(8, 3, 32, 32)).sum().backward()  # trains with 4 splits
    with pytest.raises(ValueError, match="batch size 6 is not divisible by num_splits=4"):
        encoder(torch.randn(6, 3, 32, 32))


def test_split_batchnorms_keeps_each_batchnorms_settings_and_tensors():
    torch.manual_seed(0)
    inner = nn.Sequential(nn.BatchNorm2d(4, eps=1e-3, momentum=0.2))
    net = nn.Sequential(
        nn.Conv2d(3, 4, 1), inner, nn.BatchNorm2d(4, affine=False), nn.BatchNorm1d(4)
    )
    with torch.no_grad():
        net[1][0].weight.uniform_()
        net[1][0].running_var.uniform_(0.5, 2.0)
    net[2].eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert split_batchnorms(net, 2) == 3  # the BatchNorm1d too (the heads' features)
    bn, plain = net[1][0], net[2]
    assert isinstance(bn, SplitBatchNorm) and (bn.eps, bn.momentum, bn.num_splits) == (1e-3, 0.2, 2)
    assert isinstance(plain, SplitBatchNorm) and not plain.affine and not plain.training
    assert isinstance(net[3], SplitBatchNorm1d) and net[3].num_splits == 2
    assert net.state_dict().keys() == before.keys()
    for key, tensor in before.items():
        assert torch.equal(net.state_dict()[key], tensor), key


def test_cifar_stem_changes_only_the_resnets():
    resnet, _ = build_backbone("resnext50_32x4d", cifar_stem=True)
    assert resnet.conv1.kernel_size == (3, 3) and isinstance(resnet.maxpool, nn.Identity)
    shapes = [{k: v.shape for k, v in build_backbone("mobilenet_v3_small", cifar_stem=stem)[0]
               .state_dict().items()} for stem in (True, False)]  # fmt: skip
    assert shapes[0] == shapes[1]


def test_the_classifier_and_its_dropout_are_removed():
    encoder, width = build_backbone("mobilenet_v3_small")  # Linear, Hardswish, Dropout, Linear
    assert width == 1024
    assert [type(m) for m in encoder.classifier] == [nn.Linear, nn.Hardswish, nn.Identity,
                                                     nn.Identity]  # fmt: skip
    squeezenet, width = build_backbone("squeezenet1_1")  # a 1x1 conv classifier
    assert width == 512
    googlenet, width = build_backbone("googlenet")  # no auxiliary classifiers
    assert width == 1024 and googlenet.aux1 is None
    googlenet(torch.randn(2, 3, 32, 32))  # one tensor in training, not a namedtuple


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("resnet_18", None, r"unknown backbone 'resnet_18': did you mean 'resnet18'.*"
                            r"torchvision.models.list_models.*timm.list_models.*class_path"),
        ("convnett", None, "did you mean 'convnet'"),
        (3, None, "backbone must be a name or a"),
        ({"class_path": "torch.nn.Conv2d", "init_args": {"in_channels": 3, "out_channels": 4,
                                                         "kernel_size": 3}},
         None, r"maps a \(2, 3, 32, 32\) batch to \(2, 4, 30, 30\), not to \(2, F\)"),
        ({"class_path": "os.system"}, None, "'os.system' is not an nn.Module subclass"),
        ({"class_path": "no_such_package.Net"}, None, "cannot import no_such_package"),
        ({"class_path": "torchvision.models.ResNett"}, None, "did you mean 'ResNet'"),
        ({"class_path": "TinyNet"}, None, "must be 'package.module.Class'"),
        ({"class_path": f"{__name__}.TinyNet", "args": {}}, None, "a backbone given as a dict"),
        ("resnet18", {"depth": 3}, "'resnet18' cannot be built with backbone_kwargs.*'depth'"),
        ("vit_b_16", {"patch_size": 4}, "multiple values.*class_path.*VisionTransformer"),
        ("vit_b_16", None, r"does not run on a \(2, 3, 32, 32\) batch.*image_size"),
        ("resnet18", {"weights": "DEFAULT"}, "builds untrained networks"),
    ],
)  # fmt: skip
def test_a_backbone_it_cannot_build_is_a_value_error_saying_why(spec, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        build_backbone(spec, backbone_kwargs=kwargs)
    assert "\n" not in str(info.value)


def test_bn_splits_on_a_backbone_without_batchnorm2d_is_an_error():
    with pytest.raises(ValueError, match="bn_splits=8 .* has none: set bn_splits: 1"):
        build_backbone(TINY_VIT, bn_splits=8)
    build_backbone(TINY_VIT, bn_splits=1)


def test_bn_splits_on_batchnorms_it_cannot_split_is_an_error():
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match=r"cannot be split \(BatchNormAct2d\)"):
        build_backbone("timm:mobilenetv3_small_050", bn_splits=2)


def test_timm_names_are_checked_with_suggestions():
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match="unknown timm model 'resnt18': did you mean 'timm:resnet"):
        build_backbone("timm:resnt18")


def test_a_timm_backbone_without_timm_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ImportError, match=r"timm is not installed: pip install 'infonce\[timm\]'"):
        build_backbone("timm:resnet18")


# ---- export and load_backbone --------------------------------------------------------------


def method_checkpoint(path, spec, kwargs, bn_splits=1) -> nn.Module:
    """A checkpoint laid out as the methods' shared base writes it (``encoder.0.*`` is the
    backbone; the hyperparameters name it), with trained-looking weights; returns the backbone."""
    torch.manual_seed(0)
    backbone, _ = build_backbone(spec, bn_splits=bn_splits, backbone_kwargs=kwargs)
    with torch.no_grad():
        for p in backbone.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        for name, b in backbone.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 2.0)
    hparams = {"backbone": spec, "cifar_stem": True, "backbone_kwargs": kwargs,
               "bn_splits": bn_splits}  # fmt: skip
    state = {f"encoder.0.{k}": v for k, v in backbone.state_dict().items()}
    state["encoder.1.weight"] = torch.zeros(4, 4)  # a projector: not exported
    torch.save({"state_dict": state, "hyper_parameters": hparams, "global_step": 3,
                "ImageDataModule": {"image_size": 32}}, path)  # fmt: skip
    return backbone.eval()


@pytest.mark.parametrize("name", EXPORTED)
def test_each_kind_exports_and_loads_back_bit_for_bit(tmp_path, name):
    spec, kwargs, dim = kind(name)
    backbone = method_checkpoint(tmp_path / "run.ckpt", spec, kwargs)
    data = export_backbone(tmp_path / "run.ckpt", tmp_path / "backbone.pt")
    saved = torch.load(tmp_path / "backbone.pt", weights_only=True)
    want = {"backbone": spec, "cifar_stem": True} | ({"backbone_kwargs": kwargs} if kwargs else {})
    assert saved["architecture"] == data["architecture"] == want
    assert saved["feature_dim"] == dim
    assert saved["state_dict"].keys() == backbone.state_dict().keys()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        reference = backbone(x)
        for path in (tmp_path / "run.ckpt", tmp_path / "backbone.pt"):
            loaded = load_backbone(path)
            assert not loaded.training
            for key, tensor in backbone.state_dict().items():
                assert torch.equal(loaded.state_dict()[key], tensor), key
            assert torch.equal(loaded(x), reference)


def test_a_file_written_before_backbone_kwargs_still_loads(tmp_path):
    backbone = ConvNet().eval()
    torch.save({"format": "infonce-backbone", "version": 1,
                "architecture": {"backbone": "convnet", "cifar_stem": True}, "feature_dim": 128,
                "state_dict": backbone.state_dict(), "preprocessing": {},
                "source": {"checkpoint": "x", "global_step": 1, "epoch": 0}},
               tmp_path / "old.pt")  # fmt: skip
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_backbone(tmp_path / "old.pt")(x), backbone(x))


def test_split_batchnorms_of_the_run_load_as_one_split(tmp_path):
    backbone = method_checkpoint(tmp_path / "run.ckpt", "mobilenet_v3_small", None, bn_splits=4)
    loaded = load_backbone(tmp_path / "run.ckpt")
    assert {m.num_splits for m in loaded.modules() if isinstance(m, SplitBatchNorm)} == {1}
    x = torch.randn(3, 3, 32, 32)  # an odd batch: fine in eval
    with torch.no_grad():
        assert torch.equal(loaded(x), backbone(x))


def test_a_timm_backbone_without_timm_is_refused_naming_the_file(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    method_checkpoint(tmp_path / "run.ckpt", "timm:resnet18", None)
    monkeypatch.setitem(sys.modules, "timm", None)
    message = "run.ckpt records backbone 'timm:resnet18', which this infonce does not build: timm"
    with pytest.raises(NotABackboneError, match=message + " is not installed") as info:
        load_backbone(tmp_path / "run.ckpt")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["torchvision_vit_class", "timm_vit"])
def test_the_linear_probe_builds_on_any_backbone_and_loads_without_its_source(tmp_path, name):
    spec, kwargs, dim = kind(name)
    method_checkpoint(tmp_path / "run.ckpt", spec, kwargs)
    export_backbone(tmp_path / "run.ckpt", tmp_path / "backbone.pt")
    probe = LinearProbe(str(tmp_path / "backbone.pt"), num_classes=3)
    assert probe.classifier[1].in_features == dim
    assert probe(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_steps=0)
    trainer.strategy.connect(probe)
    trainer.save_checkpoint(tmp_path / "probe.ckpt")
    (tmp_path / "backbone.pt").unlink()  # rebuilt from the architecture the probe recorded
    restored = LinearProbe.load_from_checkpoint(tmp_path / "probe.ckpt", weights_only=True)
    assert restored.hparams.architecture == probe.hparams.architecture
    for key, tensor in probe.state_dict().items():
        assert torch.equal(restored.state_dict()[key], tensor), key
