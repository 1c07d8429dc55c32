"""MoCo v2 views of a whole batch at once, every image drawing parameters of its own.

torchvision augments one image per call (a few hundred images/s per core), and its v2
transforms applied to a batched tensor draw ONE crop and ONE jitter for the whole batch, which
is wrong for contrastive views. Here every image of a (B, 3, H, W) batch draws its own crop
box, flip, jitter coin, factors and order, and grayscale coin, from the distributions of
torchvision's ``RandomResizedCrop``, ``RandomApply([ColorJitter])``, ``RandomGrayscale`` and
``RandomHorizontalFlip``, and the batch is transformed by tensor ops on whatever device it
lives on:

- crop + resize + flip (:mod:`.crop`): two batched matrix products ``Ry @ image @ Rx.T``
  with the weights of torch's antialiased bilinear resize, the flip a mirrored ``Rx``;
- brightness, contrast, saturation and hue (:mod:`.color`): per image, each op at each
  step on just the images whose random order has it there (on the CPU; on an accelerator
  every op runs on the whole batch and ``torch.where`` keeps it where it applies, so that
  no group size is read back and the host never waits); then grayscale, then normalise.

Every piece matches torchvision's tensor functions on float images to float32 rounding (hue
to about 2e-6), which the tests check image by image. Measured speed: see
``benchmarks/augment.py``.
"""

from numbers import Real
from typing import NamedTuple

import torch
from torch import Tensor, nn

from infonce._checks import check_int, check_unit_interval
from infonce._device import host_to_device
from infonce.trainer.augment.color import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    grayscale,
    rgb_to_grayscale,
)
from infonce.trainer.augment.crop import check_range, resized_crop, sample_crop_params
from infonce.trainer.augment.normalization import check_channel_stats

__all__ = [
    "MoCoV2Views",
    "Normalize",
    "ViewParams",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "augment_view",
    "color_jitter",
    "grayscale",
    "normalize",
    "resized_crop",
    "rgb_to_grayscale",
    "sample_crop_params",
    "sample_view_params",
]


