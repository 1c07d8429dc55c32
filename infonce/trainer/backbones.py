"""Encoders for a MoCo trainer on CIFAR: CIFAR-stem ResNets and a small fast convnet.

Every BatchNorm is a :class:`SplitBatchNorm`, which normalises equal chunks of the batch
separately, as per-GPU BatchNorm does on several devices. MoCo relies on per-device
statistics: over the whole batch, a query and its key could find each other through the batch
statistics, an easier task that does not improve the features (the paper's "shuffling BN"
then puts a query and its key on different devices). facebookresearch/moco's CIFAR demo
emulates 8 devices on one GPU with 8 splits.

Measured on 2 CPU cores (AMD EPYC, torch 2.14, float32), one forward + backward of a batch of
256 RGB 32x32 images: ``convnet`` 0.22 s, ``resnet18`` (CIFAR stem) about 25 s; with
``bn_splits=8`` the same within 3%.
"""

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50

from infonce._checks import check_int

BACKBONES = ("resnet18", "resnet50", "convnet")
FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048, "convnet": 128}  # F of each, as built here


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises ``num_splits`` chunks of the batch separately.

    Chunk ``j`` is the contiguous slice ``input[j * N // s : (j + 1) * N // s]`` (as
    ``input.chunk(s)`` gives), the batch one of ``s`` devices would see. Each chunk is
    normalised with its own mean and variance; the learnable ``weight`` and ``bias`` are shared.
    One set of running statistics is kept: each update moves it towards the average of the
    chunks' statistics with the usual ``momentum``. In eval mode (or with ``num_splits=1``) it is
    exactly :class:`torch.nn.BatchNorm2d`, and its ``state_dict`` has the same keys, so
    checkpoints move freely between the two.

    Args:
        num_features: channels ``C``.
        num_splits: number of chunks ``s`` the batch is split into in training, >= 1.
        **kwargs: ``eps``, ``momentum``, ``affine``, ``track_running_stats``, ``device``,
            ``dtype``, as for :class:`torch.nn.BatchNorm2d`.

    Shape:
        input (N, C, H, W) float, N divisible by ``num_splits`` in training; output (N, C, H, W).

    Raises:
        ValueError: ``num_splits < 1`` at construction; in training, a batch size ``N`` that
            ``num_splits`` does not divide.

    Examples:
        >>> bn = SplitBatchNorm(16, num_splits=8)
        >>> bn(torch.randn(32, 16, 8, 8)).shape
        torch.Size([32, 16, 8, 8])
    """

    def __init__(self, num_features: int, num_splits: int = 1, **kwargs) -> None:
        check_int(num_splits, "num_splits")
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, input: Tensor) -> Tensor:
        s = self.num_splits
        if not self.training or s == 1:
            return super().forward(input)
        self._check_input_dim(input)
        N, C, H, W = input.shape
        if N % s != 0:
            raise ValueError(
                f"batch size {N} is not divisible by num_splits={s}: SplitBatchNorm needs "
                "equal chunks in training"
            )

        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as BatchNorm2d does
                momentum = 1.0 / float(self.num_batches_tracked)

        # Chunk j of the batch becomes channels [j*C, (j+1)*C) of one batch of N/s samples, so
        # one batch_norm call normalises every chunk with its own statistics. The regrouping is
        # done in the input's memory layout, so channels_last stays channels_last.
        x = _splits_to_channels(input, s)  # (N/s, s*C, H, W)
        running_mean = _repeat(self.running_mean, s)  # (s*C,) or None
        running_var = _repeat(self.running_var, s)  # (s*C,) or None
        out = F.batch_norm(
            x,
            running_mean,
            running_var,
            _repeat(self.weight, s),
            _repeat(self.bias, s),
            training=True,
            momentum=momentum,
            eps=self.eps,
        )  # (N/s, s*C, H, W)
        if running_mean is not None:
            with torch.no_grad():
                self.running_mean.copy_(running_mean.view(s, C).mean(dim=0))
                self.running_var.copy_(running_var.view(s, C).mean(dim=0))
        return _channels_to_splits(out, s)  # (N, C, H, W)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"


def _repeat(x: Tensor | None, s: int) -> Tensor | None:
    return None if x is None else x.repeat(s)


def _splits_to_channels(x: Tensor, s: int) -> Tensor:
    """(N, C, H, W) -> (N/s, s*C, H, W): chunk j of the batch moves to channels [jC, (j+1)C).

    One copy, in the layout of ``x``: a channels_last input gives a channels_last output.
    """
    N, C, H, W = x.shape
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return x.reshape(s, N // s, C, H, W).transpose(0, 1).reshape(N // s, s * C, H, W)
    nhwc = x.permute(0, 2, 3, 1)  # (N, H, W, C), a view of the channels_last storage
    y = nhwc.reshape(s, N // s, H, W, C).permute(1, 2, 3, 0, 4).reshape(N // s, H, W, s * C)
    return y.permute(0, 3, 1, 2)  # (N/s, s*C, H, W), channels_last


def _channels_to_splits(y: Tensor, s: int) -> Tensor:
    """Inverse of :func:`_splits_to_channels`, again in the layout of ``y``."""
    M, sC, H, W = y.shape
    C = sC // s
    if y.is_contiguous() or not y.is_contiguous(memory_format=torch.channels_last):
        return y.reshape(M, s, C, H, W).transpose(0, 1).reshape(M * s, C, H, W)
    nhwc = y.permute(0, 2, 3, 1)  # (N/s, H, W, s*C)
    x = nhwc.reshape(M, H, W, s, C).permute(3, 0, 1, 2, 4).reshape(M * s, H, W, C)
    return x.permute(0, 3, 1, 2)  # (N, C, H, W), channels_last


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


def build_backbone(name: str, bn_splits: int = 1, cifar_stem: bool = True) -> tuple[nn.Module, int]:
    """Build a randomly initialised encoder that maps images to feature vectors.

    - ``"resnet18"`` / ``"resnet50"``: torchvision ResNets (``weights=None``) with ``fc``
      replaced by ``nn.Identity()``; ``F`` = 512 / 2048. With ``cifar_stem`` the 7x7 stride-2
      conv1 becomes a 3x3 stride-1 conv and the max-pool is removed (the CIFAR variant of the
      MoCo CIFAR demo); without it, the ImageNet stem is kept.
    - ``"convnet"``: :class:`ConvNet` with its defaults, ``F`` = 128; ``cifar_stem`` is
      ignored (it is always a CIFAR-sized net).

    Every BatchNorm is a :class:`SplitBatchNorm` with ``num_splits=bn_splits``.

    Args:
        name: one of :data:`BACKBONES`.
        bn_splits: chunks each BatchNorm splits a training batch into, >= 1.
        cifar_stem: use the CIFAR stem for the ResNets.

    Returns:
        ``(encoder, F)``: the encoder and its feature dimension.

    Shape:
        encoder input (B, 3, H, W) float; output (B, F) float. ``B`` must be divisible by
        ``bn_splits`` in training.

    Raises:
        ValueError: ``name`` not in :data:`BACKBONES`, or ``bn_splits < 1``.

    Examples:
        >>> encoder, dim = build_backbone("resnet18", bn_splits=8)
        >>> encoder(torch.randn(8, 3, 32, 32)).shape, dim
        (torch.Size([8, 512]), 512)
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")
    check_int(bn_splits, "bn_splits")
    if name == "convnet":
        encoder = ConvNet(bn_splits=bn_splits)
        return encoder, encoder.num_features

    make, dim = {"resnet18": resnet18, "resnet50": resnet50}[name], FEATURE_DIMS[name]
    encoder = make(weights=None, norm_layer=partial(SplitBatchNorm, num_splits=bn_splits))
    if cifar_stem:  # as the MoCo CIFAR demo: a fresh conv with PyTorch's default init
        encoder.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        encoder.maxpool = nn.Identity()
    encoder.fc = nn.Identity()
    return encoder, dim


def projection_head(
    in_dim: int, out_dim: int, kind: str, hidden_dim: int | None = None
) -> nn.Module:
    """MoCo v1's linear head, or v2's two-layer MLP ``Linear-ReLU-Linear``."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":
        hidden_dim = hidden_dim or in_dim
        return nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
        )
    raise ValueError(f"head must be 'linear' or 'mlp', got {kind!r}")
