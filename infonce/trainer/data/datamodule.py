"""The LightningDataModule: CIFAR-10/100 or an image folder, seeded and exactly resumable.

Two ways to serve batches, with the same sampler (:mod:`.samplers`), so batches depend on
(seed, epoch, position) only:

- **resident** (the default for images up to 64 px): each split is decoded once into a uint8
  tensor (:mod:`.resident`, cached on disk), kept on the training device, and every
  batch is one indexing operation plus batched per-sample augmentation
  (:mod:`infonce.trainer.augment.views`) where the batch lies. No per-sample Python in the hot loop.
- **loader**: PIL images through a DataLoader with workers, one seeded torchvision transform
  per sample (:mod:`infonce.trainer.augment.transforms`); for large images of arbitrary folders.

Both build the views from the same recipe (:data:`infonce.trainer.augment.recipes.RECIPES`).

The module's ``state_dict`` records how far the current epoch got; a resumed run starts its
first epoch right there, even mid-epoch.
"""

import warnings
from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

from infonce._checks import check_choice, check_int
from infonce.trainer.augment.normalization import DATASET_STATS, check_channel_stats
from infonce.trainer.augment.recipes import recipe
from infonce.trainer.augment.transforms import eval_transform, view_transform, views_transform
from infonce.trainer.augment.views import BatchViews, Normalize
from infonce.trainer.data.resident import (
    TensorImageDataset,
    ensure_cached,
    keep_batch,
    load_or_decode,
)
from infonce.trainer.data.samplers import ResumableSampler, SeededTransformDataset, ShardSampler
from infonce.trainer.data.scan import BAD_IMAGES, checked_folder, scan_folder
from infonce.trainer.data.sources import (
    DATASETS,
    build_dataset,
    channel_mean_std,
    num_classes,
    subset_indices,
)
from infonce.trainer.errors import ConfigError
from infonce.trainer.rng import FIXED_VIEWS, derive_seed

_STATS_IMAGES = 2000  # how many seeded train images estimate mean/std of a folder dataset