class ViewParams(NamedTuple):
    """The random parameters of one view of a batch of B images.

    Shape:
        boxes (B, 4) int64 ``(top, left, height, width)``; flip, jitter, gray (B,) bool;
        factors (B, 4) float32 brightness, contrast, saturation, hue; order (B, 4) int64, a
        permutation of 0..3 (0 brightness, 1 contrast, 2 saturation, 3 hue).
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    gray: Tensor


def sample_view_params(
    batch_size: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> ViewParams:
    """Draw the parameters of one view for each of ``batch_size`` images of size (H, W).

    Boxes as :func:`sample_crop_params`; flip, jitter and grayscale coins with probabilities
    ``flip_p``, ``jitter_p``, ``grayscale_p``; brightness, contrast, saturation factors
    ``U[max(0, 1 - j), 1 + j]`` and hue ``U[-j, j]``, and the op order a uniform random
    permutation (argsort of uniform noise), as ``ColorJitter.get_params``.

    Shape:
        -> :class:`ViewParams` of ``batch_size`` images on ``device``.

    Raises:
        ValueError: as :func:`sample_crop_params`.
    """
    boxes = sample_crop_params(batch_size, height, width, scale, ratio, generator, device)
    coins = torch.rand(batch_size, 3, generator=generator, device=device)  # flip, jitter, gray
    uniform = torch.rand(batch_size, 4, generator=generator, device=device)
    b, c, s, hue = jitter
    low = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -hue])  # (4,)
    high = torch.tensor([1 + b, 1 + c, 1 + s, hue])  # (4,)
    low, high = host_to_device(low, device), host_to_device(high, device)
    noise = torch.rand(batch_size, 4, generator=generator, device=device)
    return ViewParams(
        boxes=boxes,
        flip=coins[:, 0] < flip_p,
        jitter=coins[:, 1] < jitter_p,
        factors=low + (high - low) * uniform,  # (B, 4)
        order=noise.argsort(dim=1),  # (B, 4)
        gray=coins[:, 2] < grayscale_p,
    )


def augment_view(images: Tensor, params: ViewParams, size: int) -> Tensor:
    """One view: crop + resize + flip, then colour jitter, then grayscale (torchvision's order).

    The flip, done inside the crop, commutes with the pointwise colour ops and with the
    contrast's mean, so the result equals torchvision's Compose, which flips last.

    Shape:
        images (B, 3, H, W) uint8 (0..255) or float (0..1) -> (B, 3, size, size) float32.
    """
    out = resized_crop(images, params.boxes, size, params.flip)
    color_jitter(out, params.jitter, params.factors, params.order, out=out)
    return grayscale(out, params.gray, out=out)


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(images - mean) / std`` per channel; mean, std broadcastable, e.g. (1, 3, 1, 1)."""
    return (images - mean).div_(std)


def _check_images(images: Tensor) -> Tensor:
    """Raise ValueError unless ``images`` is a (B, 3, H, W) uint8 or floating-point tensor."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
    if images.dtype != torch.uint8 and not torch.is_floating_point(images):
        raise ValueError(f"images must be uint8 or floating point, got dtype {images.dtype}")
    return images


def _channel_buffer(name: str, value, positive: bool = False) -> Tensor | None:
    """(1, 3, 1, 1) float32 tensor of ``value`` (:func:`check_channel_stats`), or None."""
    if value is None:
        return None
    return torch.tensor(check_channel_stats(name, value, positive)).view(1, 3, 1, 1)


class Normalize(nn.Module):
    """The eval transform of a resident batch: uint8 or [0, 1] images to ``(x - mean) / std``.

    Accepts (and ignores) a generator, so it can stand where :class:`MoCoV2Views` stands.

    Shape:
        images (B, 3, H, W) uint8 or float -> (B, 3, H, W) float32.

    Raises:
        ValueError: ``mean`` not 3 numbers, ``std`` not 3 numbers > 0; bad ``images``.
    """

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]):
        super().__init__()
        self.register_buffer("mean", _channel_buffer("mean", mean), persistent=False)
        self.register_buffer("std", _channel_buffer("std", std, positive=True), persistent=False)
        if self.mean is None or self.std is None:
            raise ValueError(f"mean and std must both be given, got {mean!r}, {std!r}")

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = _check_images(images).to(torch.float32)
        x = x / 255.0 if images.dtype == torch.uint8 else x
        return normalize(x, self.mean, self.std)


class MoCoV2Views(nn.Module):
    """Two MoCo v2 views of every image of a batch, each view with parameters of its own.

    The batched equivalent of applying twice per image torchvision's ``RandomResizedCrop(size,
    scale, ratio)``, ``RandomApply([ColorJitter(*jitter)], p=jitter_p)``,
    ``RandomGrayscale(grayscale_p)``, ``RandomHorizontalFlip(flip_p)``, ``ToTensor`` and
    ``Normalize(mean, std)``. Runs on the batch's device; all randomness comes from
    ``generator`` (on that device) or else that device's default generator.

    Args:
        size: Output side S (>= 1).
        scale: Range of the crop's area fraction, ``0 < low <= high <= 1``.
        ratio: Range of the crop's aspect ratio w / h, ``0 < low <= high``.
        jitter: Brightness, contrast, saturation (>= 0) and hue (in [0, 0.5]) strengths.
        jitter_p: Probability that an image is colour-jittered.
        grayscale_p: Probability that an image is turned gray.
        flip_p: Probability that an image is mirrored left-right.
        mean: Per-channel mean (R, G, B) of [0, 1] images, or None for no normalisation.
        std: Per-channel std (R, G, B), each > 0; None exactly when ``mean`` is None.

    Shape:
        images (B, 3, H, W) uint8 (0..255) or float (0..1) -> two (B, 3, S, S) float32.

    Raises:
        ValueError: a hyperparameter out of range (named, with its value); images that are not
            a (B, 3, H, W) uint8 or floating-point tensor; a generator on another device.

    Examples:
        >>> views = MoCoV2Views(32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
        >>> x1, x2 = views(torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8))
        >>> x1.shape, x1.dtype
        (torch.Size([512, 3, 32, 32]), torch.float32)
    """

    def __init__(
        self,
        size: int = 32,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        flip_p: float = 0.5,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ):
        super().__init__()
        self.size = check_int(size, "size")
        self.scale, self.ratio = check_range("scale", scale, 1.0), check_range("ratio", ratio)
        ok = isinstance(jitter, tuple | list) and len(jitter) == 4
        ok = ok and all(isinstance(j, Real) and not isinstance(j, bool) for j in jitter)
        if not (ok and min(jitter) >= 0 and jitter[3] <= 0.5):
            raise ValueError(
                "jitter must be (brightness, contrast, saturation, hue), all >= 0 and hue "
                f"<= 0.5, got {jitter!r}"
            )
        self.jitter = tuple(float(j) for j in jitter)
        for name, p in (("jitter_p", jitter_p), ("grayscale_p", grayscale_p), ("flip_p", flip_p)):
            check_unit_interval(p, name)
        self.jitter_p, self.grayscale_p, self.flip_p = jitter_p, grayscale_p, flip_p
        if (mean is None) != (std is None):
            raise ValueError(f"mean and std must both be given or both None, got {mean}, {std}")
        self.register_buffer("mean", _channel_buffer("mean", mean), persistent=False)
        self.register_buffer("std", _channel_buffer("std", std, positive=True), persistent=False)

    def view(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One view of every image, with parameters of its own.

        Shape:
            images (B, 3, H, W) uint8 (0..255) or float (0..1) -> (B, 3, S, S) float32.
        """
        B, _, H, W = _check_images(images).shape
        if generator is not None and generator.device.type != images.device.type:
            raise ValueError(
                f"generator must be on the device of images ({images.device}), "
                f"got one on {generator.device}"
            )
        params = sample_view_params(
            B, H, W, self.scale, self.ratio, self.jitter, self.jitter_p, self.grayscale_p,
            self.flip_p, generator, images.device,
        )  # fmt: skip
        out = augment_view(images, params, self.size)  # (B, 3, S, S) in [0, 1]
        return out if self.mean is None else out.sub_(self.mean).div_(self.std)

    def forward(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Two independent views (query and key) of every image: (B, 3, S, S) float32 each."""
        return self.view(images, generator), self.view(images, generator)

    def extra_repr(self) -> str:
        ratio = tuple(round(r, 4) for r in self.ratio)
        return (
            f"size={self.size}, scale={self.scale}, ratio={ratio}, jitter={self.jitter}, "
            f"jitter_p={self.jitter_p}, grayscale_p={self.grayscale_p}, flip_p={self.flip_p}"
        )
