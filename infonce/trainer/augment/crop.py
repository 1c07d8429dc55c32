"""torchvision's ``RandomResizedCrop`` (and ``RandomHorizontalFlip``) for a batch, per image.

:func:`sample_crop_params` draws a box per image from the distribution of
``RandomResizedCrop.get_params``; :func:`resized_crop` crops, resizes and mirrors the whole
batch as two batched matrix products ``Ry @ image @ Rx.T``, whose rows hold the weights of
torch's antialiased bilinear or bicubic resize (torchvision's ``antialias=True``; the filters
of PIL's resize). With TF32 matmuls enabled on CUDA the resize loses precision (about 1e-3).
"""

import math
from numbers import Real

import torch
from torch import Tensor

from infonce._device import host_to_device

ATTEMPTS = 10  # RandomResizedCrop.get_params tries this many boxes before its fallback
CUBIC_A = -0.5  # the bicubic filter of PIL and of torch's antialiased resize (Keys, a = -0.5)


def check_range(name: str, value, upper: float = math.inf) -> tuple[float, float]:
    """Return ``value`` as (low, high); raise ValueError unless ``0 < low <= high <= upper``."""
    ok = isinstance(value, tuple | list) and len(value) == 2
    ok = ok and all(isinstance(v, Real) and not isinstance(v, bool) for v in value)
    if not (ok and 0 < value[0] <= value[1] <= upper):
        bound = "" if upper == math.inf else f" <= {upper:g}"
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high{bound}, got {value!r}")
    return float(value[0]), float(value[1])


