"""Batched views: torchvision's per-image transforms, for every image of a batch at once."""

import math

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from infonce.trainer.augment import color
from infonce.trainer.augment.recipes import RECIPES, ViewSpec
from infonce.trainer.augment.views import (
    BatchViews,
    Normalize,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    augment_view,
    color_jitter,
    grayscale,
    resized_crop,
    sample_crop_params,
    sample_view_params,
)

OURS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
TORCHVISION = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
# Our HSV -> RGB is a closed form of torchvision's six-sector table; the two round differently
# in float32 (each is ~1e-6 off the float64 answer), so hue agrees to ~2e-6, not bit for bit.
ATOL = {"brightness": 1e-6, "contrast": 1e-6, "saturation": 1e-6, "hue": 1e-5}
MOCO_V2 = RECIPES["moco_v2"][0]


def moco_v2_views(size=32, **kwargs):
    return BatchViews("moco_v2", size, **kwargs)


def images(B=16, H=32, W=32, seed=0):
    """Random float images in [0, 1], with gray pixels and ties between channels mixed in."""
    x = torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(seed))
    x[0, :, : H // 2] = 0.5  # gray: hue and saturation undefined
    x[1, 1] = x[1, 0]  # red and green tie
    x[2, 2, : H // 2] = 1.0  # saturated blue
    return x


def torchvision_view(image, params, b, size):
    """One image through torchvision's functional ops, in the order of its Compose."""
    out = TF.resized_crop(image, *params.boxes[b].tolist(), [size, size], antialias=True)
    if params.jitter[b]:
        for op in params.order[b].tolist():
            out = TORCHVISION[op](out, params.factors[b, op].item())
    if params.gray[b]:
        out = TF.rgb_to_grayscale(out, num_output_channels=3)
    return TF.hflip(out) if params.flip[b] else out


@pytest.mark.parametrize(("H", "W"), [(32, 32), (40, 36)])
def test_resized_crop_and_flip_equal_torchvision_image_by_image(H, W):
    g = torch.Generator().manual_seed(1)
    x = images(H=H, W=W)
    boxes = sample_crop_params(16, H, W, (0.05, 1.0), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    assert 0 < flip.sum() < 16
    out = resized_crop(x, boxes, 32, flip)
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    for b in range(16):
        expected = TF.resized_crop(x[b], *boxes[b].tolist(), [32, 32], antialias=True)
        expected = TF.hflip(expected) if flip[b] else expected
        torch.testing.assert_close(out[b], expected, rtol=0, atol=1e-5)


def test_downscaling_crops_are_antialiased_like_torchvision():
    x = images(B=3, H=96, W=80)
    boxes = torch.tensor([[0, 0, 96, 80], [10, 20, 70, 50], [5, 7, 30, 61]])
    out = resized_crop(x, boxes, 24)
    for b in range(3):
        expected = TF.resized_crop(x[b], *boxes[b].tolist(), [24, 24], antialias=True)
        torch.testing.assert_close(out[b], expected, rtol=0, atol=1e-5)


def test_uint8_images_are_cropped_as_images_over_255():
    x = (images(B=8) * 255).round().to(torch.uint8)
    boxes = sample_crop_params(8, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        resized_crop(x, boxes, 32), resized_crop(x.float() / 255, boxes, 32), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("op", range(4), ids=list(ATOL))
def test_each_jitter_op_equals_torchvision_with_a_factor_per_image(op):
    x = images()
    u = torch.rand(16, generator=torch.Generator().manual_seed(op))
    factor = u - 0.5 if op == 3 else 2 * u  # hue in [-0.5, 0.5], the others in [0, 2]
    out = OURS[op](x, factor)
    for b in range(16):
        expected = TORCHVISION[op](x[b], factor[b].item())
        torch.testing.assert_close(out[b], expected, rtol=0, atol=list(ATOL.values())[op])


def test_jitter_ops_write_into_out_even_when_it_is_the_input():
    x = images()
    factor = torch.linspace(-0.5, 0.5, 16)
    for op, fn in enumerate(OURS):
        f = factor if op == 3 else factor + 1
        expected = fn(x, f)
        y = x.clone()
        assert fn(y, f, out=y) is y
        torch.testing.assert_close(y, expected, rtol=0, atol=0)


def test_color_jitter_applies_each_images_ops_in_its_own_order():
    B = 48
    params = sample_view_params(B, 32, 32, MOCO_V2, torch.Generator().manual_seed(3))
    x = images(B)
    out = color_jitter(x, params.jitter, params.factors, params.order)
    assert 0 < params.jitter.sum() < B  # some images jittered, some left alone
    for b in range(B):
        expected = x[b]
        if params.jitter[b]:
            for op in params.order[b].tolist():
                expected = TORCHVISION[op](expected, params.factors[b, op].item())
        torch.testing.assert_close(out[b], expected, rtol=0, atol=1e-5)
    assert torch.equal(out[~params.jitter], x[~params.jitter])


def test_color_jitter_with_nothing_or_everything_applied():
    x = images(B=4)
    factors, order = torch.tensor([[1.2, 0.8, 1.1, 0.05]] * 4), torch.arange(4).repeat(4, 1)
    assert torch.equal(color_jitter(x, torch.zeros(4, dtype=torch.bool), factors, order), x)
    out = color_jitter(x, torch.ones(4, dtype=torch.bool), factors, order)
    expected = adjust_hue(adjust_saturation(adjust_contrast(adjust_brightness(
        x, factors[:, 0]), factors[:, 1]), factors[:, 2]), factors[:, 3])  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("apply_rate", [0.0, 0.5, 1.0])
def test_color_jitter_without_host_sync_gives_the_grouped_images(apply_rate):
    """Off the CPU every op runs on the whole batch, kept by torch.where (no group sizes read
    by the host): the same images as the grouped CPU path, also written into the input."""
    B = 40
    params = sample_view_params(B, 32, 32, MOCO_V2, torch.Generator().manual_seed(5))
    apply = torch.rand(B, generator=torch.Generator().manual_seed(6)) < apply_rate
    x = images(B)
    key = torch.where(apply[:, None], params.order, 4)  # (B, 4), 4 = no op
    grouped = color._jitter_grouped(x, key, params.factors, None)
    masked = color._jitter_masked(x, key, params.factors, None)
    torch.testing.assert_close(masked, grouped, rtol=0, atol=1e-6)
    assert torch.equal(masked[~apply], x[~apply])
    y = x.clone()
    assert color._jitter_masked(y, key, params.factors, y) is y
    torch.testing.assert_close(y, grouped, rtol=0, atol=1e-6)


def test_grayscale_equals_torchvision_where_applied():
    x = images()
    apply = torch.arange(16) % 3 == 0
    out = grayscale(x, apply)
    expected = TF.rgb_to_grayscale(x[apply], num_output_channels=3)
    torch.testing.assert_close(out[apply], expected, rtol=0, atol=1e-6)
    assert torch.equal(out[~apply], x[~apply])


def test_a_whole_view_equals_torchvisions_compose_image_by_image():
    B = 32
    x = images(B, 40, 36)
    params = sample_view_params(B, 40, 36, MOCO_V2, torch.Generator().manual_seed(4))
    out = augment_view(x, params, MOCO_V2, 32)
    for b in range(B):
        torch.testing.assert_close(out[b], torchvision_view(x[b], params, b, 32), rtol=0, atol=1e-5)


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = a.double().sort().values, b.double().sort().values
    grid = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, grid, right=True) / len(a)
    cdf_b = torch.searchsorted(b, grid, right=True) / len(b)
    return (cdf_a - cdf_b).abs().max().item()


def test_crop_boxes_follow_torchvisions_distribution():
    n, H, W = 20_000, 32, 32
    ours = sample_crop_params(n, H, W, (0.2, 1.0), generator=torch.Generator().manual_seed(5))
    torch.manual_seed(5)
    image = torch.empty(3, H, W)
    theirs = torch.tensor(
        [T.RandomResizedCrop.get_params(image, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]
    )
    critical = math.sqrt(-math.log(0.001 / 2) / 2) * math.sqrt(2 / n)  # KS, level 0.001
    features = {
        "area": lambda box: (box[:, 2] * box[:, 3]).float() / (H * W),
        "aspect": lambda box: box[:, 3].float() / box[:, 2].float(),
        "top": lambda box: box[:, 0].float(),
        "left": lambda box: box[:, 1].float(),
    }
    for name, feature in features.items():
        assert ks_statistic(feature(ours), feature(theirs)) < critical, name
    assert (ours >= 0).all() and (ours[:, 2:] >= 1).all()
    assert (ours[:, 0] + ours[:, 2] <= H).all() and (ours[:, 1] + ours[:, 3] <= W).all()


def test_impossible_crops_fall_back_to_torchvisions_central_crop():
    boxes = sample_crop_params(8, 10, 40, scale=(0.9, 1.0), ratio=(1.0, 1.0))  # never fits
    torch.manual_seed(0)
    expected = T.RandomResizedCrop.get_params(torch.empty(3, 10, 40), [0.9, 1.0], [1.0, 1.0])
    assert boxes.tolist() == [list(expected)] * 8 == [[0, 15, 10, 10]] * 8


def test_coin_rates_factor_ranges_and_orders_match_the_recipe():
    n = 48_000
    p = sample_view_params(n, 32, 32, MOCO_V2, torch.Generator().manual_seed(6))
    for name, coins, rate in (
        ("flip", p.flip, 0.5),
        ("jitter", p.jitter, 0.8),
        ("gray", p.gray, 0.2),
    ):
        assert coins.dtype == torch.bool
        standard_error = math.sqrt(rate * (1 - rate) / n)
        assert abs(coins.float().mean().item() - rate) < 4 * standard_error, name
    low, high = p.factors.amin(dim=0), p.factors.amax(dim=0)
    assert (low >= torch.tensor([0.6, 0.6, 0.6, -0.1])).all()
    assert (high <= torch.tensor([1.4, 1.4, 1.4, 0.1])).all()
    torch.testing.assert_close(low, torch.tensor([0.6, 0.6, 0.6, -0.1]), atol=1e-3, rtol=0)
    torch.testing.assert_close(high, torch.tensor([1.4, 1.4, 1.4, 0.1]), atol=1e-3, rtol=0)
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    orders, counts = torch.unique(p.order, dim=0, return_counts=True)
    assert len(orders) == 24
    assert (counts - n / 24).abs().max() < 5 * math.sqrt(n / 24 * (23 / 24))


def test_every_image_gets_its_own_views():
    one = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    copies = one.expand(64, 3, 32, 32)
    x1, x2 = moco_v2_views()(copies, torch.Generator().manual_seed(7))
    assert len(torch.unique(x1.flatten(1), dim=0)) == 64  # no two views alike
    assert not any(torch.equal(a, b) for a, b in zip(x1, x2, strict=True))


def test_seeded_generator_gives_identical_views_and_forward_is_two_views():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    views = moco_v2_views()
    a = views(x, torch.Generator().manual_seed(8))
    b = views(x, torch.Generator().manual_seed(8))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    g = torch.Generator().manual_seed(8)
    first, second = views.view(x, g), views.view(x, g)
    assert torch.equal(a[0], first) and torch.equal(a[1], second)
    torch.manual_seed(9)
    c = views(x)
    torch.manual_seed(9)
    assert all(torch.equal(u, v) for u, v in zip(c, views(x), strict=True))


def test_uint8_input_equals_float_input_over_255_and_output_is_float32():
    x = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8)
    views = moco_v2_views(24)
    a = views(x, torch.Generator().manual_seed(10))
    c = views(x.double() / 255, torch.Generator().manual_seed(10))
    for u, v in zip(a, c, strict=True):
        assert u.shape == (8, 3, 24, 24) and u.dtype == torch.float32 and u.is_contiguous()
        torch.testing.assert_close(u, v, rtol=0, atol=1e-5)


def test_views_are_normalised_with_mean_and_std():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    plain = moco_v2_views().view(x, torch.Generator().manual_seed(11))
    normed = moco_v2_views(mean=mean, std=std).view(x, torch.Generator().manual_seed(11))
    torch.testing.assert_close(normed, TF.normalize(plain, mean, std), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        Normalize(mean, std)(x), TF.normalize(x.float() / 255, mean, std), rtol=0, atol=1e-6
    )


def test_mean_and_std_are_non_persistent_buffers_that_move_with_to():
    views = moco_v2_views(mean=(0.5,) * 3, std=(0.2,) * 3)
    assert views.mean.shape == views.std.shape == (1, 3, 1, 1)
    assert "mean" not in views.state_dict() and "std" not in views.state_dict()
    moved = views.to("meta")
    assert moved.mean.device.type == "meta" and moved.std.device.type == "meta"
    assert moco_v2_views().mean is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, "size must be an integer >= 1, got 0"),
        ({"size": 32.0}, "size must be an integer >= 1, got 32.0"),
        ({"views": ()}, r"views must be a recipe name or ViewSpecs, got \(\)"),
        ({"views": ({"scale": (0.2, 1.0)},)}, "views must be a recipe name or ViewSpecs"),
        ({"views": "mocov2"}, r"augmentation must be one of \('moco_v2', .*got 'mocov2'"),
        ({"mean": (0.5, 0.5, 0.5)}, "mean and std must both be given or both None"),
        ({"mean": (0.5, 0.5), "std": (0.2, 0.2, 0.2)}, "mean must be 3 finite numbers"),
        ({"mean": torch.tensor(0.5), "std": (0.2, 0.2, 0.2)}, "mean must be 3 finite numbers"),
        ({"mean": (0.5,) * 3, "std": (0.2, 0.0, 0.2)}, "std must be 3 finite numbers > 0"),
    ],
)
def test_bad_view_arguments_are_value_errors_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchViews(**({"views": "moco_v2"} | kwargs))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": (0.5, 0.2)}, r"scale must be \(low, high\) with 0 < low <= high <= 1, got"),
        ({"scale": (0.0, 1.0)}, r"scale must be .* got \(0.0, 1.0\)"),
        ({"scale": (0.5, 1.5)}, r"scale must be .* got \(0.5, 1.5\)"),
        ({"ratio": (0.0, 1.0)}, "ratio must be"),
        ({"jitter": (0.4, 0.4, 0.4, 0.7)}, "jitter must be .* got"),
        ({"jitter": (-0.1, 0.4, 0.4, 0.1)}, "jitter must be"),
        ({"jitter_p": 1.5}, r"jitter_p must be a number in \[0, 1\], got 1.5"),
        ({"grayscale_p": -0.1}, "grayscale_p must be a number in"),
        ({"flip_p": 2}, "flip_p must be a number in"),
        ({"blur_p": True}, r"blur_p must be a number in \[0, 1\], got True"),
        ({"solarize_p": -1}, "solarize_p must be a number in"),
        ({"blur_sigma": (2.0, 0.1)}, r"blur_sigma must be \(low, high\) with 0 < low <= high"),
        ({"interpolation": "nearest"}, r"interpolation must be one of .* got 'nearest'"),
    ],
)
def test_bad_view_specs_are_value_errors_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViewSpec(**kwargs)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(3, 32, 32), r"images must be a \(B, 3, H, W\) tensor, got \(3, 32, 32\)"),
        (torch.zeros(2, 1, 32, 32), r"images must be a \(B, 3, H, W\) tensor, got \(2, 1, 32"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.int32), "uint8 or floating point, got .*int32"),
    ],
)
def test_bad_images_are_value_errors(x, match):
    with pytest.raises(ValueError, match=match):
        moco_v2_views()(x)


