"""Each augmentation recipe is said once, and says what its source says."""

import dataclasses

import pytest

from infonce.trainer.augment.normalization import DATASET_STATS, MOCO_CIFAR10_DEMO_STATS
from infonce.trainer.augment.recipes import RECIPES, ViewSpec, recipe

# What each source sets, written from the source itself; a field a source leaves out is its
# library default, named beside it.
TORCHVISION_CROP = {"ratio": (3 / 4, 4 / 3), "interpolation": "bilinear"}  # RandomResizedCrop
NO_BLUR_NO_SOLARIZE = {"blur_p": 0.0, "solarize_p": 0.0}
SOURCES = {
    # facebookresearch/moco main_moco.py, --aug-plus (its GaussianBlur p=0.5 left out at 32 px):
    # RandomResizedCrop(224, scale=(0.2, 1.)), RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)],
    # p=0.8), RandomGrayscale(p=0.2), RandomHorizontalFlip()
    "moco_v2": [
        {"scale": (0.2, 1.0), "jitter": (0.4, 0.4, 0.4, 0.1), "jitter_p": 0.8,
         "grayscale_p": 0.2, "flip_p": 0.5, **TORCHVISION_CROP, **NO_BLUR_NO_SOLARIZE}
    ] * 2,
    # facebookresearch/moco colab/moco_cifar10_demo.ipynb, train_transform:
    # RandomResizedCrop(32), RandomHorizontalFlip(p=0.5), RandomApply([ColorJitter(0.4, 0.4,
    # 0.4, 0.1)], p=0.8), RandomGrayscale(p=0.2)
    "moco_cifar10_demo": [
        {"scale": (0.08, 1.0), "jitter": (0.4, 0.4, 0.4, 0.1), "jitter_p": 0.8,
         "grayscale_p": 0.2, "flip_p": 0.5, **TORCHVISION_CROP, **NO_BLUR_NO_SOLARIZE}
    ] * 2,
    # lightly docs/source/getting_started/benchmarks/cifar10_benchmark.py:
    # SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0); the rest are the
    # defaults of lightly/transforms/simclr_transform.py: cj_prob=0.8, cj_bright=0.8,
    # cj_contrast=0.8, cj_sat=0.8, cj_hue=0.2 (each times cj_strength), min_scale=0.08,
    # random_gray_scale=0.2, hf_prob=0.5 (vf_prob=0, rr_prob=0)
    "simclr": [
        {"scale": (0.08, 1.0), "jitter": (0.5 * 0.8, 0.5 * 0.8, 0.5 * 0.8, 0.5 * 0.2),
         "jitter_p": 0.8, "grayscale_p": 0.2, "flip_p": 0.5, **TORCHVISION_CROP,
         **NO_BLUR_NO_SOLARIZE}
    ] * 2,
    # solo-learn scripts/pretrain/cifar/augmentations/symmetric.yaml, built by
    # solo/data/pretrain_dataloader.py (RandomResizedCrop(..., interpolation=BICUBIC),
    # GaussianBlur's default sigma [0.1, 2.0]): rrc 0.08-1.0; color_jitter prob 0.8,
    # brightness 0.8, contrast 0.8, saturation 0.8, hue 0.2; grayscale 0.2; gaussian_blur
    # 0.5; solarization 0.0; equalization 0.0; horizontal_flip 0.5; num_crops 2
    "solo_symmetric": [
        {"scale": (0.08, 1.0), "ratio": (3 / 4, 4 / 3), "interpolation": "bicubic",
         "jitter": (0.8, 0.8, 0.8, 0.2), "jitter_p": 0.8, "grayscale_p": 0.2, "blur_p": 0.5,
         "blur_sigma": (0.1, 2.0), "solarize_p": 0.0, "flip_p": 0.5}
    ] * 2,
    # solo-learn scripts/pretrain/cifar/augmentations/asymmetric.yaml: two pipelines of one
    # crop each, rrc 0.08-1.0; color_jitter prob 0.8, brightness 0.4, contrast 0.4, saturation
    # 0.2, hue 0.1; grayscale 0.2; gaussian_blur 0.0 (both); solarization 0.0, then 0.2;
    # equalization 0.0; horizontal_flip 0.5
    "solo_asymmetric": [
        {"scale": (0.08, 1.0), "ratio": (3 / 4, 4 / 3), "interpolation": "bicubic",
         "jitter": (0.4, 0.4, 0.2, 0.1), "jitter_p": 0.8, "grayscale_p": 0.2, "blur_p": 0.0,
         "solarize_p": solarize_p, "flip_p": 0.5}
        for solarize_p in (0.0, 0.2)
    ],
    # facebookresearch/moco main_lincls.py: RandomResizedCrop(224), RandomHorizontalFlip()
    "crop_flip": [
        {"scale": (0.08, 1.0), "jitter_p": 0.0, "grayscale_p": 0.0, "flip_p": 0.5,
         **TORCHVISION_CROP, **NO_BLUR_NO_SOLARIZE}
    ],
}  # fmt: skip


