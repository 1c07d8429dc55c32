"""Per-image torchvision pipelines: a recipe's views, and the eval transform.

All of them use the classic ``torchvision.transforms`` (v1) API, which draws every random
number from torch's global CPU generator (so does :class:`GaussianBlur` here). That is what
lets :class:`~infonce.trainer.data.samplers.SeededTransformDataset` make an augmentation a pure
function of a per-sample seed: seed the global generator, apply the transform, restore the
generator.

Every transform maps a PIL image to a float32 tensor (3, size, size), normalised with
``mean`` and ``std``.
"""

from collections.abc import Callable, Sequence

import torch
from PIL import Image, ImageFilter
from torch import Tensor
from torchvision import transforms as T

from infonce._checks import check_int
from infonce.trainer.augment.filters import SOLARIZE_THRESHOLD
from infonce.trainer.augment.normalization import check_channel_stats
from infonce.trainer.augment.recipes import ViewSpec

_INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
}


def _check_size(size: int) -> int:
    return check_int(size, "size")


def _normalize(mean: Sequence[float], std: Sequence[float]) -> T.Normalize:
    mean = check_channel_stats("mean", mean, positive=False)
    return T.Normalize(mean, check_channel_stats("std", std, positive=True))


class GaussianBlur:
    """PIL's ``ImageFilter.GaussianBlur(radius=sigma)``, ``sigma ~ U(sigma_range)`` drawn from
    torch's global generator (MoCo v2, lightly and solo-learn draw it from Python's or NumPy's,
    which a per-sample seed of torch's would not fix).

    Shape:
        PIL image -> PIL image of the same size.
    """

    def __init__(self, sigma_range: tuple[float, float]):
        self.sigma_range = sigma_range

    def __call__(self, img: Image.Image) -> Image.Image:
        low, high = self.sigma_range
        sigma = low + (high - low) * torch.rand(()).item()
        return img.filter(ImageFilter.GaussianBlur(radius=sigma))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma_range={self.sigma_range})"


def view_transform(
    spec: ViewSpec, size: int, mean: Sequence[float], std: Sequence[float]
) -> T.Compose:
    """One view of ``spec`` as torchvision's Compose, each op left out where its p is 0.

    ``RandomResizedCrop(size, scale, ratio, interpolation)``, ``RandomApply([ColorJitter(
    *jitter)], p=jitter_p)``, ``RandomGrayscale(grayscale_p)``, ``RandomApply([GaussianBlur(
    blur_sigma)], p=blur_p)``, ``RandomSolarize(128, p=solarize_p)``,
    ``RandomHorizontalFlip(flip_p)``, ``ToTensor()``, ``Normalize(mean, std)``.

    Args:
        spec: The view (see :class:`~infonce.trainer.augment.recipes.ViewSpec`).
        size: Output side S in pixels (>= 1).
        mean: Per-channel mean (R, G, B) of images scaled to [0, 1].
        std: Per-channel std (R, G, B), each > 0.

    Shape:
        PIL image (any size, RGB) -> float32 (3, S, S).

    Raises:
        ValueError: ``size`` < 1, or ``mean``/``std`` not three values, or a ``std`` <= 0.
    """
    ops: list[Callable] = [
        T.RandomResizedCrop(
            _check_size(size), spec.scale, spec.ratio, _INTERPOLATION[spec.interpolation]
        )
    ]
    if spec.jitter_p > 0:
        ops.append(T.RandomApply([T.ColorJitter(*spec.jitter)], p=spec.jitter_p))
    if spec.grayscale_p > 0:
        ops.append(T.RandomGrayscale(p=spec.grayscale_p))
    if spec.blur_p > 0:
        ops.append(T.RandomApply([GaussianBlur(spec.blur_sigma)], p=spec.blur_p))
    if spec.solarize_p > 0:
        ops.append(T.RandomSolarize(SOLARIZE_THRESHOLD, p=spec.solarize_p))
    if spec.flip_p > 0:
        ops.append(T.RandomHorizontalFlip(p=spec.flip_p))
    return T.Compose([*ops, T.ToTensor(), _normalize(mean, std)])


class MultiView:
    """Apply each view's random transform to the same image: e.g. the query and key views.

    Shape:
        PIL image -> a tuple with one element per transform, e.g. (3, S, S) each.
    """

    def __init__(self, transforms: Sequence[Callable[[Image.Image], Tensor]]):
        self.transforms = tuple(transforms)

    def __call__(self, img: Image.Image) -> tuple[Tensor, ...]:
        return tuple(transform(img) for transform in self.transforms)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.transforms)!r})"


def views_transform(
    views: Sequence[ViewSpec], size: int, mean: Sequence[float], std: Sequence[float]
) -> MultiView:
    """Every view of a recipe, one :func:`view_transform` each.

    Shape:
        PIL image -> a tuple of V float32 (3, S, S), one per view.
    """
    return MultiView([view_transform(spec, size, mean, std) for spec in views])


class ResizeIfNeeded:
    """Resize the short side to ``size`` and center-crop to (size, size), unless already there.

    An image that is already ``size`` x ``size`` (CIFAR at 32) is returned unchanged, so the
    eval transform of CIFAR is exactly ToTensor + Normalize.

    Shape:
        PIL image (W, H) -> PIL image (size, size).
    """

    def __init__(self, size: int):
        self.size = _check_size(size)
        self._resize = T.Compose([T.Resize(size), T.CenterCrop(size)])

    def __call__(self, img: Image.Image) -> Image.Image:
        if img.size == (self.size, self.size):
            return img
        return self._resize(img)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """The deterministic eval transform: :class:`ResizeIfNeeded`, ToTensor, Normalize.

    Args:
        size: Output side S in pixels (>= 1).
        mean: Per-channel mean (R, G, B) of images scaled to [0, 1].
        std: Per-channel std (R, G, B), each > 0.

    Shape:
        PIL image (any size, RGB) -> float32 (3, S, S).

    Raises:
        ValueError: as :func:`view_transform`.
    """
    return T.Compose([ResizeIfNeeded(size), T.ToTensor(), _normalize(mean, std)])
