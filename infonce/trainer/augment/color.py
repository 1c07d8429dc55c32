"""torchvision's colour ops on a batch, with a factor of its own for every image.

Each function equals ``torchvision.transforms.functional``'s tensor implementation applied to
every float image of the batch with that image's factor, to float32 rounding (the tests check
image by image). :func:`color_jitter` composes them as ``ColorJitter`` does, in an order drawn
per image, running each op only on the images that take it at that step.

Every op takes an optional ``out`` (as torch functions do; it may be ``images`` itself), so a
pipeline can run without allocating a batch per op.
"""

import torch
from torch import Tensor

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601 luma)


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """Luma ``0.2989 R + 0.587 G + 0.114 B`` of every pixel.

    Shape:
        images (B, 3, H, W) float -> (B, 1, H, W).
    """
    r, g, b = images.unbind(dim=1)  # (B, H, W) each
    gray = (r * GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2])
    return gray.unsqueeze(1)


def _per_image(factor: Tensor, images: Tensor) -> Tensor:
    return factor.to(images.dtype).view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)


def _blend(images: Tensor, other: Tensor, factor: Tensor, out: Tensor | None) -> Tensor:
    """torchvision's ``_blend``: ``(f * images + (1 - f) * other).clamp(0, 1)``, f per image."""
    f = _per_image(factor, images)
    return torch.addcmul(other * (1.0 - f), images, f, out=out).clamp_(0.0, 1.0)


def adjust_brightness(images: Tensor, factor: Tensor, out: Tensor | None = None) -> Tensor:
    """Scale every image by its factor (>= 0) and clip to [0, 1].

    Shape:
        images (B, 3, H, W) float in [0, 1], factor (B,) -> (B, 3, H, W).
    """
    return torch.mul(images, _per_image(factor, images), out=out).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factor: Tensor, out: Tensor | None = None) -> Tensor:
    """Blend every image with its mean gray level: factor 0 is flat gray, 1 the image.

    Shape:
        images (B, 3, H, W) float in [0, 1], factor (B,) -> (B, 3, H, W).
    """
    channel_mean = images.mean(dim=(2, 3), keepdim=True)  # (B, 3, 1, 1); gray is linear
    return _blend(images, rgb_to_grayscale(channel_mean), factor, out)


def adjust_saturation(images: Tensor, factor: Tensor, out: Tensor | None = None) -> Tensor:
    """Blend every image with its grayscale version: factor 0 is gray, 1 the image.

    Shape:
        images (B, 3, H, W) float in [0, 1], factor (B,) -> (B, 3, H, W).
    """
    return _blend(images, rgb_to_grayscale(images), factor, out)


def adjust_hue(images: Tensor, factor: Tensor, out: Tensor | None = None) -> Tensor:
    """Rotate every image's hue by its factor, in turns (in [-0.5, 0.5]).

    torchvision's RGB -> HSV (hue from the channel holding the maximum, ties going to R, then
    G), the shift, and HSV -> RGB in the closed form ``v - c * clamp(min(k, 4 - k), 0, 1)``
    with ``k = (n + 6 h) mod 6``, ``n = 5, 3, 1`` for R, G, B and chroma ``c = v s``: the
    six-sector table of torchvision without building it, equal up to float rounding.

    Shape:
        images (B, 3, H, W) float in [0, 1], factor (B,) -> (B, 3, H, W).
    """
    r, g, b = images.unbind(dim=1)  # (B, H, W) each
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    inverse = chroma.clamp(min=torch.finfo(chroma.dtype).tiny).reciprocal_()  # gray: 0 / tiny
    # 6 h = (g - b) / c where R is the maximum, else 2 + (b - r) / c where G, else 4 + (r - g) / c
    hue6 = torch.lerp(  # (B, H, W) in [-1, 5]; lerp with weight 0 or 1 selects exactly
        torch.lerp((r - g).mul_(inverse).add_(4.0), (b - r).mul_(inverse).add_(2.0), _is(g, value)),
        (g - b).mul_(inverse),
        _is(r, value),
    )
    n = torch.arange(5.0, 0.0, -2.0, dtype=images.dtype, device=images.device)  # 5, 3, 1: R, G, B
    k = hue6.unsqueeze(1) + (n + 6.0 * factor.to(images.dtype)[:, None])[:, :, None, None]
    k = k.sub_(torch.floor(k * (1.0 / 6.0)), alpha=6.0)  # (B, 3, H, W), mod 6 into [0, 6)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return torch.sub(value.unsqueeze(1), ramp.mul_(chroma.unsqueeze(1)), out=out)


