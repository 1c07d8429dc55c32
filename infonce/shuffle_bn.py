"""Shuffling BN: MoCo's guard against a key finding its query through BatchNorm statistics.

In training, BatchNorm normalises every image with statistics of the others in its BN batch.
If a query and its key are normalised over the same set of images, the pair can recognise
each other through those statistics, a shortcut that lowers the loss without learning
features (the MoCo paper measured the cost; its fix is "shuffling BN"). The key batch is
therefore permuted before the momentum encoder, so that each key's BN batch is another mix of
images than its query's, and the keys are put back in order afterwards.

- On one device (``bn_guard: split``): the batch is split into ``bn_splits`` BN groups
  (:class:`infonce.trainer.backbones.SplitBatchNorm`) and the key batch is permuted over the
  device.
- Across devices (``bn_guard: shuffle``, MoCo's own form): the key batches of all ranks are
  gathered, one permutation of the global batch is applied, each rank encodes its slice and
  the keys are gathered back and unpermuted. Every rank draws the same permutation from
  ``(seed, step, draw)``: MoCo decides it on rank 0 and broadcasts it; a shared seed gives the
  same permutation without that message, and the same one again after a resume.

The permutation is redrawn in the (rare) case that some BN group of the shuffled batch would
hold exactly the images of one group of the unshuffled one, so that no key ever shares its
query's BN batch.
"""

import torch
from torch import Tensor, nn

from infonce._checks import check_int
from infonce._device import host_to_device
from infonce.distributed import AllGather

__all__ = ["encode_shuffled", "encode_shuffled_across_ranks", "key_permutation"]

BN_GUARDS = ("split", "shuffle", "sync")


def key_permutation(n: int, groups: int, seed: int) -> Tensor:
    """A permutation of ``n`` images, ``groups`` equal BN groups, that mixes every group.

    Drawn with ``torch.randperm`` under a CPU generator seeded with ``seed``; redrawn (from the
    same generator) while some contiguous block of ``n / groups`` of the permuted order holds
    exactly the images of one block of the original order.

    Returns:
        int64 (n,) on the CPU: position j of the shuffled batch holds image ``perm[j]``.

    Raises:
        ValueError: ``n`` or ``groups`` not an integer >= 1, ``groups`` does not divide ``n``,
            or ``seed`` not an integer in ``[-2**63, 2**64)`` (what ``manual_seed`` takes).
    """
    check_int(n, "n")
    check_int(groups, "groups")
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [-2**63, 2**64), got {seed!r}")
    if n % groups:
        raise ValueError(f"the batch of n={n} keys must split into groups={groups} equal BN groups")
    generator = torch.Generator().manual_seed(seed)
    size = n // groups
    while True:
        perm = torch.randperm(n, generator=generator)
        if size < 2 or groups < 2:
            return perm  # one image per group, or one group: nothing to mix
        origin = perm.view(groups, size) // size  # (groups, size): original group of each image
        if not (origin == origin[:, :1]).all(dim=1).any():
            return perm


@torch.no_grad()
def encode_shuffled(encoder: nn.Module, x: Tensor, perm: Tensor) -> Tensor:
    """``encoder`` applied to the batch permuted by ``perm``, rows put back in batch order.

    Shape:
        x (B, ...), perm (B,); output (B, F): row i is the key of image i.

    Raises:
        ValueError: ``encoder`` not callable, ``x`` not a tensor with a batch dimension, or
            ``perm`` not an integer (B,) tensor (a permutation of ``range(B)``; its values are
            checked where it sits on the CPU).
    """
    _check_encoder_and_images(encoder, x)
    _check_permutation(perm, x.shape[0])
    perm = host_to_device(perm, x.device)
    keys = encoder(x[perm])  # (B, F) in shuffled order
    return keys[torch.argsort(perm)]


@torch.no_grad()
def encode_shuffled_across_ranks(
    encoder: nn.Module, x: Tensor, perm: Tensor, rank: int, all_gather: AllGather
) -> Tensor:
    """MoCo's shuffling BN over ranks: this rank's keys, encoded in a global shuffle.

    Gathers the key batches of all ranks (rank order), encodes the slice
    ``perm[rank * B : (rank + 1) * B]`` of the global batch here, gathers every rank's keys
    back and returns this rank's images' keys in their order. Every rank must call it with
    the same ``perm`` (see :func:`key_permutation`).

    Args:
        encoder: the momentum encoder of this rank.
        x: this rank's key images (B, ...), the same B on every rank.
        perm: a permutation of the global batch of R x B images.
        rank: this rank.
        all_gather: stacks a tensor of every rank, ``(R, ...)``, e.g. Lightning's
            ``LightningModule.all_gather`` (no gradient).

    Shape:
        x (B, ...), perm (R * B,); output (B, F).

    Raises:
        ValueError: as :func:`encode_shuffled`, with ``perm`` a permutation of the R x B
            gathered images; ``rank`` not an integer in ``[0, R)``; ``all_gather`` not
            callable.
    """
    _check_encoder_and_images(encoder, x)
    check_int(rank, "rank", minimum=0)
    if not callable(all_gather):
        raise ValueError(f"all_gather must be callable, got {type(all_gather).__name__}")
    B = x.shape[0]
    images = all_gather(x.contiguous()).flatten(0, 1)  # (R*B, ...), rank order
    world = images.shape[0] // max(B, 1)
    if rank >= world:
        raise ValueError(f"rank must be in [0, {world}) for a world of {world}, got {rank}")
    _check_permutation(perm, images.shape[0])
    perm = host_to_device(perm, x.device)
    mine = images[perm[rank * B : (rank + 1) * B]]  # (B, ...): this rank's part of the shuffle
    mine = mine.contiguous(memory_format=_memory_format_of(x))
    keys = all_gather(encoder(mine)).flatten(0, 1)  # (R*B, F): row j is the key of perm[j]
    unshuffled = torch.empty_like(keys)
    unshuffled[perm] = keys  # (R*B, F) in global batch order
    return unshuffled[rank * B : (rank + 1) * B]


def _check_encoder_and_images(encoder: nn.Module, x: Tensor) -> None:
    if not callable(encoder):
        raise ValueError(f"encoder must be callable (an nn.Module), got {type(encoder).__name__}")
    if not isinstance(x, Tensor) or x.dim() < 1:
        got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a batch tensor (B, ...), got {got}")


def _check_permutation(perm: Tensor, n: int) -> None:
    """Raise unless ``perm`` is an integer (n,) tensor; on the CPU, a permutation of range(n).

    A bool tensor would index as a mask, a float one not at all: both are refused.
    """
    if not isinstance(perm, Tensor):
        raise ValueError(f"perm must be an integer tensor of shape ({n},), got "
                         f"{type(perm).__name__}")  # fmt: skip
    if perm.dtype.is_floating_point or perm.dtype.is_complex or perm.dtype == torch.bool:
        raise ValueError(f"perm must be an integer tensor, got dtype {perm.dtype}")
    if perm.shape != (n,):
        raise ValueError(f"perm must have shape ({n},), got {tuple(perm.shape)}")
    if perm.device.type == "cpu" and not torch.equal(
        torch.sort(perm).values, torch.arange(n, dtype=perm.dtype)
    ):
        raise ValueError(f"perm must be a permutation of range({n}), got {perm.tolist()[:16]}")


def _memory_format_of(x: Tensor) -> torch.memory_format:
    nhwc = x.dim() == 4 and not x.is_contiguous()
    nhwc = nhwc and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if nhwc else torch.contiguous_format
