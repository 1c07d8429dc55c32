"""BatchNorm that normalises equal chunks of a training batch separately, as per-device
BatchNorm does on several devices, so that one process can train as R processes would:
:class:`SplitBatchNorm` (images), :class:`SplitBatchNorm1d` (the heads' features), and
:func:`split_batchnorms`, which puts them in any network.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from infonce._checks import check_int

__all__ = ["SPLIT_KINDS", "SplitBatchNorm", "SplitBatchNorm1d", "split_batchnorms"]


class _Splits:
    """What both split BatchNorms add to torch's: ``num_splits``, checked, and in the repr."""

    def __init__(self, num_features: int, num_splits: int = 1, **kwargs) -> None:
        check_int(num_splits, "num_splits")
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"


class SplitBatchNorm(_Splits, nn.BatchNorm2d):
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

    def forward(self, input: Tensor) -> Tensor:
        s = self.num_splits
        if not self.training or s == 1:
            return super().forward(input)
        self._check_input_dim(input)
        _check_divisible(input.shape[0], s)
        # Chunk j of the batch becomes channels [j*C, (j+1)*C) of one batch of N/s samples, so
        # one batch_norm call normalises every chunk with its own statistics. The regrouping is
        # done in the input's memory layout, so channels_last stays channels_last.
        x = _splits_to_channels(input, s)  # (N/s, s*C, H, W)
        out = _split_batch_norm(self, x, s)  # (N/s, s*C, H, W)
        return _channels_to_splits(out, s)  # (N, C, H, W)


def _check_divisible(N: int, s: int) -> None:
    if N % s != 0:
        raise ValueError(
            f"batch size {N} is not divisible by num_splits={s}: SplitBatchNorm needs "
            "equal chunks in training"
        )


def _split_batch_norm(bn: nn.BatchNorm1d | nn.BatchNorm2d, x: Tensor, s: int) -> Tensor:
    """Training-mode batch norm of ``x`` (N/s, s*C, ...), whose channel block j is chunk j
    of the batch, with ``bn``'s parameters repeated per block; ``bn``'s running statistics
    move towards the average of the chunks' statistics with its momentum."""
    C = bn.num_features
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average, as BatchNorm does
            momentum = 1.0 / float(bn.num_batches_tracked)
    running_mean = _repeat(bn.running_mean, s)  # (s*C,) or None
    running_var = _repeat(bn.running_var, s)  # (s*C,) or None
    out = F.batch_norm(
        x, running_mean, running_var, _repeat(bn.weight, s), _repeat(bn.bias, s),
        training=True, momentum=momentum, eps=bn.eps,
    )  # fmt: skip
    if running_mean is not None:
        with torch.no_grad():
            bn.running_mean.copy_(running_mean.view(s, C).mean(dim=0))
            bn.running_var.copy_(running_var.view(s, C).mean(dim=0))
    return out


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


class SplitBatchNorm1d(_Splits, nn.BatchNorm1d):
    """:class:`SplitBatchNorm` for the (N, C) features of projectors and predictors: in
    training, ``num_splits`` contiguous chunks of the batch are normalised separately, as the
    heads' BatchNorm does on ``s`` devices without SyncBatchNorm. Same arguments, running
    statistics and ``state_dict`` keys as :class:`torch.nn.BatchNorm1d`; in eval mode (or
    with ``num_splits=1``, or a (N, C, L) input) it is exactly that.

    Shape:
        input (N, C), N divisible by ``num_splits`` in training; output (N, C).

    Raises:
        ValueError: ``num_splits < 1`` at construction; in training, a batch size ``N`` that
            ``num_splits`` does not divide.
    """

    def forward(self, input: Tensor) -> Tensor:
        s = self.num_splits
        if not self.training or s == 1 or input.dim() != 2:
            return super().forward(input)
        N, C = input.shape
        _check_divisible(N, s)
        x = input.reshape(s, N // s, C).transpose(0, 1).reshape(N // s, s * C)  # block j: chunk j
        out = _split_batch_norm(self, x, s)  # (N/s, s*C)
        return out.reshape(N // s, s, C).transpose(0, 1).reshape(N, C)


SPLIT_KINDS = (SplitBatchNorm, SplitBatchNorm1d)


def split_batchnorms(module: nn.Module, num_splits: int) -> int:
    """Make every ``nn.BatchNorm2d`` in ``module`` a :class:`SplitBatchNorm` and every
    ``nn.BatchNorm1d`` a :class:`SplitBatchNorm1d` of ``num_splits``, in place: the same
    ``num_features``, ``eps``, ``momentum``, ``affine``, tensors and mode (a split layer
    already there gets ``num_splits``). Only modules of exactly those classes are replaced: a
    subclass (timm's ``BatchNormAct2d``) does more than normalise.

    Returns:
        How many split BatchNorm layers ``module`` holds afterwards.

    Raises:
        ValueError: ``num_splits`` < 1.
    """
    check_int(num_splits, "num_splits")
    count = 0
    for name, child in module.named_children():
        if isinstance(child, SPLIT_KINDS):
            child.num_splits = num_splits
            count += 1
        elif type(child) in (nn.BatchNorm2d, nn.BatchNorm1d):
            setattr(module, name, _as_split(child, num_splits))  # keeps its place in the order
            count += 1
        else:
            count += split_batchnorms(child, num_splits)
    return count


def _as_split(bn: nn.BatchNorm1d | nn.BatchNorm2d, num_splits: int) -> nn.Module:
    tensor = bn.weight if bn.weight is not None else bn.running_mean
    where = {} if tensor is None else {"device": tensor.device, "dtype": tensor.dtype}
    kind = SplitBatchNorm if isinstance(bn, nn.BatchNorm2d) else SplitBatchNorm1d
    split = kind(bn.num_features, num_splits=num_splits, eps=bn.eps,
                           momentum=bn.momentum, affine=bn.affine,
                           track_running_stats=bn.track_running_stats, **where)  # fmt: skip
    split.load_state_dict(bn.state_dict())
    for new, old in zip(split.parameters(), bn.parameters(), strict=True):
        new.requires_grad_(old.requires_grad)  # a frozen (momentum) network stays frozen
    return split.train(bn.training)