def test_bad_parameter_shapes_are_value_errors():
    x = images(B=4)
    with pytest.raises(ValueError, match=r"boxes must have shape \(4, 4\), got \(3, 4\)"):
        resized_crop(x, torch.zeros(3, 4, dtype=torch.int64), 32)
    with pytest.raises(ValueError, match=r"flip must have shape \(4,\)"):
        resized_crop(x, torch.tensor([[0, 0, 32, 32]] * 4), 32, torch.zeros(5, dtype=torch.bool))
    apply, factors, order = torch.ones(4, dtype=torch.bool), torch.ones(4, 4), torch.eye(4).long()
    with pytest.raises(ValueError, match=r"order must have shape \(4, 4\), got \(4, 3\)"):
        color_jitter(x, apply, factors, order[:, :3])
    with pytest.raises(ValueError, match=r"apply must have shape \(4,\)"):
        color_jitter(x, apply[:2], factors, order)
    with pytest.raises(ValueError, match=r"scale must be .* got \(0.0, 1.0\)"):
        sample_crop_params(4, 32, 32, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="interpolation must be 'bilinear' or 'bicubic'"):
        resized_crop(x, torch.tensor([[0, 0, 32, 32]] * 4), 32, interpolation="area")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["moco_v2", "solo_symmetric", "solo_asymmetric"])
def test_views_on_cuda_equal_the_same_parameters_on_cpu_and_follow_a_cuda_generator(name):
    x = images(B=32)
    for spec in RECIPES[name]:
        params = sample_view_params(32, 32, 32, spec, torch.Generator().manual_seed(12))
        expected = augment_view(x, params, spec, 32)
        on_gpu = type(params)(*(None if t is None else t.cuda() for t in params))
        on_gpu = augment_view(x.cuda(), on_gpu, spec, 32)
        torch.testing.assert_close(on_gpu.cpu(), expected, rtol=0, atol=1e-5)
    views = BatchViews(name, 32, mean=(0.5,) * 3, std=(0.2,) * 3).cuda()
    a = views(x.cuda(), torch.Generator("cuda").manual_seed(13))
    b = views(x.cuda(), torch.Generator("cuda").manual_seed(13))
    assert a[0].is_cuda and all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="generator must be on the device of images"):
        views(x.cuda(), torch.Generator().manual_seed(0))
