"""MoCo v2 augmentation for a whole batch at once, every image with parameters of its own.

torchvision augments one image at a time on the CPU (a few hundred images/s per core), and its
v2 transforms applied to a batched tensor draw ONE crop and ONE jitter for the whole batch,
which is wrong for contrastive views. Here every image of a (B, 3, H, W) batch draws its own
crop box, flip, jitter factors and order, and grayscale coin, exactly as torchvision's
``RandomResizedCrop``, ``RandomApply([ColorJitter])``, ``RandomGrayscale`` and
``RandomHorizontalFlip`` would, and the batch is transformed with a handful of tensor ops on
whatever device it lives on:

- crop + resize + flip is one linear map per image and axis: ``Ry @ image @ Rx.T``, two
  batched matrix products with the weights of torch's antialiased bilinear resize (the
  ``antialias=True`` that torchvision uses; for upscaling it is plain bilinear);
- brightness, contrast and saturation are per-image blends, hue a per-image HSV rotation,
  applied at each of the four steps only to the images whose random order has that op there.

The functions match torchvision's tensor implementations (``torchvision.transforms.functional``
on float images) to float rounding, which the tests check image by image.
"""

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


class ViewParams(NamedTuple):
    """The random parameters of one view of a batch of B images.

    Shape:
        boxes (B, 4) int64 as (top, left, height, width); flip (B,) bool; jitter (B,) bool;
        factors (B, 4) float: brightness, contrast, saturation, hue; order (B, 4) int64, a
        permutation of 0..3 (0 brightness, 1 contrast, 2 saturation, 3 hue); gray (B,) bool.
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    gray: Tensor


def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``batch`` independent draws of ``torchvision.transforms.RandomResizedCrop.get_params``.

    Each image tries up to 10 boxes: area ``H * W * U(scale)``, aspect ratio
    ``exp(U(log ratio))``, ``w = round(sqrt(area * aspect))``, ``h = round(sqrt(area /
    aspect))`` (round half to even, as Python's ``round``); the first that fits is placed at
    a uniform random top-left corner. Where none fits, the central crop with the aspect ratio
    clamped to ``ratio`` (torchvision's fallback). All draws for all images are made at once.

    Returns:
        (batch, 4) int64 boxes ``(top, left, h, w)``.
    """
    attempts = 10
    uniform = torch.rand(  # (B, 10, 4): area, log-ratio, top, left
        batch, attempts, 4, generator=generator, device=device, dtype=torch.float64
    )
    area = height * width * (scale[0] + (scale[1] - scale[0]) * uniform[..., 0])  # (B, 10)
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * uniform[..., 1])  # (B, 10)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # (B, 10)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # (B, 1): first fitting attempt
    found = fits.any(dim=1)  # (B,)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]  # (B,)
    corner = uniform.gather(1, first[..., None].expand(-1, -1, 4))[:, 0, 2:]  # (B, 2)
    top = torch.floor(corner[:, 0] * (height - h + 1))  # randint(0, H - h + 1)
    left = torch.floor(corner[:, 1] * (width - w + 1))

    # torchvision's fallback: the central crop, aspect ratio clamped to `ratio`
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    fallback = torch.tensor(
        [(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=torch.float64, device=device
    )
    boxes = torch.stack([top, left, h, w], dim=1)  # (B, 4)
    return torch.where(found[:, None], boxes, fallback).to(torch.int64)


def resize_matrix(start: Tensor, length: Tensor, size: int, extent: int) -> Tensor:
    """Rows of weights that resize the segment ``[start, start + length)`` of an axis to ``size``.

    The weights of torch's antialiased bilinear interpolation (``F.interpolate(...,
    mode="bilinear", antialias=True, align_corners=False)``) on the cropped segment: a
    triangle filter centred at ``(o + 0.5) * length / size``, widened by the scale when
    downscaling, normalised to sum to one. For upscaling this is exactly plain bilinear
    interpolation with the source coordinate clamped to the segment.

    Args:
        start: (B,) int64 first pixel of each segment.
        length: (B,) int64 segment lengths (>= 1).
        size: output length S.
        extent: the axis length (H or W) the weights index into.

    Returns:
        (B, size, extent) float32; row o of image b weighs the pixels of its segment only.
    """
    device = start.device
    scale = (length.to(torch.float64) / size)[:, None, None]  # (B, 1, 1)
    support = scale.clamp(min=1.0)  # the triangle's half-width in input pixels
    center = scale * (torch.arange(size, device=device, dtype=torch.float64)[None, :, None] + 0.5)
    pixel = torch.arange(extent, device=device, dtype=torch.float64)[None, None, :]
    local = pixel - start[:, None, None]  # (B, 1, extent): position inside the segment
    weight = (1.0 - (local + 0.5 - center).abs() / support).clamp(min=0.0)  # (B, S, extent)
    weight = weight * ((local >= 0) & (local < length[:, None, None]))  # inside the segment only
    return (weight / weight.sum(dim=2, keepdim=True)).to(torch.float32)


def resized_crop(images: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Crop every image to its box, resize it to (size, size), and mirror it where ``flip``.

    Equal (to float rounding) to ``torchvision.transforms.functional.resized_crop(image, top,
    left, h, w, [size, size], antialias=True)`` followed by ``hflip`` where flipped, for each
    image, done as two batched matrix products: ``Ry @ image @ Rx.T``.

    Shape:
        images (B, C, H, W) float, boxes (B, 4) int64 ``(top, left, h, w)``, flip (B,) bool;
        output (B, C, size, size).
    """
    B, C, H, W = images.shape
    top, left, h, w = boxes.unbind(dim=1)
    rows = resize_matrix(top, h, size, H).to(images.dtype)  # (B, S, H)
    cols = resize_matrix(left, w, size, W).to(images.dtype)  # (B, S, W)
    if flip is not None:
        cols = torch.where(flip[:, None, None], cols.flip(1), cols)  # mirrored output columns
    out = torch.bmm(images.reshape(B, C * H, W), cols.transpose(1, 2))  # (B, C*H, S)
    out = out.view(B, C, H, size).transpose(1, 2).reshape(B, H, C * size)  # (B, H, C*S)
    out = torch.bmm(rows, out)  # (B, S, C*S)
    return out.view(B, size, C, size).transpose(1, 2).contiguous()  # (B, C, S, S)


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """Luma ``0.2989 R + 0.587 G + 0.114 B``, as torchvision. (B, 3, H, W) -> (B, 1, H, W)."""
    r, g, b = images.unbind(dim=1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    f = factor[:, None, None, None]  # (B, 1, 1, 1)
    return (f * images + (1.0 - f) * other).clamp(0.0, 1.0)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's ``adjust_brightness``, a factor per image. images (B, 3, H, W) in [0, 1]."""
    return _blend(images, torch.zeros_like(images), factor)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's ``adjust_contrast``: blend with the image's mean gray level, per image."""
    mean = rgb_to_grayscale(images).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return _blend(images, mean, factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's ``adjust_saturation``: blend with the grayscale image, per image."""
    return _blend(images, rgb_to_grayscale(images), factor)


def adjust_hue(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's ``adjust_hue``: rotate the HSV hue by ``factor`` (in [-0.5, 0.5]) turns.

    The RGB -> HSV conversion is torchvision's; HSV -> RGB uses the closed form
    ``v - v s clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``, n = 5, 3, 1 for R, G,
    B, equal to torchvision's six-sector table up to float rounding.
    """
    r, g, b = images.unbind(dim=1)  # (B, H, W) each
    maxc, _ = images.max(dim=1)
    minc, _ = images.min(dim=1)
    same = maxc == minc
    chroma = maxc - minc
    s = chroma / torch.where(same, torch.ones_like(maxc), maxc)
    divisor = torch.where(same, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    is_r, is_g = maxc == r, (maxc == g) & (maxc != r)
    h = torch.where(is_r, bc - gc, torch.where(is_g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    h = torch.remainder(h + factor[:, None, None], 1.0)  # (B, H, W), rotated
    n = torch.tensor([5.0, 3.0, 1.0], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h[:, None], 6.0)  # (B, 3, H, W)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    v = maxc[:, None]
    return (v - v * s[:, None] * ramp).clamp(0.0, 1.0)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(images: Tensor, apply: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """torchvision's ``ColorJitter`` with parameters per image, where ``apply``.

    At step t = 0..3, image b undergoes op ``order[b, t]`` (0 brightness, 1 contrast,
    2 saturation, 3 hue) with factor ``factors[b, op]``; each op runs only on the images that
    need it at that step.

    Shape:
        images (B, 3, H, W) float in [0, 1]; apply (B,) bool; factors (B, 4); order (B, 4)
        int64; output (B, 3, H, W).
    """
    out = images.clone()
    for step in range(4):
        for op, fn in enumerate(_JITTER_OPS):
            index = torch.nonzero(apply & (order[:, step] == op))[:, 0]  # (b,)
            if index.numel():
                out[index] = fn(out[index], factors[index, op])
    return out


def grayscale(images: Tensor, apply: Tensor) -> Tensor:
    """Replace the images where ``apply`` by their gray level on all three channels."""
    gray = rgb_to_grayscale(images).expand_as(images)
    return torch.where(apply[:, None, None, None], gray, images)


def sample_view_params(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> ViewParams:
    """Draw the parameters of one view for each of ``batch`` images.

    Brightness, contrast and saturation factors are ``U[max(0, 1 - j), 1 + j]``, hue ``U[-j,
    j]``, and the order a uniform random permutation, as ``ColorJitter.get_params``.
    """
    boxes = sample_crop_boxes(batch, height, width, scale, ratio, generator, device)
    coins = torch.rand(batch, 3, generator=generator, device=device)  # flip, jitter, gray
    u = torch.rand(batch, 4, generator=generator, device=device)
    b, c, s, hue = jitter
    low = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -hue], device=device)
    high = torch.tensor([1 + b, 1 + c, 1 + s, hue], device=device)
    order = torch.rand(batch, 4, generator=generator, device=device).argsort(dim=1)
    return ViewParams(
        boxes=boxes,
        flip=coins[:, 0] < flip_p,
        jitter=coins[:, 1] < jitter_p,
        factors=low + (high - low) * u,
        order=order,
        gray=coins[:, 2] < grayscale_p,
    )


def augment(images: Tensor, params: ViewParams, size: int) -> Tensor:
    """One view: crop + resize + flip, color jitter, grayscale. Floats in [0, 1] in and out.

    Shape:
        images (B, 3, H, W) float in [0, 1]; output (B, 3, size, size).
    """
    out = resized_crop(images, params.boxes, size, params.flip).clamp_(0.0, 1.0)
    out = color_jitter(out, params.jitter, params.factors, params.order)
    return grayscale(out, params.gray)


def _check_images(images: Tensor) -> Tensor:
    """(B, 3, H, W) uint8 or float -> float32 in [0, 1]."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if not torch.is_floating_point(images):
        raise ValueError(f"images must be uint8 or floating point, got dtype {images.dtype}")
    return images.to(torch.float32)


class Normalize(nn.Module):
    """uint8 or [0, 1] float images to float32 ``(x - mean) / std``; the eval transform.

    Accepts (and ignores) a generator, so it can stand where :class:`MoCoV2Views` stands.

    Shape:
        images (B, 3, H, W) uint8 or float; output (B, 3, H, W) float32.
    """

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]):
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or any(v <= 0 for v in std):
            raise ValueError(f"mean and std must be 3 values, std > 0, got {mean!r}, {std!r}")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return (_check_images(images) - self.mean) / self.std


class MoCoV2Views(nn.Module):
    """Two MoCo v2 views of every image of a batch, each view with parameters of its own.

    The batched equivalent of applying, twice per image, torchvision's
    ``RandomResizedCrop(size, scale, ratio)``, ``RandomApply([ColorJitter(*jitter)],
    p=jitter_p)``, ``RandomGrayscale(grayscale_p)``, ``RandomHorizontalFlip(flip_p)``,
    ``ToTensor`` and ``Normalize(mean, std)``. Runs on the device of the batch; a seeded
    ``generator`` on that device makes it deterministic.

    Args:
        size: output side S.
        scale: range of the crop's area fraction, ``0 < low <= high <= 1``.
        ratio: range of the crop's aspect ratio, ``0 < low <= high``.
        jitter: brightness, contrast, saturation (>= 0) and hue (in [0, 0.5]) strengths.
        jitter_p, grayscale_p, flip_p: probabilities in [0, 1].
        mean, std: per-channel normalisation of [0, 1] images; None for none.

    Shape:
        images (B, 3, H, W) uint8 (0..255) or float (0..1); each view (B, 3, S, S) float32.

    Raises:
        ValueError: a hyperparameter out of range (named, with its value), or images that are
            not a (B, 3, H, W) uint8 or floating-point tensor.

    Examples:
        >>> views = MoCoV2Views(32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
        >>> x1, x2 = views(torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8))
    """

    def __init__(
        self,
        size: int = 32,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        flip_p: float = 0.5,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ):
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an integer >= 1, got {size!r}")
        if not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must be (low, high) with 0 < low <= high <= 1, got {scale!r}")
        if not (len(ratio) == 2 and 0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must be (low, high) with 0 < low <= high, got {ratio!r}")
        if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
            raise ValueError(
                f"jitter must be (brightness, contrast, saturation, hue) >= 0 with hue <= 0.5, "
                f"got {jitter!r}"
            )
        for name, p in (("jitter_p", jitter_p), ("grayscale_p", grayscale_p), ("flip_p", flip_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        self.size, self.scale, self.ratio, self.jitter = size, tuple(scale), tuple(ratio), jitter
        self.jitter_p, self.grayscale_p, self.flip_p = jitter_p, grayscale_p, flip_p
        self.normalize = None if mean is None and std is None else Normalize(mean, std)

    def view(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One augmented view of every image: (B, 3, H, W) -> (B, 3, S, S) float32."""
        x = _check_images(images)
        B, _, H, W = x.shape
        params = sample_view_params(
            B, H, W, self.scale, self.ratio, self.jitter, self.jitter_p, self.grayscale_p,
            self.flip_p, generator, x.device,
        )  # fmt: skip
        out = augment(x, params, self.size)
        return out if self.normalize is None else self.normalize(out)

    def forward(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Two independent views (query and key) of every image."""
        return self.view(images, generator), self.view(images, generator)

    def extra_repr(self) -> str:
        ratio = tuple(round(r, 4) for r in self.ratio)
        return (
            f"size={self.size}, scale={self.scale}, ratio={ratio}, jitter={self.jitter}, "
            f"jitter_p={self.jitter_p}, grayscale_p={self.grayscale_p}, flip_p={self.flip_p}"
        )
