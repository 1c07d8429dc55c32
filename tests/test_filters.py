"""The ops that only some recipes use (PIL's blur, solarisation, the bicubic crop), and every
recipe's two paths, batched and PIL, drawing the same distribution of views."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode

from infonce.trainer.augment.crop import resized_crop, sample_crop_params
from infonce.trainer.augment.filters import (
    BLUR_PASSES,
    box_pass_matrix,
    gaussian_blur,
    max_box_reach,
    solarize,
)
from infonce.trainer.augment.recipes import RECIPES
from infonce.trainer.augment.transforms import view_transform
from infonce.trainer.augment.views import BatchViews, sample_view_params

LEVEL = 1 / 255


def uint8_images(B=32, H=32, W=32, seed=0):
    """Random uint8 images with flat patches and hard edges (where filters differ most)."""
    x = torch.randint(0, 256, (B, 3, H, W), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(seed))  # fmt: skip
    x[0] = 0
    x[0, :, H // 4 : H // 2, 3:9] = 255
    return x


def pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def from_pil(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def test_box_passes_rounded_like_pil_give_pils_gaussian_blur_exactly():
    """PIL blurs in uint8: three horizontal box passes, then three vertical, each rounded.
    Rounding our pass matrices the same way gives its images bit for bit, sigma by sigma."""
    x = uint8_images(B=24)
    sigma = torch.linspace(0.1, 2.0, 24)
    one_pass = box_pass_matrix(sigma, torch.ones(24, dtype=torch.bool), 32, max_box_reach(2.0),
                               dtype=torch.float64)  # fmt: skip
    for b in range(24):
        v = x[b].double()
        for _ in range(BLUR_PASSES):
            v = torch.floor(v @ one_pass[b].T + 0.5)  # along the rows
        for _ in range(BLUR_PASSES):
            v = torch.floor(one_pass[b] @ v + 0.5)  # down the columns
        expected = from_pil(pil(x[b]).filter(ImageFilter.GaussianBlur(float(sigma[b]))))
        assert torch.equal(v.to(torch.uint8), expected), float(sigma[b])


def test_blur_in_float_is_pils_blur_to_its_rounding_and_leaves_other_images_alone():
    x = uint8_images(B=48, seed=1)
    g = torch.Generator().manual_seed(2)
    sigma = 0.1 + 1.9 * torch.rand(48, generator=g)
    apply = torch.rand(48, generator=g) < 0.5
    out = gaussian_blur(x / 255, sigma, apply, max_box_reach(2.0))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.equal(out[~apply], x[~apply] / 255)  # an identity matrix product: exact
    errors = []
    for b in torch.nonzero(apply).flatten().tolist():
        expected = from_pil(pil(x[b]).filter(ImageFilter.GaussianBlur(float(sigma[b])))) / 255
        errors.append((out[b] - expected).abs())
    errors = torch.stack(errors)
    assert errors.max() < 3.5 * LEVEL and errors.mean() < 0.5 * LEVEL  # PIL's six roundings


def test_blur_refuses_images_that_are_not_square():
    with pytest.raises(ValueError, match=r"images must be square \(B, C, S, S\), got"):
        gaussian_blur(torch.zeros(2, 3, 8, 9), torch.ones(2), torch.ones(2, dtype=bool), 2)


def test_solarize_inverts_levels_from_128_like_pil_and_torchvision():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16)
    out = solarize(x / 255, torch.tensor([True, False]))
    assert torch.equal(out[1], x[1] / 255)
    assert torch.equal(out[0], TF.solarize(x[0] / 255, 128 / 255))
    torch.testing.assert_close(out[0], from_pil(ImageOps.solarize(pil(x[0]), 128)) / 255,
                               rtol=0, atol=1e-6)  # fmt: skip


def test_bicubic_crops_equal_pils_resize_to_its_rounding():
    """The resident path's crops are never larger than the output (images are stored at the
    output size), so PIL resizes them upwards, the horizontal pass first."""
    x = uint8_images(B=32, seed=3)
    g = torch.Generator().manual_seed(4)
    boxes = sample_crop_params(32, 32, 32, (0.08, 1.0), generator=g)
    flip = torch.rand(32, generator=g) < 0.5
    out = resized_crop(x, boxes, 32, flip, interpolation="bicubic")
    assert out.min() >= 0 and out.max() <= 1  # PIL clips the cubic's overshoot
    for b in range(32):
        image = TF.resized_crop(pil(x[b]), *boxes[b].tolist(), [32, 32],
                                interpolation=InterpolationMode.BICUBIC)  # fmt: skip
        image = TF.hflip(image) if flip[b] else image
        torch.testing.assert_close(out[b], from_pil(image) / 255, rtol=0, atol=1.2 * LEVEL)


def test_bicubic_resize_weights_are_torchs_antialiased_bicubic():
    x = torch.rand(6, 3, 24, 24, generator=torch.Generator().manual_seed(5)) * 0.5 + 0.25
    boxes = torch.tensor([[0, 0, 24, 24], [3, 2, 10, 17], [5, 5, 19, 9]] * 2)
    out = resized_crop(x, boxes, 32, interpolation="bicubic")
    for b in range(6):
        expected = TF.resized_crop(
            x[b],
            *boxes[b].tolist(),
            [32, 32],
            interpolation=InterpolationMode.BICUBIC,
            antialias=True,
        )
        torch.testing.assert_close(out[b], expected.clamp(0, 1), rtol=0, atol=1e-5)  # fmt: skip


def test_blur_and_solarise_coins_and_sigmas_follow_the_recipe():
    n = 40_000
    first, second = RECIPES["solo_symmetric"][0], RECIPES["solo_asymmetric"][1]
    p = sample_view_params(n, 32, 32, first, torch.Generator().manual_seed(6))
    q = sample_view_params(n, 32, 32, second, torch.Generator().manual_seed(7))
    assert p.solarize is None and q.blur is None and q.sigma is None  # not drawn at all
    for coins, rate in ((p.blur, 0.5), (q.solarize, 0.2)):
        assert abs(coins.float().mean().item() - rate) < 4 * math.sqrt(rate * (1 - rate) / n)
    low, high = first.blur_sigma
    assert low <= p.sigma.min() and p.sigma.max() <= high
    uniform = (p.sigma.double() - low) / (high - low)
    grid = uniform.sort().values
    ks = (grid - torch.arange(1, n + 1, dtype=torch.float64) / n).abs().max().item()
    assert ks < 1.95 / math.sqrt(n)  # KS against U(low, high), level 0.001


def image_statistics(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image: brightness, colourfulness, edge energy (what jitter, grayscale, solarise,
    blur and the crop's zoom change), to 1e-5 (a gray image's colourfulness is 0, not 1e-9)."""
    statistics = {
        "mean": x.mean(dim=(1, 2, 3)),
        "colour": (x - x.mean(dim=1, keepdim=True)).abs().mean(dim=(1, 2, 3)),
        "edges": (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3)),
    }
    return {name: torch.round(value, decimals=5) for name, value in statistics.items()}


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().sort().values, b.double().sort().values
    grid = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, grid, right=True) / len(a)
    cdf_b = torch.searchsorted(b, grid, right=True) / len(b)
    return (cdf_a - cdf_b).abs().max().item()


