"""Seeded, resumable sampling: batches that depend on (seed, epoch, position) only.

The order of epoch e is ``randperm(N)`` under seed ``seed + e`` (as DistributedSampler), and
every sample carries its own seed ``sample_seed(seed, e, index)``, under which its
augmentation runs. So a batch does not depend on the number of dataloader workers, nor on
whether the run was resumed mid-epoch.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler

from infonce._checks import check_int
from infonce.trainer.rng import derive_seed


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of item ``index`` in ``epoch``:
    :func:`infonce.trainer.rng.derive_seed` of the data stream, in [0, 2**63)."""
    return derive_seed(seed, epoch, index)


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that yields ``(index, sample_seed)`` and can start mid-epoch.

    Epoch e's order is ``torch.randperm(num_items)`` under a generator seeded with
    ``seed + e`` (``arange`` if not ``shuffle``), cut (``drop_last``) or padded to a multiple
    of ``num_replicas`` exactly as DistributedSampler does; rank r takes ``order[r::R]``.
    With ``batch_size`` B the order is instead cut to whole global batches of R x B and rank r
    takes the r-th block of B of each: the R per-rank batches of a step, side by side, are
    exactly the batch one process with batch R x B gets (so 2 x 256 on two devices sees the
    images of 1 x 512 on one, in the same order). Subclassing DistributedSampler keeps
    Lightning from wrapping it again under DDP, and Lightning calls :meth:`set_epoch` before
    every epoch.

    :meth:`set_start` makes the next iteration skip the first ``start`` items of this rank's
    order (a resume mid-epoch), optionally of a given epoch; later iterations are full again.
    ``len()`` is always the full per-rank epoch length, from which Lightning computes the
    batches per epoch.

    With ``epoch_source``, each iteration reads its epoch from it (e.g. the trainer's
    ``current_epoch``) when the iteration starts, instead of trusting the last
    :meth:`set_epoch`: Lightning 2.6 passes epoch + 1 after resuming from a checkpoint written
    by end-of-epoch validation, which would skip an epoch's data order.

    Args:
        num_items: N, the dataset length (>= 1).
        seed: Seeds both the order and the per-sample augmentation seeds.
        num_replicas: R, the number of ranks (>= 1).
        rank: This rank, in [0, R).
        shuffle: Shuffle the order of each epoch.
        drop_last: Drop the tail so R divides the order, else pad it by repeating indices.
        epoch_source: Optional callable returning the epoch of the iteration about to start.
        batch_size: B, the per-rank batch size, for the blocked assignment above (then
            ``drop_last`` must be True: the tail short of a global batch is dropped).

    Shape:
        iter: ``len(self)`` tuples (int index in [0, N), int seed in [0, 2**63)).
    """

    def __init__(
        self,
        num_items: int,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        epoch_source: Callable[[], int] | None = None,
        batch_size: int | None = None,
    ):
        check_int(num_items, "num_items")
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas!r}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank!r}")
        super().__init__(
            range(num_items),
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        if batch_size is not None:
            check_int(batch_size, "batch_size")
            if not drop_last:
                raise ValueError("batch_size (blocked ranks) needs drop_last=True")
            global_batch = num_replicas * batch_size
            self.total_size = num_items // global_batch * global_batch  # whole global batches
            self.num_samples = self.total_size // num_replicas
        self.batch_size = batch_size
        self.num_items = num_items
        self.epoch_source = epoch_source
        self.start = 0
        self._next_epoch: int | None = None  # pinned by set_start for the next iteration

    def set_start(self, start: int, epoch: int | None = None) -> None:
        """Skip the first ``start`` items of this rank's order in the next iteration only, and
        with ``epoch`` make that iteration one of ``epoch`` (whatever the epoch source says).

        Raises:
            ValueError: ``start`` not in [0, len(self)].
        """
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start must be in [0, {self.num_samples}], got {start!r}")
        self.start = start
        self._next_epoch = epoch
        if epoch is not None:
            self.set_epoch(epoch)

    def epoch_indices(self, epoch: int | None = None) -> list[int]:
        """This rank's full order of dataset indices for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        if self.drop_last:
            order = order[: self.total_size]
        else:  # pad by repeating the order from its start, as DistributedSampler
            repeats = -(-self.total_size // len(order))
            order = (order * repeats)[: self.total_size]
        if self.batch_size is None:
            return order[self.rank : self.total_size : self.num_replicas]
        B, R = self.batch_size, self.num_replicas
        first = self.rank * B  # this rank's block of B in every global batch of R * B
        return [
            i for g in range(0, self.total_size, R * B) for i in order[g + first : g + first + B]
        ]

    def __iter__(self):
        if self._next_epoch is not None:
            self.epoch, self._next_epoch = self._next_epoch, None
        elif self.epoch_source is not None:
            self.epoch = self.epoch_source()
        indices = self.epoch_indices()[self.start :]
        self.start = 0  # the skip applies to one iteration only
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples


class ShardSampler(DistributedSampler):
    """Rank r of R takes items r, r + R, r + 2R, ... of an evaluation set: every item once.

    Unlike DistributedSampler it never pads the last shard with repeated items, so metrics
    summed over ranks count each item exactly once (shards differ in length by at most one).
    Subclassing DistributedSampler keeps Lightning from replacing it under DDP.

    Args:
        num_items: N >= 0, the dataset length.
        num_replicas: R >= 1; rank: in [0, R).

    Shape:
        iter: ``len(self)`` = ceil((N - r) / R) int indices, increasing.
    """

    def __init__(self, num_items: int, num_replicas: int = 1, rank: int = 0):
        check_int(num_items, "num_items", minimum=0)
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_items = num_items

    def __iter__(self):
        return iter(range(self.rank, self.num_items, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_items, self.num_replicas))


class SeededTransformDataset(Dataset):
    """Apply ``transform`` to ``base[i]``, seeded per sample when the key carries a seed.

    A key ``(index, sample_seed)`` (from :class:`ResumableSampler`) runs the transform with
    torch's CPU generator seeded to ``sample_seed`` inside ``torch.random.fork_rng``, so the
    augmentation is a pure function of the key and the caller's RNG is left untouched. A
    plain int key uses the current global RNG (fine for deterministic eval transforms).

    Args:
        base: Yields (PIL image, int label), e.g. from
            :func:`infonce.trainer.data.sources.build_dataset`.
        transform: PIL image -> tensor, or -> (view1, view2, ...) for
            :class:`~infonce.trainer.augment.transforms.MultiView`.
        indices: Optional base indices to keep; item i is then ``base[indices[i]]``.

    Shape:
        getitem: (transform(image), int label), e.g. ((3, S, S), (3, S, S)) views.
    """

    def __init__(
        self, base: Dataset, transform: Callable[[Any], Any], indices: Sequence[int] | None = None
    ):
        self.base = base
        self.transform = transform
        self.indices = None if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.base) if self.indices is None else len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int]:
        if isinstance(key, tuple):
            index, seed = key
            # Only the CPU generator: torch.manual_seed would also reseed (and leave reseeded)
            # every CUDA device, which fork_rng(devices=[]) does not restore.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                return self._transformed(index)
        return self._transformed(key)

    def _transformed(self, index: int) -> tuple[Any, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        image, label = self.base[index if self.indices is None else self.indices[index]]
        return self.transform(image), int(label)
