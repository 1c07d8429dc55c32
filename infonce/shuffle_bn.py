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

from infonce._device import host_to_device
from infonce.distributed import AllGather

BN_GUARDS = ("split", "shuffle", "sync")


def key_permutation(n: int, groups: int, seed: int) -> Tensor:
    """A permutation of ``n`` images, ``groups`` equal BN groups, that mixes every group.

    Drawn with ``torch.randperm`` under a CPU generator seeded with ``seed``; redrawn (from the
    same generator) while some contiguous block of ``n / groups`` of the permuted order holds
    exactly the images of one block of the original order.

    Returns:
        int64 (n,) on the CPU: position j of the shuffled batch holds image ``perm[j]``.

    Raises:
        ValueError: ``groups`` does not divide ``n``.
    """
    if groups < 1 or n % groups:
        raise ValueError(f"the batch of {n} keys must split into {groups} equal BN groups")
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
    """
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
    """
    B = x.shape[0]
    images = all_gather(x.contiguous()).flatten(0, 1)  # (R*B, ...), rank order
    perm = host_to_device(perm, x.device)
    mine = images[perm[rank * B : (rank + 1) * B]]  # (B, ...): this rank's part of the shuffle
    mine = mine.contiguous(memory_format=_memory_format_of(x))
    keys = all_gather(encoder(mine)).flatten(0, 1)  # (R*B, F): row j is the key of perm[j]
    unshuffled = torch.empty_like(keys)
    unshuffled[perm] = keys  # (R*B, F) in global batch order
    return unshuffled[rank * B : (rank + 1) * B]


def _memory_format_of(x: Tensor) -> torch.memory_format:
    nhwc = x.dim() == 4 and not x.is_contiguous()
    nhwc = nhwc and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if nhwc else torch.contiguous_format
