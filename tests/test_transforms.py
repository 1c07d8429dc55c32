import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

from infonce.trainer.augment.normalization import DATASET_STATS
from infonce.trainer.augment.recipes import RECIPES
from infonce.trainer.augment.transforms import (
    GaussianBlur,
    MultiView,
    eval_transform,
    view_transform,
    views_transform,
)

CIFAR10_MEAN, CIFAR10_STD = DATASET_STATS["cifar10"]


def moco_v2_transform(size, mean, std):
    return view_transform(RECIPES["moco_v2"][0], size, mean, std)


def crop_flip_transform(size, mean, std):
    return view_transform(RECIPES["crop_flip"][0], size, mean, std)


def _image(width: int = 32, height: int = 32, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def _apply_in_order(ops, img):
    for op in ops:
        img = op(img)
    return img


def test_moco_v2_transform_equals_torchvision_ops_applied_by_hand_with_the_same_seed():
    img = _image()
    by_hand = [
        T.RandomResizedCrop(32, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(CIFAR10_MEAN, CIFAR10_STD),
    ]
    transform = moco_v2_transform(32, CIFAR10_MEAN, CIFAR10_STD)
    for seed in range(8):
        torch.manual_seed(seed)
        ours = transform(img)
        torch.manual_seed(seed)
        reference = _apply_in_order(by_hand, img)
        assert torch.equal(ours, reference)
        assert ours.shape == (3, 32, 32) and ours.dtype == torch.float32


def test_moco_v2_transform_has_the_moco_v2_cifar_parameters():
    crop, jitter, gray, flip, _, norm = moco_v2_transform(24, CIFAR10_MEAN, CIFAR10_STD).transforms
    assert crop.size == (24, 24) and crop.scale == (0.2, 1.0)
    assert jitter.p == 0.8
    color = jitter.transforms[0]
    assert color.brightness == color.contrast == color.saturation == (0.6, 1.4)
    assert color.hue == (-0.1, 0.1)
    assert gray.p == 0.2 and flip.p == 0.5
    assert tuple(norm.mean) == CIFAR10_MEAN and tuple(norm.std) == CIFAR10_STD


def test_two_views_of_one_image_differ_and_have_the_same_shape():
    torch.manual_seed(0)
    views = views_transform(RECIPES["moco_v2"], 32, CIFAR10_MEAN, CIFAR10_STD)
    assert isinstance(views, MultiView) and len(views.transforms) == 2
    view1, view2 = views(_image())
    assert view1.shape == view2.shape == (3, 32, 32)
    assert not torch.equal(view1, view2)


@pytest.mark.parametrize("view", [0, 1], ids=["view1", "view2"])
def test_solo_asymmetric_views_equal_torchvision_ops_applied_by_hand(view):
    """solo-learn's asymmetric.yaml through its build_transform_pipeline: bicubic crop,
    jitter, grayscale, solarisation (second view only), flip."""
    img = _image(40, 36)
    by_hand = [
        T.RandomResizedCrop(32, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        *([T.RandomSolarize(128, p=0.2)] if view == 1 else []),
        T.RandomHorizontalFlip(p=0.5),
        T.ToTensor(),
        T.Normalize(CIFAR10_MEAN, CIFAR10_STD),
    ]
    transform = view_transform(RECIPES["solo_asymmetric"][view], 32, CIFAR10_MEAN, CIFAR10_STD)
    for seed in range(8):
        torch.manual_seed(seed)
        ours = transform(img)
        torch.manual_seed(seed)
        assert torch.equal(ours, _apply_in_order(by_hand, img))


def test_solo_symmetric_view_blurs_with_pils_gaussian_blur_drawn_from_torchs_generator():
    crop, jitter, gray, blur, flip, _, norm = view_transform(
        RECIPES["solo_symmetric"][0], 32, CIFAR10_MEAN, CIFAR10_STD
    ).transforms
    assert crop.interpolation == T.InterpolationMode.BICUBIC and crop.scale == (0.08, 1.0)
    color = jitter.transforms[0]
    for factor in (color.brightness, color.contrast, color.saturation):
        assert factor == pytest.approx((0.2, 1.8))  # 1 -+ 0.8
    assert color.hue == (-0.2, 0.2) and jitter.p == 0.8 and gray.p == 0.2 and flip.p == 0.5
    assert blur.p == 0.5 and isinstance(blur.transforms[0], GaussianBlur)
    img = _image()
    torch.manual_seed(3)
    ours = blur.transforms[0](img)
    torch.manual_seed(3)
    sigma = 0.1 + 1.9 * torch.rand(()).item()
    assert np.array_equal(np.array(ours), np.array(img.filter(ImageFilter.GaussianBlur(sigma))))


def test_crop_flip_transform_is_default_scale_crop_and_flip_applied_by_hand():
    img = _image(40, 36)
    transform = crop_flip_transform(32, CIFAR10_MEAN, CIFAR10_STD)
    assert transform.transforms[0].scale == (0.08, 1.0)
    by_hand = [
        T.RandomResizedCrop(32),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(CIFAR10_MEAN, CIFAR10_STD),
    ]
    for seed in range(4):
        torch.manual_seed(seed)
        ours = transform(img)
        torch.manual_seed(seed)
        assert torch.equal(ours, _apply_in_order(by_hand, img))


def test_eval_transform_only_normalizes_an_image_already_at_size():
    img = _image()
    expected = (T.ToTensor()(img) - torch.tensor(CIFAR10_MEAN)[:, None, None]) / torch.tensor(
        CIFAR10_STD
    )[:, None, None]
    torch.testing.assert_close(eval_transform(32, CIFAR10_MEAN, CIFAR10_STD)(img), expected)


def test_eval_transform_resizes_short_side_and_center_crops_other_sizes():
    img = _image(48, 40)
    out = eval_transform(32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(img)
    expected = T.ToTensor()(T.CenterCrop(32)(T.Resize(32)(img)))
    assert out.shape == (3, 32, 32)
    assert torch.equal(out, expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, "size must be an integer >= 1, got 0"),
        ({"mean": (0.5, 0.5)}, r"mean must be 3 finite numbers .* got \(0.5, 0.5\)"),
        ({"std": (0.2, 0.0, 0.2)}, r"std must be 3 finite numbers > 0 .* got \(0.2, 0.0, 0.2\)"),
        ({"std": (0.2, float("inf"), 0.2)}, r"std must be 3 finite numbers > 0"),
    ],
)
@pytest.mark.parametrize("make", [moco_v2_transform, crop_flip_transform, eval_transform])
def test_transforms_reject_bad_size_mean_and_std_naming_the_value(make, kwargs, match):
    args = {"size": 32, "mean": CIFAR10_MEAN, "std": CIFAR10_STD} | kwargs
    with pytest.raises(ValueError, match=match):
        make(**args)