def test_every_recipe_has_its_source_written_in_this_test():
    assert set(RECIPES) == set(SOURCES)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_each_recipes_views_equal_its_sources_values(name):
    views = RECIPES[name]
    assert len(views) == len(SOURCES[name])
    for view, source in zip(views, SOURCES[name], strict=True):
        assert isinstance(view, ViewSpec)
        for field, value in source.items():
            assert getattr(view, field) == pytest.approx(value), (name, field)


def test_solo_asymmetric_views_differ_only_in_the_second_views_solarisation():
    first, second = RECIPES["solo_asymmetric"]
    differ = [f.name for f in dataclasses.fields(ViewSpec)
              if getattr(first, f.name) != getattr(second, f.name)]  # fmt: skip
    assert differ == ["solarize_p"] and (first.solarize_p, second.solarize_p) == (0.0, 0.2)
    for name in ("moco_v2", "moco_cifar10_demo", "simclr", "solo_symmetric"):
        assert RECIPES[name][0] == RECIPES[name][1], name


def test_the_moco_demo_and_lightlys_cifar_simclr_are_the_same_views():
    assert RECIPES["moco_cifar10_demo"] == RECIPES["simclr"]
    assert dataclasses.replace(RECIPES["moco_v2"][0], scale=(0.08, 1.0)) == RECIPES["simclr"][0]


def test_unknown_recipe_is_a_value_error_listing_the_names():
    with pytest.raises(ValueError) as error:
        recipe("mocov2")
    assert "got 'mocov2'" in str(error.value)
    assert all(repr(name) in str(error.value) for name in RECIPES)


def test_crop_scale_replaces_every_views_scale_and_nothing_else():
    views = recipe("solo_asymmetric", crop_scale=(0.2, 1))
    assert views == tuple(
        dataclasses.replace(v, scale=(0.2, 1.0)) for v in RECIPES["solo_asymmetric"]
    )
    assert recipe("moco_v2") is RECIPES["moco_v2"]
    with pytest.raises(ValueError, match=r"crop_scale must be \(low, high\) .* got \(0.5, 0.1\)"):
        recipe("moco_v2", crop_scale=(0.5, 0.1))


def test_view_specs_are_frozen_and_hold_floats():
    spec = ViewSpec(scale=(1, 1), jitter=[0, 0, 0, 0], flip_p=1)
    assert spec.scale == (1.0, 1.0) and isinstance(spec.scale[0], float)
    assert spec.jitter == (0.0, 0.0, 0.0, 0.0) and isinstance(spec.flip_p, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.flip_p = 0.5


def test_dataset_statistics_are_the_published_ones():
    # CIFAR: solo-learn's MEANS_N_STD (solo/data/pretrain_dataloader.py); ImageNet: lightly's
    # IMAGENET_NORMALIZE (lightly/transforms/utils.py)
    assert DATASET_STATS["cifar10"] == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert DATASET_STATS["cifar100"] == ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    assert DATASET_STATS["imagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    # facebookresearch/moco colab/moco_cifar10_demo.ipynb: Normalize([0.4914, 0.4822, 0.4465],
    # [0.2023, 0.1994, 0.2010])
    assert MOCO_CIFAR10_DEMO_STATS == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
