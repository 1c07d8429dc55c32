"""PIL's Gaussian blur and solarisation on a batch, with a sigma and a coin of its own per image.

:func:`gaussian_blur` is PIL's ``ImageFilter.GaussianBlur(radius=sigma)`` (what MoCo v2,
lightly and solo-learn apply): not a sampled Gaussian kernel but three passes of a box blur
whose fractional radius gives the box cascade the Gaussian's variance (Pillow's
``BoxBlur.c``), with the edge pixels repeated. Each pass is linear, so the three passes of
every image are one (S, S) matrix per axis, and a batch is blurred by two batched matrix
products, like the crop of :mod:`.crop`. PIL rounds to uint8 after every pass; here nothing
is rounded, so the two differ by about a level of 255.
"""

import torch
from torch import Tensor

BLUR_PASSES = 3  # PIL's GaussianBlur: three box blurs
SOLARIZE_THRESHOLD = 128  # PIL's ImageOps.solarize: levels >= 128 of 255 are inverted


def box_radius(sigma: Tensor) -> Tensor:
    """Pillow's ``_gaussian_blur_radius``: the fractional radius r of a box whose
    ``BLUR_PASSES`` passes have variance ``sigma ** 2`` (Gwosdek et al., 2011).

    Shape:
        sigma (B,) float -> (B,) float64, the box covering ``[-r, r]``.
    """
    sigma2 = sigma.double() ** 2 / BLUR_PASSES
    whole = torch.floor((torch.sqrt(12.0 * sigma2 + 1.0) - 1.0) / 2.0)  # integer part
    fraction = (2 * whole + 1) * (whole * (whole + 1) - 3 * sigma2)
    return whole + fraction / (6 * (sigma2 - (whole + 1) ** 2))


def max_box_reach(sigma: float) -> int:
    """How far (in pixels, >= 1) one box pass of a blur of at most ``sigma`` reaches."""
    return int(box_radius(torch.tensor([float(sigma)])).item()) + 1


def box_pass_matrix(
    sigma: Tensor, apply: Tensor, size: int, reach: int, dtype: torch.dtype = torch.float32
) -> Tensor:
    """One of the box passes of PIL's Gaussian blur along an axis of ``size`` pixels, as a
    matrix per image; the identity where ``apply`` is False.

    One pass gives pixel x the weight ``w = 1 / (2 r + 1)`` on each of ``x - R .. x + R``
    (``R = floor(r)``) and ``(1 - (2 R + 1) w) / 2`` on ``x +- (R + 1)``, an index beyond the
    edge standing for the edge pixel (PIL's fixed-point weights, to 2 ** -24).

    Args:
        sigma: (B,) the blur's standard deviation per image.
        apply: (B,) bool, which images are blurred.
        size: The axis' length S.
        reach: At least ``floor(r) + 1`` for every sigma (:func:`max_box_reach`), the
            offsets considered; a static number, so no value is read back from the device.
        dtype: Of the result (float64 holds PIL's weights exactly).

    Shape:
        sigma (B,), apply (B,) -> (B, S, S) ``dtype``, row x holding the weights of output x.
    """
    r = box_radius(sigma)  # (B,) float64
    R = torch.floor(r)
    unit = float(1 << 24)
    ww = torch.floor(unit / (2 * r + 1))  # PIL's fixed point
    fw = torch.floor((unit - (2 * R + 1) * ww) / 2)
    offsets = torch.arange(-reach, reach + 1, device=sigma.device)  # (K,)
    distance = offsets.abs().to(torch.float64)
    weights = torch.where(distance <= R[:, None], ww[:, None], 0.0)  # (B, K)
    weights = torch.where(distance == R[:, None] + 1, fw[:, None], weights) / unit
    identity = (offsets == 0).to(torch.float64).expand_as(weights)
    weights = torch.where(apply[:, None], weights, identity)
    x = torch.arange(size, device=sigma.device)
    source = (x[:, None] + offsets).clamp_(0, size - 1)  # (S, K): the pixel each tap reads
    shifts = torch.zeros(len(offsets), size, size, dtype=torch.float64, device=sigma.device)
    shifts.scatter_add_(2, source.T[:, :, None], torch.ones_like(shifts[:, :, :1]))  # one-hot
    return torch.einsum("bk,kxj->bxj", weights, shifts).to(dtype)  # (B, S, S)


def gaussian_blur(images: Tensor, sigma: Tensor, apply: Tensor, reach: int) -> Tensor:
    """PIL's ``GaussianBlur(radius=sigma[b])`` on the images where ``apply``, in float.

    Equal to PIL's blur without its rounding to uint8 after each of its six passes (to about
    one level of 255). The other images are returned unchanged (an identity matrix product).

    Shape:
        images (B, C, S, S) float in [0, 1], sigma (B,), apply (B,) bool -> (B, C, S, S).

    Raises:
        ValueError: images not square (B, C, S, S).
    """
    B, C, H, W = images.shape
    if H != W:
        raise ValueError(f"images must be square (B, C, S, S), got {tuple(images.shape)}")
    one_pass = box_pass_matrix(sigma, apply, H, reach)  # (B, S, S)
    blur = torch.linalg.matrix_power(one_pass, BLUR_PASSES)[:, None]  # (B, 1, S, S)
    return blur @ images @ blur.transpose(-1, -2)  # down the columns, then along the rows


def solarize(images: Tensor, apply: Tensor) -> Tensor:
    """PIL's ``ImageOps.solarize`` (threshold 128) on the images where ``apply``: every value
    ``>= 128 / 255`` becomes ``1 - value`` (torchvision's ``solarize`` on float images).

    Shape:
        images (B, C, H, W) float in [0, 1], apply (B,) bool -> (B, C, H, W).
    """
    flip = (images >= SOLARIZE_THRESHOLD / 255) & apply.view(-1, 1, 1, 1)
    return torch.where(flip, 1.0 - images, images)
