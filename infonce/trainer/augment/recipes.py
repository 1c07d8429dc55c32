"""Every augmentation recipe, said once: one :class:`ViewSpec` per view, with its source.

Both data paths build from these specs: the resident path draws a whole batch's views as tensor
ops (:class:`infonce.trainer.augment.views.BatchViews`), the loader path composes torchvision's
per-image transforms (:func:`infonce.trainer.augment.transforms.view_transform`); the tests check
that the two follow the same distributions, op by op. A recipe's values are checked against its
source in ``tests/test_recipes.py``.
"""

from dataclasses import dataclass, replace
from numbers import Real
from typing import Literal

from infonce._checks import check_choice, check_unit_interval
from infonce.trainer.augment.crop import check_range

__all__ = ["RECIPES", "ViewSpec", "recipe"]

INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class ViewSpec:
    """How one view of an image is drawn; the defaults are a plain random-resized crop and flip.

    The ops, in this order, each left out where its probability is 0 (as solo-learn does):
    ``RandomResizedCrop(size, scale, ratio, interpolation)``,
    ``RandomApply([ColorJitter(*jitter)], p=jitter_p)``, ``RandomGrayscale(grayscale_p)``,
    ``RandomApply([GaussianBlur], p=blur_p)`` with PIL's ``ImageFilter.GaussianBlur(radius=
    sigma)``, ``sigma ~ U(blur_sigma)`` (what MoCo v2, lightly and solo-learn use),
    ``RandomSolarize(128, p=solarize_p)`` (PIL's ``ImageOps.solarize``), then
    ``RandomHorizontalFlip(flip_p)``. Sources that flip first give the same distribution: the
    flip commutes with every other op.

    Args:
        scale: Range of the crop's area fraction, ``0 < low <= high <= 1``.
        ratio: Range of the crop's aspect ratio w / h, ``0 < low <= high``.
        interpolation: The crop's resize: ``bilinear`` (torchvision's default) or ``bicubic``.
        jitter: Brightness, contrast, saturation (>= 0) and hue (in [0, 0.5]) strengths.
        jitter_p: Probability that an image is colour-jittered.
        grayscale_p: Probability that an image is turned gray.
        blur_sigma: Range of the blur's standard deviation in pixels, ``0 < low <= high``.
        blur_p: Probability that an image is blurred.
        solarize_p: Probability that an image is solarised (levels >= 128 of 255 inverted).
        flip_p: Probability that an image is mirrored left-right.

    Raises:
        ValueError: a value out of range, naming it and the value.
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    jitter_p: float = 0.0
    grayscale_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = 0.0
    solarize_p: float = 0.0
    flip_p: float = 0.5

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: the checked, normalised values go in once, here
        set_(self, "scale", check_range("scale", self.scale, upper=1.0))
        set_(self, "ratio", check_range("ratio", self.ratio))
        set_(self, "blur_sigma", check_range("blur_sigma", self.blur_sigma))
        check_choice(self.interpolation, "interpolation", INTERPOLATIONS)
        jitter = self.jitter
        ok = isinstance(jitter, tuple | list) and len(jitter) == 4
        ok = ok and all(isinstance(j, Real) and not isinstance(j, bool) for j in jitter)
        if not (ok and min(jitter) >= 0 and jitter[3] <= 0.5):
            raise ValueError(
                "jitter must be (brightness, contrast, saturation, hue), all >= 0 and hue "
                f"<= 0.5, got {jitter!r}"
            )
        set_(self, "jitter", tuple(float(j) for j in jitter))
        for name in ("jitter_p", "grayscale_p", "blur_p", "solarize_p", "flip_p"):
            set_(self, name, check_unit_interval(getattr(self, name), name))


# MoCo v2 (Chen et al., 2020), facebookresearch/moco main_moco.py with --aug-plus:
# RandomResizedCrop(224, scale=(0.2, 1.)), RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)],
# p=0.8), RandomGrayscale(p=0.2), RandomApply([GaussianBlur([.1, 2.])], p=0.5),
# RandomHorizontalFlip(); here at 32 px without the blur, as usual on CIFAR.
_MOCO_V2 = ViewSpec(scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, grayscale_p=0.2)

# lightly's CIFAR-10 benchmark (docs/source/getting_started/benchmarks/cifar10_benchmark.py):
# SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0), whose other defaults
# (lightly/transforms/simclr_transform.py) are cj_prob=0.8, cj_bright=cj_contrast=cj_sat=0.8 and
# cj_hue=0.2 (times cj_strength), min_scale=0.08, random_gray_scale=0.2, hf_prob=0.5, and
# vf_prob=rr_prob=0. Lightly normalises with ImageNet's statistics; the data module uses the
# dataset's (normalization.DATASET_STATS). The same views as the MoCo CIFAR-10 demo
# (facebookresearch/moco, colab/moco_cifar10_demo.ipynb): RandomResizedCrop(32) at the default
# scale, RandomHorizontalFlip(p=0.5), RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
# RandomGrayscale(p=0.2).
_SIMCLR_CIFAR = ViewSpec(jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, grayscale_p=0.2)

# solo-learn's CIFAR augmentations (scripts/pretrain/cifar/augmentations/*.yaml, built by
# solo/data/pretrain_dataloader.py build_transform_pipeline): RandomResizedCrop(32, scale=(0.08,
# 1.0), interpolation=BICUBIC), GaussianBlur with sigma in [0.1, 2.0] (its default) and
# Solarization (ImageOps.solarize, threshold 128), flip 0.5; normalised with solo-learn's
# MEANS_N_STD, which are DATASET_STATS' cifar10/cifar100 values.
_SOLO_CROP = {"scale": (0.08, 1.0), "interpolation": "bicubic", "flip_p": 0.5}
# symmetric.yaml (simclr.yaml, supcon.yaml, swav.yaml, deepclusterv2.yaml): both views alike.
_SOLO_SYMMETRIC = ViewSpec(
    **_SOLO_CROP, jitter=(0.8, 0.8, 0.8, 0.2), jitter_p=0.8, grayscale_p=0.2, blur_p=0.5
)
# asymmetric.yaml (mocov3.yaml, byol.yaml, barlow.yaml, dino.yaml, ...): no blur on CIFAR;
# the second view alone is solarised, with p=0.2.
_SOLO_ASYMMETRIC = ViewSpec(
    **_SOLO_CROP, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, grayscale_p=0.2
)

RECIPES: dict[str, tuple[ViewSpec, ...]] = {
    "moco_v2": (_MOCO_V2, _MOCO_V2),
    "moco_cifar10_demo": (_SIMCLR_CIFAR, _SIMCLR_CIFAR),
    "simclr": (_SIMCLR_CIFAR, _SIMCLR_CIFAR),
    "solo_symmetric": (_SOLO_SYMMETRIC, _SOLO_SYMMETRIC),
    "solo_asymmetric": (_SOLO_ASYMMETRIC, replace(_SOLO_ASYMMETRIC, solarize_p=0.2)),
    # The linear-evaluation transform (facebookresearch/moco main_lincls.py):
    # RandomResizedCrop(224) at torchvision's defaults, RandomHorizontalFlip(); one view.
    "crop_flip": (ViewSpec(),),
}


def recipe(name: str, crop_scale: tuple[float, float] | None = None) -> tuple[ViewSpec, ...]:
    """The views of recipe ``name``, every view's crop scale set to ``crop_scale`` if given.

    Raises:
        ValueError: ``name`` not in :data:`RECIPES` (the message lists them), or a bad
            ``crop_scale`` (named ``crop_scale``).
    """
    check_choice(name, "augmentation", tuple(RECIPES))
    if crop_scale is None:
        return RECIPES[name]
    scale = check_range("crop_scale", crop_scale, upper=1.0)
    return tuple(replace(spec, scale=scale) for spec in RECIPES[name])