class ImageDataModule(L.LightningDataModule):
    """CIFAR-10/100 or an image folder, with seeded, resumable, worker-count-free batches.

    Train batches are ``((x1, x2), y)`` for a recipe of two views (``moco_v2``, ``simclr``,
    ...) or ``(x, y)`` for one (``crop_flip``). With ``knn_memory``, ``val_dataloader`` is one
    loader over the train split (limited as for training, under the eval transform: the kNN
    memory bank) followed by the test split, in batches ``(x, y, is_query)`` (``is_query``
    False for memory items); without, the test loader, in batches ``(x, y)``.

    Args:
        dataset: ``cifar10`` | ``cifar100`` | ``folder`` (``root/{train,test}/<class>/<img>``).
        root: Folder holding the data (for CIFAR, the one containing ``cifar-10-batches-py``).
        download: Download CIFAR if missing (needs network access).
        augmentation: The train views: a recipe of
            :data:`~infonce.trainer.augment.recipes.RECIPES` (``moco_v2``,
            ``moco_cifar10_demo``, ``simclr``, ``solo_symmetric``, ``solo_asymmetric``: two
            views; ``crop_flip``: one), each with its source in ``recipes.py``.
        crop_scale: The area fraction range of every view's random-resized crop; None: the
            recipe's.
        knn_memory: Also validate on the train split (the kNN memory bank), see above.
        image_size: Side S of every image tensor.
        batch_size: Per-rank train batch size. Under DDP the R per-rank batches of a step are
            exactly the batch of one process with ``R * batch_size`` (blocked ranks, see
            :class:`ResumableSampler`).
        eval_batch_size: Per-rank batch size of validation and test. Under DDP each rank
            evaluates its own shard, every item exactly once (no padded duplicates).
        num_workers: DataLoader worker processes; results do not depend on it.
        seed: Seeds the data order, the augmentations and the subsets.
        limit_train_images: Seeded subset of the train split (training and kNN memory).
        limit_test_images: Seeded subset of the test split.
        mean: Per-channel mean; None: the dataset's
            (:data:`~infonce.trainer.augment.normalization.DATASET_STATS`), or for ``folder``
            estimated at setup from up to 2,000 seeded train images.
        std: Per-channel std, each > 0; None as for ``mean``.
        pin_memory: Pin batches in page-locked memory (loader path only).
        resident: Decode each split once into a uint8 tensor on the training device and augment
            whole batches there; None: when ``image_size <= 64``. Images are stored at
            ``image_size`` (resized and center-cropped like the eval transform), so crops of
            larger images are taken from that; ``num_workers`` only speeds up the first decode.
        cache_dir: Where decoded splits are cached (keyed by their source files); None:
            ``$INFONCE_CACHE`` or ``~/.cache/infonce``.
        bad_images: For ``folder``: every image is decoded once before training (the result
            is remembered in the cache, so later runs only ``stat`` the files); ``error``
            refuses a split with unreadable images, naming them; ``skip`` leaves them out
            with a warning.

    Shape:
        train: ((B, 3, S, S), (B, 3, S, S)) float32 views and (B,) int64 labels (two views),
        or (B, 3, S, S) and (B,) (one). eval: (B, 3, S, S) float32 and (B,) int64, and (B,) bool
        ``is_query`` for the kNN loader.

    Under DDP, :meth:`prepare_data` (once per node) downloads CIFAR and decodes resident
    splits into the cache; every rank's :meth:`setup` then only reads.

    Raises:
        ValueError: an argument out of range (the message names it and its value).
        UnreadableImagesError: at setup, a folder split with images that cannot be decoded
            (``bad_images: error``).
        ConfigError: when training starts, fewer training images than one global batch.
    """

    def __init__(
        self,
        dataset: Literal["cifar10", "cifar100", "folder"] = "cifar10",
        root: str = "data",
        download: bool = False,
        augmentation: str = "moco_v2",
        crop_scale: tuple[float, float] | None = None,
        knn_memory: bool = True,
        image_size: int = 32,
        batch_size: int = 512,
        eval_batch_size: int = 512,
        num_workers: int = 2,
        seed: int = 0,
        limit_train_images: int | None = None,
        limit_test_images: int | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        pin_memory: bool = False,
        resident: bool | None = None,
        cache_dir: str | None = None,
        bad_images: Literal["error", "skip"] = "error",
    ):
        super().__init__()
        check_choice(dataset, "dataset", DATASETS)
        self.views = recipe(augmentation, crop_scale)  # one ViewSpec per view
        check_int(image_size, "image_size")
        check_int(batch_size, "batch_size")
        check_int(eval_batch_size, "eval_batch_size")
        check_int(num_workers, "num_workers", minimum=0)
        check_int(limit_train_images, "limit_train_images", optional=True)
        check_int(limit_test_images, "limit_test_images", optional=True)
        if mean is not None:
            mean = check_channel_stats("mean", mean, positive=False)
        if std is not None:
            std = check_channel_stats("std", std, positive=True)
        check_choice(bad_images, "bad_images", BAD_IMAGES)
        self.dataset, self.root, self.download = dataset, root, download
        self.augmentation, self.knn_memory, self.image_size = augmentation, knn_memory, image_size
        self.crop_scale = crop_scale
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed, self.pin_memory = num_workers, seed, pin_memory
        self.limit_train_images, self.limit_test_images = limit_train_images, limit_test_images
        default_mean, default_std = DATASET_STATS.get(dataset, (None, None))
        self.mean = tuple(mean) if mean is not None else default_mean  # None until setup
        self.std = tuple(std) if std is not None else default_std
        self.resident = resident if resident is not None else image_size <= 64
        self.cache_dir, self.bad_images = cache_dir, bad_images
        self._bases: dict[bool, Dataset] = {}  # split (train?) -> raw dataset, built once
        self._tensors: dict[bool, tuple[Tensor, Tensor]] = {}  # split -> (images, labels)
        self._resume_at: tuple[int, int] | None = None  # (epoch, samples done) from a checkpoint
        self.train_sampler: ResumableSampler | None = None

    @property
    def views_per_image(self) -> int:
        """Views of each image in a train batch: 2 is ``((x1, x2), y)``, 1 is ``(x, y)``."""
        return len(self.views)

    @property
    def num_classes(self) -> int:
        """Classes in the dataset, from a directory listing at most (no image decoded)."""
        return num_classes(self.dataset, self.root)

    def prepare_data(self) -> None:
        """Once per node, before any rank's setup: download CIFAR if asked, scan a folder's
        images and decode the resident splits into the cache, so that the ranks only read.
        Raises nothing about bad images: every rank's :meth:`setup` does, so all stop."""
        for train in (True, False):
            base = build_dataset(self.dataset, self.root, train, self.download)
            if isinstance(base, ImageFolder):  # scanned here, refused in every rank's setup
                if self.bad_images == "error" and scan_folder(
                    base, self.cache_dir, self.num_workers
                ):
                    continue
                base = checked_folder(base, "skip", self.cache_dir, self.num_workers, warn=False)
            if self.resident:  # into the cache only: setup loads it where it is needed
                ensure_cached(base, self.image_size, self.cache_dir, self.num_workers)

    def setup(self, stage: str | None = None) -> None:
        """Build the raw splits ``stage`` needs (once), and estimate folder mean/std if unset."""
        if stage in (None, "fit") or (stage == "validate" and self.knn_memory):
            self._base(train=True)
        self._base(train=False)
        self._resolve_stats()

    def _resolve_stats(self) -> None:
        if self.mean is not None and self.std is not None:
            return
        base = self._base(train=True)
        indices = subset_indices(len(base), _STATS_IMAGES, self.seed)
        mean, std = channel_mean_std(base, indices, self.image_size)
        if self.std is None and min(std) <= 0:
            raise ConfigError(
                f"the training images have a colour channel without variation (std {std}, "
                f"estimated from {len(indices) if indices else len(base)} images), which "
                "cannot be normalised: set --data.mean and --data.std"
            )
        self.mean = self.mean if self.mean is not None else mean
        self.std = self.std if self.std is not None else std

    def _base(self, train: bool) -> Dataset:
        if train not in self._bases:  # downloads happened in prepare_data, if anywhere
            self._bases[train] = self._raw_split(train, download=False)
        return self._bases[train]

    def _raw_split(self, train: bool, download: bool) -> Dataset:
        """The split without transform; for a folder, checked image by image (``bad_images``)."""
        base = build_dataset(self.dataset, self.root, train, download)
        if isinstance(base, ImageFolder):
            base = checked_folder(base, self.bad_images, self.cache_dir, self.num_workers)
        return base

    def _split_indices(self, train: bool) -> list[int] | None:
        """The split's seeded subset (None: all of it)."""
        limit = self.limit_train_images if train else self.limit_test_images
        return subset_indices(len(self._base(train)), limit, self.seed)

    def _train_items(self) -> int:
        """Images in the train split (its seeded subset when limited), without decoding them."""
        indices = self._split_indices(train=True)
        return len(self._base(True)) if indices is None else len(indices)

    def _split(self, train: bool, transform: Callable[..., Any]) -> Dataset:
        """The split (limited to its seeded subset) under a per-sample or a batch transform."""
        base = self._base(train)
        indices = self._split_indices(train)
        if not self.resident:
            return SeededTransformDataset(base, transform, indices)
        if train not in self._tensors:
            images, labels = load_or_decode(base, self.image_size, self.cache_dir, self.num_workers)
            device = self._device()
            self._tensors[train] = images.to(device), labels.to(device)
        return TensorImageDataset(*self._tensors[train], transform, indices)

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _loader(self, data: Dataset, batch_size: int, **kwargs) -> DataLoader:
        """A DataLoader over ``data``: batched in the dataset (resident) or by workers."""
        if self.resident:
            return DataLoader(data, batch_size=batch_size, collate_fn=keep_batch, **kwargs)
        return DataLoader(
            data,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            **kwargs,
        )

    def _train_transform(self) -> Callable[..., Any]:
        """The recipe's views: per sample (loader) or per batch (resident); a tuple of the
        views for two or more, the view itself for one."""
        if not self.resident:
            if len(self.views) == 1:
                return view_transform(self.views[0], self.image_size, self.mean, self.std)
            return views_transform(self.views, self.image_size, self.mean, self.std)
        views = BatchViews(self.views, self.image_size, self.mean, self.std).to(self._device())
        # (images, generator) -> (view1, view2, ...), or the one view
        return views if len(self.views) > 1 else views.view

    def _eval_transform(self) -> Callable[..., Any]:
        if not self.resident:
            return eval_transform(self.image_size, self.mean, self.std)
        return Normalize(self.mean, self.std).to(self._device())

    def state_dict(self) -> dict[str, int]:
        """How far training got: saved in every checkpoint of ``fit``, read back by a resumed run.

        Derived from the trainer's loop: the epoch and how many of its batches are done, also
        for checkpoints written during validation (the monitored "best" one).
        """
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit" or self.train_sampler is None:
            return {}
        return {
            "epoch": trainer.current_epoch,
            "batches_done": trainer.fit_loop.epoch_loop.batch_progress.current.processed,
            "batches_per_epoch": int(trainer.num_training_batches),
            "batch_size": self.batch_size,
            "world_size": trainer.world_size,
            "seed": self.seed,
            "train_items": self.train_sampler.num_items,
            # what a user of the trained backbone must feed it (infonce.trainer.export records it)
            "image_size": self.image_size,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next train dataloader start where the checkpointed run stopped."""
        if not state:
            return
        # Lightning warns that a mid-epoch resume is unreliable unless the DataLoader itself
        # is stateful; here the data module restores the position (this state).
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended")
        epoch, done = state["epoch"], state["batches_done"]
        if done >= state["batches_per_epoch"]:  # saved at the end of an epoch
            epoch, done = epoch + 1, 0
        samples = done * state["batch_size"] * state["world_size"]  # over all ranks
        world = self.trainer.world_size if self.trainer is not None else 1
        now = {"batch_size": self.batch_size, "world_size": world, "seed": self.seed}
        if "train_items" in state:  # the train split's size, known once it was built
            now["train_items"] = self._train_items()
        changed = [f"{k}={v} (saved: {state[k]})" for k, v in now.items() if state.get(k, v) != v]
        if changed:
            warnings.warn(
                f"resuming with {', '.join(changed)}: the data order of the interrupted epoch "
                "is not reproduced exactly",
                stacklevel=2,
            )
        self._resume_at = (epoch, samples // world)

    def _replicas(self) -> tuple[int, int]:
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        self._resolve_stats()
        data = self._split(train=True, transform=self._train_transform())
        num_replicas, rank = self._replicas()
        if len(data) < self.batch_size * num_replicas:  # drop_last: no batch, nothing trained
            limit = " (data.limit_train_images)" if self.limit_train_images else ""
            raise ConfigError(
                f"--data.batch_size {self.batch_size} on {num_replicas} device(s) needs at least "
                f"{self.batch_size * num_replicas} training images for one batch, the train split "
                f"has {len(data)}{limit}: nothing would be trained; lower --data.batch_size"
            )
        trainer = self.trainer
        sampler = ResumableSampler(
            len(data), self.seed, num_replicas, rank, shuffle=True, drop_last=True,
            epoch_source=(lambda: trainer.current_epoch) if trainer is not None else None,
            batch_size=self.batch_size,
        )  # fmt: skip
        # Lightning creates the loader's iterator (and its workers prefetch) before it calls
        # set_epoch: the first iteration of a resumed run is pinned to its epoch and position.
        if self._resume_at is not None:
            epoch, start = self._resume_at
            self._resume_at = None
            # with another batch size or world the saved position may lie past this epoch's
            # end here (load_state_dict warned that the order is not exact then)
            sampler.set_start(min(start, len(sampler)), epoch)
        else:
            sampler.set_epoch(trainer.current_epoch if trainer is not None else 0)
        self.train_sampler = sampler
        return self._loader(
            data,
            self.batch_size,
            sampler=sampler,
            drop_last=True,
            # augmentations are seeded per sample (loader) or per batch (resident), never per
            # worker; worker seeds are drawn from this generator, not from the global RNG
            generator=torch.Generator(),
        )

    def fixed_indices(self, num_images: int) -> list[int]:
        """``num_images`` indices spread evenly over the train split (all of it when smaller),
        so that a folder stored class by class gives every class, not the first one's images.
        """
        check_int(num_images, "num_images")
        count = self._train_items()
        n = min(num_images, count)
        return [i * count // n for i in range(n)]

    def fixed_views(self, num_images: int) -> tuple[Tensor, ...]:
        """The views of ``num_images`` training images spread over the split
        (:meth:`fixed_indices`), the same at every call (seeded by ``seed``, not by the
        global RNG): a fixed batch for diagnostics.

        Shape:
            one (B, 3, S, S) float32 per view (two for two-view recipes), B = min(num_images,
            training images), on the device the resident data lives on (else the CPU).

        Raises:
            ValueError: a recipe of one view (``crop_flip``), or ``num_images`` < 1.
        """
        check_int(num_images, "num_images")
        if self.views_per_image < 2:
            raise ValueError(
                "fixed_views needs a recipe of two or more views, got augmentation "
                f"{self.augmentation!r} ({self.views_per_image} view)"
            )
        self._resolve_stats()
        data = self._split(train=True, transform=self._train_transform())
        keys = [(i, derive_seed(self.seed, FIXED_VIEWS, i)) for i in self.fixed_indices(num_images)]
        if self.resident:  # one batch, augmented with a generator seeded by the first key
            views, _ = data.__getitems__(keys)
            return tuple(views)
        per_image = [data[key][0] for key in keys]  # per image ((3, S, S), (3, S, S), ...)
        return tuple(torch.stack(views) for views in zip(*per_image, strict=True))

    def _eval_split(self, train: bool) -> Dataset:
        self._resolve_stats()
        return self._split(train=train, transform=self._eval_transform())

    def val_dataloader(self) -> DataLoader:
        if self.knn_memory:  # one loader, so validation reports every metric once
            data = MemoryThenQueries(self._eval_split(train=True), self._eval_split(train=False))
            return self._eval_loader(data)
        return self.test_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self._eval_split(train=False))

    def _eval_loader(self, data: Dataset) -> DataLoader:
        """This rank's shard of ``data`` in order, every item once over all ranks."""
        return self._loader(
            data, self.eval_batch_size, sampler=ShardSampler(len(data), *self._replicas())
        )


class MemoryThenQueries(Dataset):
    """The kNN memory split followed by the query split, each item tagged with its role.

    Item ``i`` is ``memory[i]`` for ``i < len(memory)``, else ``queries[i - len(memory)]``,
    with a third element ``is_query``. Batched splits (:class:`TensorImageDataset`) are
    served a batch at a time through ``__getitems__``, in the order of the keys.

    Shape:
        getitem: ``(x, y, is_query: bool)``; getitems: ``(x (B, ...), y (B,), is_query (B,))``.
    """

    def __init__(self, memory: Dataset, queries: Dataset):
        self.memory, self.queries = memory, queries
        self.num_memory = len(memory)

    def __len__(self) -> int:
        return self.num_memory + len(self.queries)

    def __getitem__(self, index: int) -> tuple[Any, int, bool]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if index < self.num_memory:
            return (*self.memory[index], False)
        return (*self.queries[index - self.num_memory], True)

    def __getitems__(self, keys: list[int]) -> Any:
        if not hasattr(self.memory, "__getitems__"):
            return [self[k] for k in keys]  # per-sample splits: the DataLoader collates
        is_query = torch.tensor([k >= self.num_memory for k in keys])  # (B,)
        memory = [k for k in keys if k < self.num_memory]
        queries = [k - self.num_memory for k in keys if k >= self.num_memory]
        batches = [self.memory.__getitems__(memory)] if memory else []
        batches += [self.queries.__getitems__(queries)] if queries else []
        x = torch.cat([b[0] for b in batches])  # (B, ...): memory keys first, then queries
        y = torch.cat([b[1] for b in batches])  # (B,)
        order = torch.argsort(is_query.int(), stable=True)  # row j of x holds keys[order[j]]
        if not torch.equal(order, torch.arange(len(keys))):
            back = torch.argsort(order).to(x.device)
            x, y = x[back], y[back]
        return x, y, is_query.to(x.device)
