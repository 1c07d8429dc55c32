"""A dataset decoded once into one uint8 tensor, cached on disk, served a whole batch at a time.

Small images (CIFAR: 32x32) cost far more to decode and augment one by one in Python than to
train on. So the split is decoded once into ``images`` (N, 3, S, S) uint8 and ``labels`` (N,),
saved under a cache folder keyed by the source files (paths, sizes, modification times), kept
on the training device, and a batch is one index operation;
:mod:`infonce.trainer.augment.views` then augments it there as a batch. CIFAR-10 train is
150 MiB as uint8.
"""

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import CIFAR10, ImageFolder
from torchvision.transforms.functional import pil_to_tensor

from infonce._device import host_to_device
from infonce._files import atomic_torch_save, load_torch_file
from infonce.trainer.augment.transforms import ResizeIfNeeded

CACHE_FORMAT = 1  # bump when the cached content changes meaning


def default_cache_dir() -> Path:
    """``$INFONCE_CACHE`` if set, else ``~/.cache/infonce``."""
    return Path(os.environ.get("INFONCE_CACHE", Path.home() / ".cache" / "infonce"))


def source_files(dataset: Dataset) -> list[str]:
    """The files a torchvision CIFAR or ImageFolder dataset reads, in a fixed order.

    Raises:
        TypeError: another kind of dataset (its files are unknown, so it cannot be cached).
    """
    if isinstance(dataset, CIFAR10):  # CIFAR100 too
        lists = dataset.train_list if dataset.train else dataset.test_list
        folder = os.path.join(dataset.root, dataset.base_folder)
        return [os.path.join(folder, name) for name, _ in lists]
    if isinstance(dataset, ImageFolder):
        return [path for path, _ in dataset.samples]
    raise TypeError(f"cannot fingerprint a {type(dataset).__name__}: CIFAR or ImageFolder only")


def fingerprint(dataset: Dataset, size: int) -> str:
    """A hex digest of the source files (path, byte size, mtime), the labels and ``size``.

    Any file added, removed, renamed or rewritten gives another digest, so a stale cache is
    never read. Costs one ``stat`` per file.
    """
    digest = hashlib.sha256(f"infonce-tensor-cache:{CACHE_FORMAT}:{size}".encode())
    for path in source_files(dataset):
        stat = os.stat(path)
        digest.update(f"\0{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    for label in _labels(dataset):
        digest.update(label.to_bytes(4, "little"))
    return digest.hexdigest()


def _labels(dataset: Dataset) -> list[int]:
    return [int(t) for t in dataset.targets]


def _is_cifar_at(dataset: Dataset, size: int) -> bool:
    """A torchvision CIFAR whose arrays already hold (size, size) images: nothing to decode."""
    return isinstance(dataset, CIFAR10) and dataset.data.shape[1:3] == (size, size)


class _Decoded(Dataset):
    def __init__(self, dataset: Dataset, size: int):
        self.dataset, self.resize = dataset, ResizeIfNeeded(size)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tensor:
        return pil_to_tensor(self.resize(self.dataset[index][0]))  # (3, S, S) uint8


def decode(
    dataset: Dataset, size: int, num_workers: int = 0, progress: bool = True
) -> tuple[Tensor, Tensor]:
    """Every image of ``dataset`` as one uint8 tensor, brought to (size, size).

    CIFAR at size 32 is a reshape of the arrays torchvision already holds; other images are
    decoded with PIL, resized (short side) and center-cropped as the eval transform does
    (:class:`infonce.trainer.augment.transforms.ResizeIfNeeded`), by ``num_workers``
    processes, with a progress bar when ``progress``.

    Returns:
        ``(images, labels)``: (N, 3, S, S) uint8 and (N,) int64.

    Raises:
        RuntimeError: an unreadable image, named by its path.
    """
    labels = torch.tensor(_labels(dataset), dtype=torch.int64)  # (N,)
    if _is_cifar_at(dataset, size):
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S)
        return images, labels
    loader = DataLoader(_Decoded(dataset, size), batch_size=512, num_workers=num_workers)
    if progress:
        from tqdm.auto import tqdm  # a dependency of lightning

        loader = tqdm(loader, desc=f"decoding {len(dataset):,} images", unit="batch")
    images = torch.cat(list(loader)) if len(dataset) else torch.empty(0, 3, size, size)
    return images.to(torch.uint8), labels