def _is(channel: Tensor, value: Tensor) -> Tensor:
    """1.0 where ``channel`` holds the maximum ``value``, else 0.0."""
    return torch.eq(channel, value, out=torch.empty_like(channel))


_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)  # by op id


def color_jitter(
    images: Tensor, apply: Tensor, factors: Tensor, order: Tensor, out: Tensor | None = None
) -> Tensor:
    """torchvision's ``ColorJitter``, with its own factors and op order for every image.

    Image b, where ``apply[b]``, undergoes at step t = 0..3 the op ``order[b, t]`` (0
    brightness, 1 contrast, 2 saturation, 3 hue) with factor ``factors[b, op]``; the other
    images are returned unchanged.

    On the CPU, at each step the jittered images lie grouped by their op, each op runs once on
    its group, and one gather rearranges them for the next step. Elsewhere (a GPU) the group
    sizes would have to be read by the host, a synchronisation that stalls the device, so each
    op runs on the whole batch at every step and ``torch.where`` keeps it for its images: four
    times the arithmetic of tiny kernels, no synchronisation. Both give the same images.

    Args:
        images: (B, 3, H, W) float in [0, 1].
        apply: (B,) bool, which images are jittered.
        factors: (B, 4) brightness, contrast, saturation (>= 0) and hue (in [-0.5, 0.5]).
        order: (B, 4) int64, a permutation of 0..3 per image.
        out: Optional (B, 3, H, W) output; may be ``images``.

    Shape:
        images (B, 3, H, W), apply (B,), factors (B, 4), order (B, 4) -> (B, 3, H, W).

    Raises:
        ValueError: ``apply``, ``factors`` or ``order`` not of the shapes above.
    """
    B = images.shape[0]
    for name, value, shape in (("apply", apply, (B,)), ("factors", factors, (B, 4))):
        if tuple(value.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    if tuple(order.shape) != (B, 4):
        raise ValueError(f"order must have shape {(B, 4)}, got {tuple(order.shape)}")
    key = torch.where(apply[:, None], order, 4)  # (B, 4): op at each step, 4 = none
    if images.device.type != "cpu":
        return _jitter_masked(images, key, factors, out)
    return _jitter_grouped(images, key, factors, out)


def _jitter_masked(images: Tensor, key: Tensor, factors: Tensor, out: Tensor | None) -> Tensor:
    """Every op on the whole batch at every step, kept where ``key`` names it: no host sync."""
    result = images.clone() if out is None else out.copy_(images)  # a no-op if out is images
    for step in range(4):
        for op, adjust in enumerate(_OPS):
            takes = (key[:, step] == op).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
            torch.where(takes, adjust(result, factors[:, op]), result, out=result)
    return result


def _jitter_grouped(images: Tensor, key: Tensor, factors: Tensor, out: Tensor | None) -> Tensor:
    """Each op once per step on the images that take it; reads the group sizes (a host sync)."""
    B = images.shape[0]
    # (B, 4): per step, the jittered images grouped by op, then the others (the same at every
    # step, since the sort is stable); position is the inverse permutation
    arrangement = key.argsort(dim=0, stable=True)
    steps = torch.arange(B, device=key.device)[:, None].expand(B, 4)
    position = torch.empty_like(arrangement).scatter_(0, arrangement, steps)
    sizes = (key[:, :, None] == torch.arange(4, device=key.device)).sum(dim=0).tolist()
    n = sum(sizes[0])  # images jittered
    current = images.index_select(0, arrangement[:, 0])  # (B, 3, H, W) in step 0's order
    result = torch.empty_like(current)
    result[n:] = current[n:]  # the images left alone
    for step in range(4):
        start = 0
        for op, size in enumerate(sizes[step]):
            if size:
                group = slice(start, start + size)
                who = arrangement[group, step]  # (size,) image indices
                _OPS[op](current[group], factors[who, op], out=result[group])
            start += size
        if step < 3 and n:  # gather into the next step's order
            following = position[arrangement[:n, step + 1], step]  # (n,)
            torch.index_select(result[:n], 0, following, out=current[:n])
    return torch.index_select(result, 0, position[:, 3], out=out)  # back in batch order


def grayscale(images: Tensor, apply: Tensor, out: Tensor | None = None) -> Tensor:
    """torchvision's ``rgb_to_grayscale(num_output_channels=3)`` on the images where ``apply``.

    Shape:
        images (B, 3, H, W) float, apply (B,) bool -> (B, 3, H, W).
    """
    weight = apply.to(images.dtype).view(-1, 1, 1, 1)  # 0 or 1: lerp returns exactly one side
    return torch.lerp(images, rgb_to_grayscale(images).expand_as(images), weight, out=out)