def sample_crop_params(
    batch_size: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``batch_size`` independent draws of torchvision's ``RandomResizedCrop.get_params``.

    Each image tries up to 10 boxes: area ``H * W * U(scale)``, aspect ratio
    ``exp(U(log ratio))``, ``w = round(sqrt(area * aspect))``, ``h = round(sqrt(area /
    aspect))`` (half to even, as Python's ``round``); the first that fits is placed at a
    uniform top-left corner. Where none fits: the central crop with the aspect ratio clamped
    to ``ratio``, torchvision's fallback. All attempts of all images are drawn at once.

    Shape:
        -> (batch_size, 4) int64 boxes ``(top, left, h, w)`` on ``device``.

    Raises:
        ValueError: ``scale`` not ``0 < low <= high <= 1``, ``ratio`` not ``0 < low <= high``.
    """
    scale, ratio = check_range("scale", scale, upper=1.0), check_range("ratio", ratio)
    uniform = torch.rand(  # (B, 10, 4): area, log-ratio, top, left in float64
        batch_size, ATTEMPTS, 4, generator=generator, device=device, dtype=torch.float64
    )
    area = height * width * (scale[0] + (scale[1] - scale[0]) * uniform[..., 0])  # (B, 10)
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * uniform[..., 1])  # (B, 10)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # (B, 10)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # (B, 1): first fitting attempt
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]  # (B,)
    corner = uniform[..., 2:].gather(1, first[..., None].expand(-1, -1, 2))[:, 0]  # (B, 2)
    top = torch.floor(corner[:, 0] * (height - h + 1))  # randint(0, H - h + 1)
    left = torch.floor(corner[:, 1] * (width - w + 1))
    boxes = torch.stack([top, left, h, w], dim=1)  # (B, 4)

    in_ratio = width / height  # the fallback, as torchvision
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=boxes.dtype)
    fallback = host_to_device(fallback, boxes.device)  # (4,)
    return torch.where(fits.any(dim=1, keepdim=True), boxes, fallback).to(torch.int64)


def resize_weights(
    start: Tensor,
    length: Tensor,
    size: int,
    extent: int,
    flip: Tensor | None = None,
    interpolation: str = "bilinear",
) -> Tensor:
    """Rows that resize the segment ``[start, start + length)`` of an axis to ``size`` pixels.

    torch's antialiased weights (``F.interpolate(mode=interpolation, antialias=True,
    align_corners=False)``, PIL's resize filters) on the segment: output o takes a filter
    centred at ``(o + 0.5) * length / size``, stretched by ``max(length / size, 1)``, cut to the
    segment and normalised to sum to one: a triangle (bilinear; upscaling, this is bilinear
    interpolation with the coordinate clamped to the segment) or Keys' cubic with a = -0.5
    (bicubic). Where ``flip``, output o takes the filter of ``size - 1 - o``.

    Shape:
        start, length (N,) int64, flip (N,) bool -> (N, size, extent) float32.
    """
    scale = length.to(torch.float32) / size  # (N,)
    out = torch.arange(size, device=start.device, dtype=torch.float32) + 0.5  # (S,)
    if flip is not None:
        out = torch.where(flip[:, None], size - out, out)  # (N, S)
    center = scale[:, None] * out  # (N, S), in segment coordinates
    pixel = torch.arange(extent, device=start.device, dtype=torch.float32) + 0.5 - start[:, None]
    pixel = torch.where((pixel > 0) & (pixel < length[:, None]), pixel, math.inf)  # (N, E)
    distance = (pixel[:, None, :] - center[:, :, None]).abs_()  # (N, S, E)
    support = scale.clamp(min=1.0)[:, None, None]  # the filter's stretch
    if interpolation == "bilinear":
        weights = torch.sub(support, distance, out=distance).clamp_(min=0.0)  # ~ 1 - d / support
    else:  # outside the segment (inf) and beyond the cubic's support 2: both weigh 0
        weights = _cubic(distance.div_(support).clamp_(max=2.0))
    return weights.div_(weights.sum(dim=2, keepdim=True))


def _cubic(x: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with ``CUBIC_A`` at distances ``x`` in [0, 2]."""
    a = CUBIC_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1  # |x| < 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # 1 <= |x| < 2
    return torch.where(x < 1, near, far)


def resized_crop(
    images: Tensor,
    boxes: Tensor,
    size: int,
    flip: Tensor | None = None,
    interpolation: str = "bilinear",
) -> Tensor:
    """Crop every image to its box, resize it to (size, size), and mirror it where ``flip``.

    Equal (to float32 rounding) to ``torchvision.transforms.functional.resized_crop(image,
    top, left, h, w, [size, size], interpolation, antialias=True)``, then ``hflip`` where
    flipped, per image; done as two batched matrix products ``Ry @ image @ Rx.T``. Bicubic
    results are clipped to [0, 1], as PIL and torchvision's uint8 path clip theirs. uint8
    images are read as ``image / 255`` (the 1/255 folded into ``Ry``). Boxes must lie inside
    their image (not checked, which would cost a device sync).

    Shape:
        images (B, C, H, W) uint8 or float, boxes (B, 4) int64 ``(top, left, h, w)``, flip
        (B,) bool or None -> (B, C, size, size) float32.

    Raises:
        ValueError: ``images`` not 4-d, ``boxes`` not (B, 4), ``flip`` not (B,),
            ``interpolation`` neither ``bilinear`` nor ``bicubic``.
    """
    if interpolation not in ("bilinear", "bicubic"):
        raise ValueError(f"interpolation must be 'bilinear' or 'bicubic', got {interpolation!r}")
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    B, C, H, W = images.shape
    if tuple(boxes.shape) != (B, 4):
        raise ValueError(f"boxes must have shape ({B}, 4), got {tuple(boxes.shape)}")
    if flip is not None and tuple(flip.shape) != (B,):
        raise ValueError(f"flip must have shape ({B},), got {tuple(flip.shape)}")
    no_flip = torch.zeros(B, dtype=torch.bool, device=images.device)
    top, left, h, w = boxes.unbind(dim=1)
    weights = resize_weights(  # (2B, S, max(H, W)): the rows of Ry, then those of Rx
        torch.cat([top, left]),
        torch.cat([h, w]),
        size,
        max(H, W),
        torch.cat([no_flip, no_flip if flip is None else flip]),
        interpolation,
    )
    rows, cols = weights[:B, :, :H], weights[B:, :, :W]  # (B, S, H), (B, S, W)
    x = torch.empty(B, H, C, W, device=images.device)  # channels beside columns
    x.copy_(images.permute(0, 2, 1, 3))  # converts to float32 in the same pass
    if interpolation == "bicubic":
        return _bicubic(x, rows, cols, 255.0 if images.dtype == torch.uint8 else 1.0)
    if images.dtype == torch.uint8:
        rows = rows / 255.0
    x = torch.bmm(rows, x.view(B, H, C * W))  # (B, S, C*W)
    x = torch.bmm(x.view(B, size * C, W), cols.transpose(1, 2))  # (B, S*C, S)
    return x.view(B, size, C, size).transpose(1, 2).contiguous()  # (B, C, S, S)


def _bicubic(x: Tensor, rows: Tensor, cols: Tensor, levels: float) -> Tensor:
    """PIL's two passes: columns (horizontal) first, each clipped to [0, 1], as PIL clips its
    uint8 intermediate; the cubic's negative lobes overshoot.

    Shape:
        x (B, H, C, W) float32 in [0, levels], rows (B, S, H), cols (B, S, W) -> (B, C, S, S).
    """
    B, H, C, W = x.shape
    S = rows.shape[1]
    x = torch.bmm(x.view(B, H * C, W), (cols / levels).transpose(1, 2)).clamp_(0.0, 1.0)
    x = torch.bmm(rows, x.view(B, H, C * S)).clamp_(0.0, 1.0)  # (B, S, C*S)
    return x.view(B, S, C, S).transpose(1, 2).contiguous()  # (B, C, S, S)