def load_or_decode(
    dataset: Dataset,
    size: int,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """:func:`decode`, cached under ``cache_dir`` by :func:`fingerprint`.

    A cache file is written atomically (:func:`infonce._files.atomic_write`), so an
    interrupted run never leaves a broken one; an unreadable cache file is decoded again, with
    a warning. CIFAR at its own size is never cached (decoding it is a reshape). Arguments and
    results as :func:`decode`; ``cache_dir`` defaults to :func:`default_cache_dir`.
    """
    path = _cache_path(dataset, size, cache_dir)
    if path is None:
        return decode(dataset, size)
    if path.is_file():
        try:
            cached = load_torch_file(path, "decoded-data cache file")
            return cached["images"], cached["labels"]
        except (ValueError, KeyError, TypeError, IndexError) as err:  # disposable: decode again
            warnings.warn(f"{err}; decoding the images again", stacklevel=2)
    images, labels = decode(dataset, size, num_workers, progress)
    _save_atomically(path, images, labels)
    return images, labels


def ensure_cached(
    dataset: Dataset,
    size: int,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> None:
    """Decode ``dataset`` into the cache of :func:`load_or_decode` unless a readable copy is
    there already (or it needs none); nothing is loaded but the file's index (memory-mapped).
    For ``prepare_data``: decode once, let ranks read."""
    path = _cache_path(dataset, size, cache_dir)
    if path is None:
        return
    if path.is_file():
        try:
            cached = load_torch_file(path, "decoded-data cache file", mmap=True)
            if isinstance(cached, dict) and {"images", "labels"} <= set(cached):
                return
        except ValueError as err:
            warnings.warn(f"{err}; decoding the images again", stacklevel=2)
    _save_atomically(path, *decode(dataset, size, num_workers, progress))


def _cache_path(dataset: Dataset, size: int, cache_dir: str | os.PathLike | None) -> Path | None:
    """Where :func:`load_or_decode` caches ``dataset`` at ``size``; None: not cached."""
    if _is_cifar_at(dataset, size):
        return None
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    kind = type(dataset).__name__.lower()
    return folder / f"{kind}-{len(dataset)}-{size}px-{fingerprint(dataset, size)[:20]}.pt"


def _save_atomically(path: Path, images: Tensor, labels: Tensor) -> None:
    atomic_torch_save({"images": images, "labels": labels}, path)


BatchTransform = Callable[[Tensor, torch.Generator | None], Any]


class TensorImageDataset(Dataset):
    """Images and labels held as tensors (on any device); a batch is one indexing operation.

    The DataLoader hands a whole batch of keys to :meth:`__getitems__` (use it with
    ``collate_fn=`` :func:`keep_batch`), which indexes the images once and applies
    ``transform`` to the uint8 batch where it lies (e.g.
    :class:`infonce.trainer.augment.views.BatchViews` on the GPU). Keys are indices, or
    ``(index, sample_seed)`` from :class:`infonce.trainer.data.samplers.ResumableSampler`:
    then a generator seeded with the first key's seed drives the batch's augmentation, so a
    batch depends on (seed, epoch, position) only.

    Args:
        images: (N, 3, S, S) uint8.
        labels: (N,) int64, on the same device.
        transform: ``transform(images (B, 3, S, S) uint8, generator or None)``, e.g. the two
            views; None returns the uint8 images.
        indices: optional subset; item i is then ``images[indices[i]]``.

    Shape:
        a batch: ``(transform(images), labels)``, labels (B,) int64.

    Raises:
        ValueError: images not (N, 3, S, S) uint8, or labels not (N,) int64.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        transform: BatchTransform | None = None,
        indices: Sequence[int] | None = None,
    ):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images must be (N, 3, S, S) uint8, got {tuple(images.shape)} {images.dtype}"
            )
        if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels must be ({images.shape[0]},) int64, got {tuple(labels.shape)} "
                f"{labels.dtype}"
            )
        self.images, self.labels, self.transform = images, labels, transform
        self.indices = None if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.images) if self.indices is None else len(self.indices)

    def __getitems__(self, keys: list) -> tuple[Any, Tensor]:
        generator = None
        if keys and isinstance(keys[0], tuple):
            generator = torch.Generator(self.images.device).manual_seed(keys[0][1])
            keys = [index for index, _ in keys]
        if self.indices is not None:
            keys = [self.indices[i] for i in keys]
        index = host_to_device(torch.as_tensor(keys, dtype=torch.long), self.images.device)  # (B,)
        images = self.images[index]  # (B, 3, S, S) uint8
        if self.transform is not None:
            images = self.transform(images, generator)
        return images, self.labels[index]

    def __getitem__(self, key):
        raise TypeError("TensorImageDataset serves whole batches: use __getitems__ or a DataLoader")


def keep_batch(batch):
    """The ``collate_fn`` for :class:`TensorImageDataset`: its batches come collated."""
    return batch
