"""Encoders for the trainer: any torchvision classification model, timm model or
``nn.Module`` class by path (:func:`build_backbone`), and a small fast convnet for CPUs.

Every BatchNorm2d is a :class:`SplitBatchNorm`, which normalises equal chunks of the batch
separately, as per-GPU BatchNorm does on several devices. MoCo relies on per-device
statistics: over the whole batch, a query and its key could find each other through the batch
statistics, an easier task that does not improve the features (the paper's "shuffling BN"
then puts a query and its key on different devices). facebookresearch/moco's CIFAR demo
emulates 8 devices on one GPU with 8 splits.

Measured on 2 CPU cores (AMD EPYC, torch 2.14, float32), one forward + backward of a batch of
256 RGB 32x32 images: ``convnet`` 0.22 s, ``resnet18`` (CIFAR stem) about 25 s; with
``bn_splits=8`` the same within 3%.
"""

import difflib
import importlib
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models import ResNet

from infonce._checks import check_int
from infonce.trainer.split_batchnorm import (
    SPLIT_KINDS,
    SplitBatchNorm,
    split_batchnorms,
)


class ConvNet(nn.Module):
    """Small fast convnet for 32x32 images on CPUs, after KellerJordan's airbench.

    A 3x3 stride-2 conv stem (+ BN, GELU), then one block per entry of ``widths``: ``conv 3x3
    -> maxpool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU``, each halving the resolution, then
    global average pooling. The stride-2 stem is what makes it fast on CPUs: with the defaults,
    ~6 M multiply-adds per 32x32 image. Inputs of 16x16 and larger work (three blocks reduce
    16x16 to 1x1); 32x32 is what the defaults are sized for.

    Args:
        widths: output channels of each block; the feature dimension is ``widths[-1]``.
        stem_width: output channels of the stem conv.
        bn_splits: ``num_splits`` of every :class:`SplitBatchNorm`.

    Shape:
        input (B, 3, H, W) float, H, W >= 16 (with three blocks); output (B, widths[-1]).

    Raises:
        ValueError: empty ``widths`` or a width < 1.

    Examples:
        >>> ConvNet()(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 128])
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128),
        stem_width: int = 16,
        bn_splits: int = 1,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if not widths or any(w < 1 for w in (*widths, stem_width)):
            raise ValueError(
                f"widths and stem_width must be >= 1 and widths non-empty, "
                f"got widths={widths}, stem_width={stem_width}"
            )
        norm = partial(SplitBatchNorm, num_splits=bn_splits)
        layers: list[nn.Module] = [_conv(3, stem_width, stride=2), norm(stem_width), nn.GELU()]
        width_in = stem_width
        for width in widths:
            layers += [
                _conv(width_in, width),
                nn.MaxPool2d(2),
                norm(width),
                nn.GELU(),
                _conv(width, width),
                norm(width),
                nn.GELU(),
            ]
            width_in = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.layers = nn.Sequential(*layers)
        self.num_features = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)  # (B, F)


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def build_backbone(
    spec: str | Mapping[str, Any],
    bn_splits: int = 1,
    cifar_stem: bool = True,
    backbone_kwargs: Mapping[str, Any] | None = None,
    image_size: int | None = None,
) -> tuple[nn.Module, int]:
    """Build a randomly initialised encoder that maps images to feature vectors.

    ``spec`` is one of:

    - ``"convnet"``: :class:`ConvNet`, ``F`` = 128 with its defaults (``backbone_kwargs``
      are its arguments: ``widths``, ``stem_width``).
    - a torchvision classification model by name, any of
      ``torchvision.models.list_models(module=torchvision.models)``: built with
      ``torchvision.models.get_model(name, weights=None, **backbone_kwargs)``, its classifier
      (the last ``nn.Linear``, or 1x1 conv, with ``num_classes`` outputs) and the dropout just
      before it replaced by ``nn.Identity``, so ``F`` is what the classifier read (VGG and
      AlexNet: 4096). GoogLeNet and Inception v3 are built without their
      auxiliary classifiers. A named model fixes its shape arguments (``vit_b_16``'s
      ``patch_size``, ``hidden_dim``, ...); to choose them, build the class by ``class_path``
      (``torchvision.models.VisionTransformer``).
    - ``"timm:<name>"``, ``<name>`` any of ``timm.list_models()`` (needs ``pip install
      'infonce[timm]'``): ``timm.create_model(name, pretrained=False, num_classes=0,
      **backbone_kwargs)``.
    - ``{"class_path": "package.module.Class", "init_args": {...}}``: any ``nn.Module``
      subclass, built with ``init_args`` updated by ``backbone_kwargs``. It must map images to
      (B, F) features itself (a timm class: ``num_classes=0``), except a class of torchvision's
      classification models (``torchvision.models.VisionTransformer``, ``ResNet``...), which
      is treated as a named one: stem and classifier as below.

    ``F`` is read off one forward of a (2, 3, S, S) batch of zeros in eval mode, which also
    checks that the encoder gives (B, F). ``S`` is ``image_size``, else ``image_size`` or
    ``img_size`` in the arguments (a ViT's input size is fixed at construction), else 32.

    ``cifar_stem`` applies to the torchvision ResNets (``resnet*``, ``resnext*``,
    ``wide_resnet*``, the class ``ResNet``): their 7x7 stride-2 conv1 becomes a fresh 3x3
    stride-1 conv (PyTorch's default init, drawn after the model's own) and the max-pool goes,
    the CIFAR variant of the MoCo CIFAR demo. Every other backbone keeps its stem and ignores
    the flag, which is on by default: ``convnet`` is CIFAR-sized already, a ViT's patch size is
    its own argument, and timm's ResNets have stems of several kinds.

    Every ``nn.BatchNorm2d`` becomes a :class:`SplitBatchNorm` with ``num_splits=bn_splits``
    (:func:`split_batchnorms`; with one split it is BatchNorm2d, same keys). ``bn_splits > 1``
    is an error for a backbone it would not reach: one without BatchNorm2d (a ViT, ConvNeXt),
    or with other BatchNorms that it cannot split (timm's ``BatchNormAct2d``), since their
    statistics over the whole batch are what the splits are there to prevent.

    Args:
        spec: the backbone, as above.
        bn_splits: chunks each BatchNorm splits a training batch into, >= 1.
        cifar_stem: use the CIFAR stem for the torchvision ResNets.
        backbone_kwargs: more arguments of the backbone's constructor.
        image_size: side ``S`` of the batch that measures ``F``; None as above.

    Returns:
        ``(encoder, F)``: the encoder, in training mode, and its feature dimension.

    Shape:
        encoder input (B, 3, H, W) float; output (B, F) float. ``B`` must be divisible by
        ``bn_splits`` in training.

    Raises:
        ValueError: an unknown name (the message suggests close ones and says where the valid
            ones are listed), a ``class_path`` that does not import or is not an ``nn.Module``,
            arguments the constructor does not take, an encoder that fails on or does not give
            (2, F) for the (2, 3, S, S) batch, ``bn_splits`` < 1 or not applicable as above.
        ImportError: ``timm:<name>`` without timm installed.

    Examples:
        >>> encoder, dim = build_backbone("resnet18", bn_splits=8)
        >>> encoder(torch.randn(8, 3, 32, 32)).shape, dim
        (torch.Size([8, 512]), 512)
        >>> build_backbone("mobilenet_v3_small")[1]
        1024
    """
    check_int(bn_splits, "bn_splits")
    if image_size is not None:
        check_int(image_size, "image_size")
    if backbone_kwargs is not None and not isinstance(backbone_kwargs, Mapping):
        raise ValueError(f"backbone_kwargs must be a dict, got {backbone_kwargs!r}")
    kwargs = dict(backbone_kwargs or {})
    if isinstance(spec, Mapping):
        label = repr(spec.get("class_path"))
        kwargs = {**_init_args(spec), **kwargs}
        encoder = _from_class_path(spec["class_path"], kwargs, cifar_stem)
    elif not isinstance(spec, str):
        raise ValueError(f"backbone must be a name or a {{'class_path': ..., 'init_args': ...}} "
                         f"dict, got {spec!r}")  # fmt: skip
    else:
        label = repr(spec)
        if any(key in kwargs for key in _WEIGHT_ARGUMENTS):
            raise ValueError(f"backbone_kwargs {kwargs}: build_backbone builds untrained networks, "
                             f"so it takes none of {', '.join(_WEIGHT_ARGUMENTS)}")  # fmt: skip
        if spec == "convnet":
            encoder = _construct(ConvNet, kwargs, label)
        elif spec.startswith(TIMM_PREFIX):
            encoder = _from_timm(spec[len(TIMM_PREFIX) :], kwargs)
        else:
            encoder = _from_torchvision(spec, kwargs, cifar_stem)
    _check_splits(encoder, bn_splits, split_batchnorms(encoder, bn_splits), label)
    side = image_size or next((kwargs[k] for k in ("image_size", "img_size")
                               if isinstance(kwargs.get(k), int)), 32)  # fmt: skip
    return encoder, _feature_dim(encoder, side, label)


TIMM_PREFIX = "timm:"
# torchvision's keyword defaults that add outputs a backbone does not give: GoogLeNet's and
# Inception's auxiliary classifiers (and their init, said so that it is not warned about)
_TORCHVISION_DEFAULTS = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}
# arguments that would load weights: refused, also so that a weights-only file cannot name one
_WEIGHT_ARGUMENTS = ("weights", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay",
                     "checkpoint_path")  # fmt: skip


def _check_splits(encoder: nn.Module, bn_splits: int, splits: int, label: str) -> None:
    if bn_splits == 1:
        return
    unsplit = (m for m in encoder.modules() if isinstance(m, _BatchNorm))
    others = sorted({type(m).__name__ for m in unsplit if not isinstance(m, SPLIT_KINDS)})
    if others:
        raise ValueError(f"bn_splits={bn_splits}: backbone {label} has BatchNorm layers that "
                         f"cannot be split ({', '.join(others)}); choose a backbone whose "
                         "BatchNorms are nn.BatchNorm2d, or set bn_splits: 1")  # fmt: skip
    if splits == 0:
        raise ValueError(f"bn_splits={bn_splits} splits BatchNorm2d layers, but backbone {label} "
                         "has none: set bn_splits: 1")  # fmt: skip


def _from_torchvision(name: str, kwargs: dict[str, Any], cifar_stem: bool) -> nn.Module:
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise ValueError(_unknown(name, ["convnet", *names]))
    kwargs = {**_TORCHVISION_DEFAULTS.get(name, {}), **kwargs}
    make = partial(torchvision.models.get_model, name, weights=None)
    return _as_backbone(_construct(make, kwargs, repr(name)), kwargs, cifar_stem)


def _is_torchvision_classifier(model: nn.Module) -> bool:
    """A model of torchvision's classification families (``torchvision.models.resnet``...),
    not of its subpackages (detection, segmentation, quantization, ...)."""
    module = type(model).__module__
    return module.startswith("torchvision.models.") and module.count(".") == 2


def _as_backbone(model: nn.Module, kwargs: dict[str, Any], cifar_stem: bool) -> nn.Module:
    """A torchvision classification model as a backbone: the CIFAR stem (ResNets), no head."""
    if cifar_stem and isinstance(model, ResNet):  # as the MoCo CIFAR demo: PyTorch's default init
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1,
                                bias=False)  # fmt: skip
        model.maxpool = nn.Identity()
    _remove_classifier(model, kwargs.get("num_classes", 1000))
    return model


def _remove_classifier(model: nn.Module, num_classes: int) -> None:
    """Replace the last ``nn.Linear`` (or 1x1 conv: SqueezeNet) with ``num_classes`` outputs,
    and the dropout just before it in the same ``nn.Sequential``, by ``nn.Identity``."""
    heads = [path for path, m in model.named_modules()
             if (isinstance(m, nn.Linear) and m.out_features == num_classes)
             or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
                 and m.out_channels == num_classes)]  # fmt: skip
    if not heads:
        raise ValueError(f"cannot find the classifier of {type(model).__name__}: no nn.Linear or "
                         f"1x1 conv with num_classes={num_classes} outputs")  # fmt: skip
    parent_path, _, attr = heads[-1].rpartition(".")
    parent = model.get_submodule(parent_path)
    setattr(parent, attr, nn.Identity())
    if isinstance(parent, nn.Sequential):
        names = list(parent._modules)
        for before in reversed(names[: names.index(attr)]):
            if not isinstance(parent._modules[before], nn.Dropout):
                break
            setattr(parent, before, nn.Identity())


def _from_timm(name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ImportError(f"timm is not installed: pip install 'infonce[timm]' (for backbone "
                          f"'{TIMM_PREFIX}{name}')") from None  # fmt: skip
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = (
            f"did you mean {' or '.join(repr(TIMM_PREFIX + c) for c in close)}? " if close else ""
        )
        raise ValueError(f"unknown timm model {name!r}: {hint}the names are timm.list_models(), "
                         f"given as '{TIMM_PREFIX}<name>'")  # fmt: skip
    create = partial(timm.create_model, name, pretrained=False, num_classes=0)
    return _construct(create, kwargs, repr(TIMM_PREFIX + name))


def _init_args(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The ``init_args`` of a ``{"class_path", "init_args"}`` dict, its form checked."""
    init_args = spec.get("init_args") or {}
    if (not isinstance(spec.get("class_path"), str) or set(spec) - {"class_path", "init_args"}
            or not isinstance(init_args, Mapping)):  # fmt: skip
        raise ValueError("a backbone given as a dict is {'class_path': 'package.module.Class', "
                         f"'init_args': {{...}}}}, got {dict(spec)!r}")  # fmt: skip
    return dict(init_args)


def _from_class_path(class_path: str, kwargs: dict[str, Any], cifar_stem: bool) -> nn.Module:
    """An instance of the ``nn.Module`` subclass ``class_path`` names (nothing else is called);
    a torchvision classification model's as a named one's: CIFAR stem, no classifier."""
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name:
        raise ValueError(f"class_path {class_path!r} must be 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"class_path {class_path!r}: cannot import {module_name}: {err}") from err
    cls = getattr(module, class_name, None)
    if cls is None:
        close = difflib.get_close_matches(class_name, dir(module), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise ValueError(f"class_path {class_path!r}: {module_name} has no {class_name!r}{hint}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"class_path {class_path!r} is not an nn.Module subclass, it is "
                         f"{type(cls).__name__} {cls!r}")  # fmt: skip
    model = _construct(cls, kwargs, repr(class_path))
    return _as_backbone(model, kwargs, cifar_stem) if _is_torchvision_classifier(model) else model


def _construct(make: Callable[..., Any], kwargs: dict[str, Any], label: str):
    """``make(**kwargs)``; what the constructor raises said as the ValueError of a bad config
    (naming the backbone and its arguments), except an ImportError (a missing package)."""
    try:
        return make(**kwargs)
    except ImportError:
        raise
    except Exception as err:  # a TypeError, or whatever a constructor checks with
        hint = "" if "multiple values" not in str(err) else (
            " (a named model fixes its shape arguments; to set them, build its class by "
            "class_path, e.g. 'torchvision.models.VisionTransformer')"
        )  # fmt: skip
        raise ValueError(f"backbone {label} cannot be built with backbone_kwargs {kwargs}: "
                         f"{_one_line(err)}{hint}") from err  # fmt: skip


def _feature_dim(encoder: nn.Module, side: int, label: str) -> int:
    """``F`` of ``encoder``: one forward of a (2, 3, S, S) batch of zeros in eval mode, without
    gradients; every module's mode is put back."""
    modes = [(m, m.training) for m in encoder.modules()]
    tensor = next(encoder.parameters(), None)
    where = {} if tensor is None else {"device": tensor.device, "dtype": tensor.dtype}
    encoder.eval()
    try:
        with torch.no_grad():
            out = encoder(torch.zeros(2, 3, side, side, **where))
    except Exception as err:  # whatever the model raises: the config does not fit it
        raise ValueError(
            f"backbone {label} does not run on a (2, 3, {side}, {side}) batch: "
            f"{_one_line(err)}. A model built for one input size takes it in backbone_kwargs "
            "(image_size for a torchvision ViT, img_size for timm); one that needs larger "
            "images, a larger image_size"
        ) from err
    finally:
        for module, training in modes:
            module.training = training
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 2 or out.shape[1] < 1:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"backbone {label} maps a (2, 3, {side}, {side}) batch to {got}, not to "
                         "(2, F) features; end it with pooling and a flatten")  # fmt: skip
    return int(out.shape[1])


def _unknown(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    return (
        f"unknown backbone {name!r}: {hint}a backbone is 'convnet', a torchvision "
        "classification model (torchvision.models.list_models(module=torchvision.models), "
        "e.g. 'resnet18'), 'timm:<name>' for a name in timm.list_models(), or "
        "{'class_path': 'package.module.Class', 'init_args': {...}}"
    )


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