VIEWS = sorted({(name, i) for name, views in RECIPES.items() for i in range(len(views))
                if name != "moco_cifar10_demo"})  # the same views as simclr  # fmt: skip


@pytest.mark.parametrize(("name", "index"), VIEWS, ids=[f"{n}-{i}" for n, i in VIEWS])
def test_batched_and_pil_views_of_a_recipe_have_the_same_distribution(name, index):
    """The same 600 images through the two paths: per-image statistics drawn from one
    distribution (two-sample KS at level 0.001). A left-out or misplaced op shifts them."""
    n = 600
    smooth = torch.nn.functional.interpolate(  # natural-ish: smooth colour fields plus noise
        torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(8)), size=32,
        mode="bicubic", align_corners=False,
    )  # fmt: skip
    noise = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    x = ((0.8 * smooth + 0.2 * noise).clamp(0, 1) * 255).round().to(torch.uint8)
    spec = RECIPES[name][index]
    batched = BatchViews([spec], 32).view(x, torch.Generator().manual_seed(10))
    transform = view_transform(spec, 32, (0.0,) * 3, (1.0,) * 3)
    torch.manual_seed(11)
    per_image = torch.stack([transform(pil(image)) for image in x])
    critical = math.sqrt(-math.log(0.001 / 2) / 2) * math.sqrt(2 / n)
    ours, theirs = image_statistics(batched), image_statistics(per_image)
    for statistic in ours:
        assert ks_statistic(ours[statistic], theirs[statistic]) < critical, statistic
