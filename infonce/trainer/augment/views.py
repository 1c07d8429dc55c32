"""Views of a whole batch at once, every image drawing parameters of its own.

torchvision augments one image per call (a few hundred images/s per core), and its v2
transforms applied to a batched tensor draw ONE crop and ONE jitter for the whole batch, which
is wrong for contrastive views. Here every image of a (B, 3, H, W) batch draws its own crop
box, flip, jitter coin, factors and order, grayscale coin, blur coin and sigma, and solarise
coin, from the distributions of torchvision's ``RandomResizedCrop``,
``RandomApply([ColorJitter])``, ``RandomGrayscale``, PIL's ``GaussianBlur``,
``RandomSolarize`` and ``RandomHorizontalFlip`` as a :class:`~.recipes.ViewSpec` sets them,
and the batch is transformed by tensor ops on whatever device it lives on:

- crop + resize + flip (:mod:`.crop`): two batched matrix products ``Ry @ image @ Rx.T``
  with the weights of torch's antialiased bilinear or bicubic resize, the flip a mirrored
  ``Rx``;
- brightness, contrast, saturation and hue (:mod:`.color`): per image, each op at each
  step on just the images whose random order has it there (on the CPU; on an accelerator
  every op runs on the whole batch and ``torch.where`` keeps it where it applies, so that
  no group size is read back and the host never waits); then grayscale;
- blur and solarise (:mod:`.filters`): PIL's box-cascade blur as two batched matrix
  products, the identity for images not blurred; then normalise.

Every piece matches torchvision's (or PIL's) functions to float32 rounding (hue to about
2e-6; PIL's blur and bicubic resize round to uint8 between passes, so to about a level of 255),
which the tests check image by image. Measured speed: see ``benchmarks/augment.py``.
"""

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from infonce._checks import check_int
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
from infonce.trainer.augment.crop import resized_crop, sample_crop_params
from infonce.trainer.augment.filters import gaussian_blur, max_box_reach, solarize
from infonce.trainer.augment.normalization import check_channel_stats
from infonce.trainer.augment.recipes import ViewSpec, recipe

__all__ = [
    "BatchViews",
    "Normalize",
    "ViewParams",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "augment_view",
    "color_jitter",
    "gaussian_blur",
    "grayscale",
    "normalize",
    "resized_crop",
    "rgb_to_grayscale",
    "sample_crop_params",
    "sample_view_params",
    "solarize",
]


