"""CLIP's symmetric contrastive loss (Radford et al., 2021), in OpenCLIP's convention."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from infonce._checks import (
    check_bool,
    check_float_tensor,
    check_reduction,
    check_same_device,
    check_temperature,
    reduce_loss,
)
from infonce._numerics import compute_dtype, over_temperature, temperature_like
from infonce.distributed import gather_with_grad, rank_and_world_size

__all__ = ["clip_loss"]


def clip_loss(
    image: Tensor,
    text: Tensor,
    temperature: float | Tensor | nn.Module = 0.07,
    reduction: str = "mean",
    normalize: bool = True,
    gather_distributed: bool = False,
) -> Tensor:
    """CLIP's loss: cross-entropy over the image-text similarities, in both directions.

    As OpenCLIP's ``ClipLoss`` with ``logit_scale = 1 / T``: ``logits_per_image = image @
    text.T / T`` (N, N), ``logits_per_text`` its transpose, the matching pairs on the
    diagonal, and ``loss = (CE(logits_per_image, arange(N)) + CE(logits_per_text,
    arange(N))) / 2``. Per pair ``i`` (``reduction="none"``): the mean of image ``i``'s and
    text ``i``'s cross-entropies, so that ``mean`` is the loss above.

    Logits and log-sum-exp in float32 (float64 for float64 inputs) with autocast off.
    Normalised logits lie in ``[-1/T, 1/T]``; without ``normalize`` each row's (or, for the
    text direction, column's) largest is subtracted before dividing by ``T``, so no finite
    input overflows.

    With ``gather_distributed`` and an initialised ``torch.distributed`` process group of R
    ranks (OpenCLIP's ``local_loss=True, gather_with_grad=True``): every rank's features are
    gathered with their gradients (:func:`infonce.distributed.gather_with_grad`), and each
    rank computes its own N images against all RN texts and its N texts against all RN
    images, the labels offset by ``rank * N``. ``mean`` is over the local pairs (every rank
    must hold the same N), ``sum`` is the local sum times R, ``none`` the local pairs: so the
    average over ranks, which DDP applies to the gradients, is the one-process loss of the RN
    pairs. Without a process group, or in a world of one, it changes nothing.

    Args:
        image: the image embeddings; row ``i`` matches ``text``'s row ``i``.
        text: the text embeddings.
        temperature: positive finite ``T`` (CLIP initialises ``1 / T`` at ``1 / 0.07``); a
            0-d tensor, which receives ``dL/dT``; or a module returning such a tensor when
            called, e.g. :class:`infonce.LearnableTemperature` (CLIP's learnable log-scale).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per pair).
        normalize: L2-normalise both embeddings along D first (CLIP does, in its encoders).
        gather_distributed: gather every rank's pairs, see above.

    Returns:
        The loss, float32 (float64 for float64 inputs): () or (N,) for ``"none"``.

    Shape:
        image (N, D), text (N, D); output () or (N,).

    Raises:
        ValueError: inputs that are not floating-point (N, D) tensors of one shape with
            N, D >= 1 on one device; a temperature that is not a positive finite number
            (normal in the compute dtype) or 0-d floating-point tensor, also as returned by a
            module; a bad reduction; ``normalize`` or ``gather_distributed`` not a bool;
            ranks with different shapes.

    Examples:
        >>> image, text = torch.randn(32, 512), torch.randn(32, 512)
        >>> loss = clip_loss(image, text, temperature=LearnableTemperature(0.07))
    """
    check_float_tensor(image, "image", ndim=2)
    check_float_tensor(text, "text", ndim=2)
    if image.shape != text.shape or min(image.shape) < 1:
        raise ValueError(
            f"image and text must be non-empty and of one shape (N, D), got "
            f"{tuple(image.shape)} and {tuple(text.shape)}"
        )
    check_same_device(text, "text", image, "image")
    if isinstance(temperature, nn.Module):
        temperature = temperature()
    dtype = compute_dtype(image, text)
    temperature = check_temperature(temperature, allow_tensor=True, dtype=dtype)
    reduction = check_reduction(reduction)
    check_bool(normalize, "normalize")
    check_bool(gather_distributed, "gather_distributed")
    rank, world = rank_and_world_size() if gather_distributed else (0, 1)
    N = image.shape[0]
    with torch.autocast(device_type=image.device.type, enabled=False):
        if world == 1:
            images, texts = _features(image, dtype, normalize), _features(text, dtype, normalize)
            t = temperature_like(temperature, images)
            similarities = images @ texts.T  # (N, N)
            per_image = over_temperature(similarities, t, normalize, dim=1)  # (N, N)
            per_text = over_temperature(similarities.T, t, normalize, dim=1)  # (N, N)
            labels = torch.arange(N, device=image.device)  # (N,) the diagonal
        else:  # one collective for both: R x (2, N, D)
            pairs = gather_with_grad(torch.stack([image, text]), "stack([image, text])")
            all_images = _features(torch.cat([p[0] for p in pairs]), dtype, normalize)  # (RN, D)
            all_texts = _features(torch.cat([p[1] for p in pairs]), dtype, normalize)  # (RN, D)
            local = slice(rank * N, (rank + 1) * N)  # this rank's rows of the gathered sets
            t = temperature_like(temperature, all_images)
            per_image = over_temperature(all_images[local] @ all_texts.T, t, normalize, dim=1)
            per_text = over_temperature(all_texts[local] @ all_images.T, t, normalize, dim=1)
            labels = torch.arange(rank * N, (rank + 1) * N, device=image.device)  # (N,)
        loss = (
            F.cross_entropy(per_image, labels, reduction="none")
            + F.cross_entropy(per_text, labels, reduction="none")
        ) / 2  # (N,)
    return reduce_loss(loss, reduction, world)


def _features(x: Tensor, dtype: torch.dtype, normalize: bool) -> Tensor:
    """``x`` in the compute dtype, L2-normalised along D when ``normalize``."""
    x = x.to(dtype)
    return F.normalize(x, dim=1) if normalize else x
