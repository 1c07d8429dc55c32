"""Batched MoCo v2 views: torchvision's per-image transforms, for every image of a batch at once."""

import math

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from infonce.augment import (
    MoCoV2Views,
    Normalize,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    grayscale,
    resized_crop,
    sample_crop_boxes,
    sample_view_params,
)

TORCHVISION_OPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def images(B=16, H=32, W=32, seed=0):
    return torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("H", "W"), [(32, 32), (40, 36), (64, 48)])
def test_resized_crop_and_flip_equal_torchvision_image_by_image(H, W):
    g = torch.Generator().manual_seed(1)
    x = images(H=H, W=W)
    boxes = sample_crop_boxes(16, H, W, scale=(0.05, 1.0), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    out = resized_crop(x, boxes, 32, flip)
    assert out.shape == (16, 3, 32, 32)
    for b in range(16):
        expected = TF.resized_crop(x[b], *boxes[b].tolist(), [32, 32], antialias=True)
        expected = TF.hflip(expected) if flip[b] else expected
        torch.testing.assert_close(out[b], expected, rtol=0, atol=1e-5)


def test_downscaling_crops_are_antialiased_like_torchvision():
    x = images(B=2, H=96, W=96)
    boxes = torch.tensor([[0, 0, 96, 96], [10, 20, 70, 50]])
    out = resized_crop(x, boxes, 24)
    for b in range(2):
        expected = TF.resized_crop(x[b], *boxes[b].tolist(), [24, 24], antialias=True)
        torch.testing.assert_close(out[b], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("op", range(4), ids=["brightness", "contrast", "saturation", "hue"])
def test_each_jitter_op_equals_torchvision_with_a_factor_per_image(op):
    x = images()
    g = torch.Generator().manual_seed(op)
    factor = (
        torch.rand(16, generator=g) * 0.2 - 0.1 if op == 3 else torch.rand(16, generator=g) + 0.5
    )
    ours = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)[op]
    out = ours(x, factor)
    for b in range(16):
        expected = TORCHVISION_OPS[op](x[b], factor[b].item())
        # hue: the HSV -> RGB closed form differs from torchvision's table by float rounding
        torch.testing.assert_close(out[b], expected, rtol=0, atol=1e-6 if op == 3 else 0)


def test_color_jitter_applies_each_images_ops_in_its_own_order():
    params = sample_view_params(16, 32, 32, generator=torch.Generator().manual_seed(3))
    x = images()
    out = color_jitter(x, params.jitter, params.factors, params.order)
    assert 0 < params.jitter.sum() < 16  # some images jittered, some not
    for b in range(16):
        expected = x[b]
        if params.jitter[b]:
            for op in params.order[b].tolist():
                expected = TORCHVISION_OPS[op](expected, params.factors[b, op].item())
        torch.testing.assert_close(out[b], expected, rtol=0, atol=1e-6)


def test_grayscale_equals_torchvision_where_applied():
    x = images()
    apply = torch.arange(16) % 3 == 0
    out = grayscale(x, apply)
    torch.testing.assert_close(out[apply], TF.rgb_to_grayscale(x[apply], 3), rtol=0, atol=0)
    assert torch.equal(out[~apply], x[~apply])


def test_a_whole_view_equals_torchvision_composed_per_image():
    views = MoCoV2Views(32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    x = images(B=24)
    params = sample_view_params(24, 32, 32, generator=torch.Generator().manual_seed(4))
    from infonce.augment import augment

    out = views.normalize(augment(x, params, 32))
    for b in range(24):
        expected = TF.resized_crop(x[b], *params.boxes[b].tolist(), [32, 32], antialias=True)
        if params.jitter[b]:
            for op in params.order[b].tolist():
                expected = TORCHVISION_OPS[op](expected, params.factors[b, op].item())
        if params.gray[b]:
            expected = TF.rgb_to_grayscale(expected, 3)
        if params.flip[b]:
            expected = TF.hflip(expected)
        expected = TF.normalize(expected, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
        torch.testing.assert_close(out[b], expected, rtol=0, atol=1e-5)


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = a.double().sort().values, b.double().sort().values
    grid = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, grid, right=True) / len(a)
    cdf_b = torch.searchsorted(b, grid, right=True) / len(b)
    return (cdf_a - cdf_b).abs().max().item()


def test_crop_boxes_follow_torchvisions_distribution():
    n, H, W = 20_000, 32, 32
    ours = sample_crop_boxes(n, H, W, (0.2, 1.0), generator=torch.Generator().manual_seed(5))
    torch.manual_seed(5)
    theirs = torch.tensor(
        [
            T.RandomResizedCrop.get_params(torch.empty(3, H, W), [0.2, 1.0], [3 / 4, 4 / 3])
            for _ in range(n)
        ]
    )
    critical = 1.95 * math.sqrt(2 / n)  # two-sample KS at the 0.001 level
    features = {
        "area": lambda box: (box[:, 2] * box[:, 3]).float() / (H * W),
        "aspect": lambda box: box[:, 3].float() / box[:, 2].float(),
        "top": lambda box: box[:, 0].float(),
        "left": lambda box: box[:, 1].float(),
    }
    for name, feature in features.items():
        assert ks_statistic(feature(ours), feature(theirs)) < critical, name
    assert (ours[:, 0] + ours[:, 2] <= H).all() and (ours[:, 1] + ours[:, 3] <= W).all()


def test_impossible_crops_fall_back_to_torchvisions_central_crop():
    boxes = sample_crop_boxes(8, 10, 40, scale=(0.9, 1.0), ratio=(1.0, 1.0))  # never fits
    torch.manual_seed(0)
    expected = T.RandomResizedCrop.get_params(torch.empty(3, 10, 40), [0.9, 1.0], [1.0, 1.0])
    assert boxes.tolist() == [list(expected)] * 8 == [[0, 15, 10, 10]] * 8


def test_coin_rates_factor_ranges_and_orders_match_the_recipe():
    n = 48_000
    p = sample_view_params(n, 32, 32, generator=torch.Generator().manual_seed(6))
    for name, coins, rate in (
        ("flip", p.flip, 0.5),
        ("jitter", p.jitter, 0.8),
        ("gray", p.gray, 0.2),
    ):
        error = 4 * math.sqrt(rate * (1 - rate) / n)
        assert abs(coins.float().mean().item() - rate) < error, name
    low, high = p.factors.amin(dim=0), p.factors.amax(dim=0)
    torch.testing.assert_close(low, torch.tensor([0.6, 0.6, 0.6, -0.1]), atol=1e-3, rtol=0)
    torch.testing.assert_close(high, torch.tensor([1.4, 1.4, 1.4, 0.1]), atol=1e-3, rtol=0)
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    counts = torch.unique(p.order, dim=0, return_counts=True)[1]
    assert len(counts) == 24 and (counts - n / 24).abs().max() < 5 * math.sqrt(n / 24)


def test_every_image_gets_its_own_views():
    one = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    x1, x2 = MoCoV2Views(32)(one.expand(64, 3, 32, 32), torch.Generator().manual_seed(7))
    distinct = {tuple(v.flatten()[:64].tolist()) for v in x1}
    assert len(distinct) > 60  # not one view copied 64 times
    assert not torch.equal(x1, x2)


def test_seeded_generator_gives_identical_views_and_uint8_equals_float():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    views = MoCoV2Views(32)
    a = views(x, torch.Generator().manual_seed(8))
    b = views(x, torch.Generator().manual_seed(8))
    c = views(x.float() / 255, torch.Generator().manual_seed(8))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    for u, v in zip(a, c, strict=True):
        torch.testing.assert_close(u, v, rtol=0, atol=1e-6)
    assert a[0].dtype == torch.float32 and a[0].shape == (8, 3, 32, 32)


def test_normalisation_and_output_size():
    x = torch.full((4, 3, 40, 40), 128, dtype=torch.uint8)
    views = MoCoV2Views(
        24, jitter_p=0.0, grayscale_p=0.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    )
    out = views.view(x)
    assert out.shape == (4, 3, 24, 24)
    torch.testing.assert_close(out, torch.full_like(out, (128 / 255 - 0.5) / 0.5))
    torch.testing.assert_close(
        Normalize((0.5,) * 3, (0.5,) * 3)(x),
        torch.full((4, 3, 40, 40), (128 / 255 - 0.5) / 0.5),
    )


def test_module_moves_with_to():
    views = MoCoV2Views(32, mean=(0.5,) * 3, std=(0.2,) * 3).to(torch.float64)
    assert views.normalize.mean.dtype == torch.float64 and "mean" not in views.state_dict()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, "size must be an integer >= 1, got 0"),
        ({"scale": (0.5, 0.2)}, r"scale must be .* got \(0.5, 0.2\)"),
        ({"scale": (0.0, 1.0)}, "scale must be"),
        ({"ratio": (0.0, 1.0)}, "ratio must be"),
        ({"jitter": (0.4, 0.4, 0.4, 0.7)}, "jitter must be"),
        ({"jitter_p": 1.5}, "jitter_p must be a probability in \\[0, 1\\], got 1.5"),
        ({"grayscale_p": -0.1}, "grayscale_p must be a probability"),
        ({"flip_p": 2}, "flip_p must be a probability"),
        ({"mean": (0.5, 0.5), "std": (0.2, 0.2, 0.2)}, "mean and std must be 3 values"),
    ],
)
def test_bad_hyperparameters_are_value_errors_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MoCoV2Views(**kwargs)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(3, 32, 32), r"images must be a \(B, 3, H, W\) tensor, got \(3, 32, 32\)"),
        (torch.zeros(2, 1, 32, 32), r"got \(2, 1, 32, 32\)"),
        (
            torch.zeros(2, 3, 32, 32, dtype=torch.int32),
            "uint8 or floating point, got dtype torch.int32",
        ),
    ],
)
def test_bad_images_are_value_errors(x, match):
    with pytest.raises(ValueError, match=match):
        MoCoV2Views(32)(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_views_on_cuda_equal_the_same_parameters_on_cpu():
    from infonce.augment import augment

    x = images(B=32)
    params = sample_view_params(32, 32, 32, generator=torch.Generator().manual_seed(9))
    expected = augment(x, params, 32)
    on_gpu = augment(x.cuda(), type(params)(*(t.cuda() for t in params)), 32)
    torch.testing.assert_close(on_gpu.cpu(), expected, rtol=0, atol=1e-5)