class ViewParams(NamedTuple):
    """The random parameters of one view of a batch of B images.

    Shape:
        boxes (B, 4) int64 ``(top, left, height, width)``; flip, jitter, gray (B,) bool;
        factors (B, 4) float32 brightness, contrast, saturation, hue; order (B, 4) int64, a
        permutation of 0..3 (0 brightness, 1 contrast, 2 saturation, 3 hue); blur (B,) bool
        and sigma (B,) float32, or None where the view has no blur; solarize (B,) bool, or
        None where it has no solarisation.
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    gray: Tensor
    blur: Tensor | None = None
    sigma: Tensor | None = None
    solarize: Tensor | None = None


def sample_view_params(
    batch_size: int,
    height: int,
    width: int,
    spec: ViewSpec,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> ViewParams:
    """Draw the parameters of view ``spec`` for each of ``batch_size`` images of size (H, W).

    Boxes as :func:`sample_crop_params`; flip, jitter and grayscale coins with probabilities
    ``flip_p``, ``jitter_p``, ``grayscale_p``; brightness, contrast, saturation factors
    ``U[max(0, 1 - j), 1 + j]`` and hue ``U[-j, j]``, and the op order a uniform random
    permutation (argsort of uniform noise), as ``ColorJitter.get_params``. Then, only for a
    view that has them (so that the draws before stay the same): a blur coin and a sigma
    ``U(blur_sigma)``, and a solarise coin.

    Shape:
        -> :class:`ViewParams` of ``batch_size`` images on ``device``.
    """
    boxes = sample_crop_params(batch_size, height, width, spec.scale, spec.ratio, generator, device)
    coins = torch.rand(batch_size, 3, generator=generator, device=device)  # flip, jitter, gray
    uniform = torch.rand(batch_size, 4, generator=generator, device=device)
    b, c, s, hue = spec.jitter
    low = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -hue])  # (4,)
    high = torch.tensor([1 + b, 1 + c, 1 + s, hue])  # (4,)
    low, high = host_to_device(low, device), host_to_device(high, device)
    noise = torch.rand(batch_size, 4, generator=generator, device=device)
    blur = sigma = solarize = None
    if spec.blur_p > 0:
        draws = torch.rand(batch_size, 2, generator=generator, device=device)  # coin, sigma
        blur = draws[:, 0] < spec.blur_p
        sigma_low, sigma_high = spec.blur_sigma
        sigma = sigma_low + (sigma_high - sigma_low) * draws[:, 1]  # (B,)
    if spec.solarize_p > 0:
        solarize = torch.rand(batch_size, generator=generator, device=device) < spec.solarize_p
    return ViewParams(
        boxes=boxes,
        flip=coins[:, 0] < spec.flip_p,
        jitter=coins[:, 1] < spec.jitter_p,
        factors=low + (high - low) * uniform,  # (B, 4)
        order=noise.argsort(dim=1),  # (B, 4)
        gray=coins[:, 2] < spec.grayscale_p,
        blur=blur,
        sigma=sigma,
        solarize=solarize,
    )


def augment_view(images: Tensor, params: ViewParams, spec: ViewSpec, size: int) -> Tensor:
    """One view: crop + resize + flip, colour jitter, grayscale, blur, solarise, in the order
    of :class:`~.recipes.ViewSpec`; an op whose probability is 0 is skipped.

    The flip, done inside the crop, commutes with the pointwise colour ops, the contrast's
    mean and the symmetric blur, so the result equals the Compose that flips last.

    Shape:
        images (B, 3, H, W) uint8 (0..255) or float (0..1) -> (B, 3, size, size) float32.
    """
    out = resized_crop(images, params.boxes, size, params.flip, spec.interpolation)
    if spec.jitter_p > 0:
        color_jitter(out, params.jitter, params.factors, params.order, out=out)
    if spec.grayscale_p > 0:
        grayscale(out, params.gray, out=out)
    if spec.blur_p > 0:
        out = gaussian_blur(out, params.sigma, params.blur, max_box_reach(spec.blur_sigma[1]))
    if spec.solarize_p > 0:
        out = solarize(out, params.solarize)
    return out


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

    Accepts (and ignores) a generator, so it can stand where :class:`BatchViews` stands.

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


class BatchViews(nn.Module):
    """The views of a recipe for every image of a batch, each view with parameters of its own.

    The batched equivalent of applying to every image, once per view, the torchvision
    pipeline of that view's :class:`~.recipes.ViewSpec`
    (:func:`infonce.trainer.augment.transforms.view_transform`), then ``ToTensor`` and
    ``Normalize(mean, std)``. Runs on the batch's device; all randomness comes from
    ``generator`` (on that device) or else that device's default generator, view after view.

    Args:
        views: A recipe's name in :data:`~.recipes.RECIPES`, or its views (one spec each).
        size: Output side S (>= 1).
        mean: Per-channel mean (R, G, B) of [0, 1] images, or None for no normalisation.
        std: Per-channel std (R, G, B), each > 0; None exactly when ``mean`` is None.

    Shape:
        images (B, 3, H, W) uint8 (0..255) or float (0..1) -> a tuple of V (B, 3, S, S)
        float32, one per view.

    Raises:
        ValueError: an unknown recipe (the message lists them), no views, a bad size, mean
            or std (named, with its value); images that are not a (B, 3, H, W) uint8 or
            floating-point tensor; a generator on another device.

    Examples:
        >>> views = BatchViews("moco_v2", 32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
        >>> x1, x2 = views(torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8))
        >>> x1.shape, x1.dtype
        (torch.Size([512, 3, 32, 32]), torch.float32)
    """

    def __init__(
        self,
        views: str | Sequence[ViewSpec],
        size: int = 32,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ):
        super().__init__()
        self.views = recipe(views) if isinstance(views, str) else tuple(views)
        if not self.views or not all(isinstance(v, ViewSpec) for v in self.views):
            raise ValueError(f"views must be a recipe name or ViewSpecs, got {views!r}")
        self.size = check_int(size, "size")
        if (mean is None) != (std is None):
            raise ValueError(f"mean and std must both be given or both None, got {mean}, {std}")
        self.register_buffer("mean", _channel_buffer("mean", mean), persistent=False)
        self.register_buffer("std", _channel_buffer("std", std, positive=True), persistent=False)

    def view(
        self, images: Tensor, generator: torch.Generator | None = None, index: int = 0
    ) -> Tensor:
        """View ``index`` of every image, with parameters of its own.

        Shape:
            images (B, 3, H, W) uint8 (0..255) or float (0..1) -> (B, 3, S, S) float32.
        """
        B, _, H, W = _check_images(images).shape
        if generator is not None and generator.device.type != images.device.type:
            raise ValueError(
                f"generator must be on the device of images ({images.device}), "
                f"got one on {generator.device}"
            )
        spec = self.views[index]
        params = sample_view_params(B, H, W, spec, generator, images.device)
        out = augment_view(images, params, spec, self.size)  # (B, 3, S, S) in [0, 1]
        return out if self.mean is None else out.sub_(self.mean).div_(self.std)

    def forward(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        """Every view of every image, view after view: V (B, 3, S, S) float32."""
        return tuple(self.view(images, generator, index) for index in range(len(self.views)))

    def extra_repr(self) -> str:
        return f"size={self.size}, views={self.views}"
