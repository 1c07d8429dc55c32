"""Image augmentations: the MoCo v2 view, the linear-probe crop/flip, the eval transform.

All of them use the classic ``torchvision.transforms`` (v1) API, which draws every random
number from torch's global CPU generator. That is what lets
:class:`~infonce.trainer.data.samplers.SeededTransformDataset`
make an augmentation a pure function of a
per-sample seed: seed the global generator, apply the transform, restore the generator.

Every transform maps a PIL image to a float32 tensor (3, size, size), normalised with
``mean`` and ``std``.
"""

from collections.abc import Callable, Sequence

from PIL import Image
from torch import Tensor
from torchvision import transforms as T

from infonce._checks import check_int
from infonce.trainer.augment.normalization import check_channel_stats


def _check_size(size: int) -> int:
    return check_int(size, "size")


def _normalize(mean: Sequence[float], std: Sequence[float]) -> T.Normalize:
    mean = check_channel_stats("mean", mean, positive=False)
    return T.Normalize(mean, check_channel_stats("std", std, positive=True))


def moco_v2_transform(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] = (0.2, 1.0),
) -> T.Compose:
    """One MoCo v2 view, as in the MoCo v2 CIFAR recipe (without blur, as usual at 32 px).

    RandomResizedCrop(size, scale), ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8,
    RandomGrayscale(p=0.2), RandomHorizontalFlip(), ToTensor(), Normalize(mean, std).

    Args:
        size: Output side S in pixels (>= 1).
        mean: Per-channel mean (R, G, B) of images scaled to [0, 1].
        std: Per-channel std (R, G, B), each > 0.
        scale: The crop's area fraction range; the MoCo CIFAR-10 demo keeps torchvision's
            default (0.08, 1).

    Shape:
        PIL image (any size, RGB) -> float32 (3, S, S).

    Raises:
        ValueError: ``size`` < 1, or ``mean``/``std`` not three values, or a ``std`` <= 0.
    """
    return T.Compose(
        [
            T.RandomResizedCrop(_check_size(size), scale=scale),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            _normalize(mean, std),
        ]
    )


def crop_flip_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """The linear-probe training transform: RandomResizedCrop(size) (default scale) and flip.

    Args:
        size: Output side S in pixels (>= 1).
        mean: Per-channel mean (R, G, B) of images scaled to [0, 1].
        std: Per-channel std (R, G, B), each > 0.

    Shape:
        PIL image (any size, RGB) -> float32 (3, S, S).

    Raises:
        ValueError: as :func:`moco_v2_transform`.
    """
    return T.Compose(
        [
            T.RandomResizedCrop(_check_size(size)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            _normalize(mean, std),
        ]
    )


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
        ValueError: as :func:`moco_v2_transform`.
    """
    return T.Compose([ResizeIfNeeded(size), T.ToTensor(), _normalize(mean, std)])


class TwoViews:
    """Apply one random ``transform`` twice to the same image: the query and key views.

    Shape:
        PIL image -> (view1, view2), each whatever ``transform`` returns, e.g. (3, S, S).
    """

    def __init__(self, transform: Callable[[Image.Image], Tensor]):
        self.transform = transform

    def __call__(self, img: Image.Image) -> tuple[Tensor, Tensor]:
        return self.transform(img), self.transform(img)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"
