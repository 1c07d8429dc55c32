"""The raw image datasets (PIL image, int label), with errors that say how to fix them.

``build_dataset`` returns a dataset with no transform:
:class:`infonce.trainer.data.samplers.SeededTransformDataset` applies the transform, so that
augmentations can be seeded per sample.
"""

import os

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, CIFAR100, ImageFolder
from torchvision.datasets.folder import find_classes
from torchvision.transforms.functional import pil_to_tensor

from infonce._checks import check_choice, check_int
from infonce.trainer.augment.transforms import ResizeIfNeeded

DATASETS = ("cifar10", "cifar100", "folder")

_CIFAR = {
    "cifar10": (CIFAR10, "CIFAR-10", 10),
    "cifar100": (CIFAR100, "CIFAR-100", 100),
}


def _check_dataset(dataset: str) -> str:
    return check_choice(dataset, "dataset", DATASETS)


class DatasetNotFoundError(FileNotFoundError):
    """The data is not where ``root`` says; the message tells where it was expected and how
    to point ``root`` at a local copy. ``train.py`` prints it without a traceback."""


def _cifar_files(cls: type[CIFAR10], root: str) -> list[str]:
    """The absolute paths torchvision's ``cls`` reads under ``root``, meta file last."""
    folder = os.path.join(os.path.abspath(root), cls.base_folder)
    names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [os.path.join(folder, name) for name in names]


def _cifar_not_found(dataset: str, root: str, reason: str, tried: bool) -> DatasetNotFoundError:
    cls, title, _ = _CIFAR[dataset]
    files = _cifar_files(cls, root)
    download = (
        f"  - copy {cls.filename} from a machine with network access and extract it there;\n"
        if tried
        else "  - set download: true (--data.download true), which needs network access;\n"
    )
    return DatasetNotFoundError(
        f"{title} not found: {reason}.\n"
        f"  Expected the python-pickle files {', '.join(files)}\n"
        f"  (the contents of {cls.filename}).\n"
        f"  Fix one of:\n"
        f"  - point root at the folder that contains {cls.base_folder}/: "
        f"--data.root /path/to/dir (data.root in YAML);\n"
        f"{download}"
        f"  - use an ImageFolder copy with train/ and test/ class folders: "
        f"--data.dataset folder --data.root DIR."
    )


def _build_cifar(dataset: str, root: str, train: bool, download: bool) -> CIFAR10:
    cls, title, _ = _CIFAR[dataset]
    missing = [path for path in _cifar_files(cls, root) if not os.path.isfile(path)]
    if missing and not download:
        raise _cifar_not_found(dataset, root, f"missing {missing[0]} and download is false", False)
    if missing:
        try:
            return cls(root, train=train, download=True)
        except Exception as err:  # no network, proxy, disk full: one clear message instead
            reason = f"download: true failed ({type(err).__name__}: {err})"
            raise _cifar_not_found(dataset, root, reason, True) from None
    try:
        return cls(root, train=train, download=False)
    except RuntimeError as err:  # torchvision's md5 check failed
        folder = os.path.dirname(_cifar_files(cls, root)[0])
        raise RuntimeError(
            f"{title} files under {folder} exist but are corrupted or not the official release "
            f"(torchvision: {err}). Re-extract {cls.filename} there, or use an ImageFolder copy: "
            f"--data.dataset folder --data.root DIR."
        ) from None


def load_rgb(path: str) -> Image.Image:
    """Read the image at ``path`` as RGB; raise a RuntimeError naming ``path`` if unreadable.

    Raises:
        RuntimeError: the file is missing, truncated or not an image PIL can decode.
    """
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as err:  # includes PIL.UnidentifiedImageError and truncated files
        raise RuntimeError(f"cannot read image {path}: {err}") from err


def _split_dir(root: str, train: bool) -> str:
    path = os.path.join(root, "train" if train else "test")
    if not os.path.isdir(path):
        raise DatasetNotFoundError(
            f"image folder split not found: expected directory {os.path.abspath(path)} "
            f"laid out as <split>/<class>/<image> (root must hold train/ and test/); "
            f"point root at such a folder: --data.root DIR (data.root in YAML)"
        )
    return path


def _image_folder(root: str, train: bool) -> ImageFolder:
    path = _split_dir(root, train)
    try:
        return ImageFolder(path, loader=load_rgb)
    except FileNotFoundError as err:  # no class folder, or class folders without images
        raise DatasetNotFoundError(
            f"image folder split {os.path.abspath(path)} holds no images in class folders "
            f"({err}); the layout is <root>/{{train,test}}/<class>/<image>, one folder per "
            "class"
        ) from None


def build_dataset(dataset: str, root: str, train: bool, download: bool) -> Dataset:
    """The train or test split of ``dataset``, yielding (PIL RGB image, int label).

    Args:
        dataset: ``"cifar10"``, ``"cifar100"`` (torchvision's python-pickle releases under
            ``root``) or ``"folder"`` (``root/train`` and ``root/test`` in ImageFolder layout,
            ``root/<split>/<class>/<image>``).
        root: The folder holding the data.
        train: The train split if True, else the test split.
        download: CIFAR only: download the files if they are missing (needs network).

    Returns:
        A map-style dataset of (PIL.Image in RGB, int label), no transform applied.

    Raises:
        ValueError: ``dataset`` is not one of cifar10 | cifar100 | folder.
        DatasetNotFoundError: the CIFAR files or the folder split are missing, or the split
            has no class folder with images (the message names the expected paths and how to
            point ``root`` at a local copy).
        RuntimeError: CIFAR files present but corrupted. For ``folder``, reading a corrupt
            image later raises a RuntimeError naming its path.
    """
    if _check_dataset(dataset) in _CIFAR:
        return _build_cifar(dataset, root, train, download)
    return _image_folder(root, train)


def num_classes(dataset: str, root: str) -> int:
    """The number of classes: 10 or 100 for CIFAR, the class folders of ``root/train`` else.

    Cheap: a directory listing, no image is decoded.

    Raises:
        ValueError: unknown ``dataset``.
        DatasetNotFoundError: ``dataset="folder"`` and ``root/train`` is missing or has no
            class folders.
    """
    if _check_dataset(dataset) in _CIFAR:
        return _CIFAR[dataset][2]
    path = _split_dir(root, train=True)
    try:
        classes, _ = find_classes(path)
    except FileNotFoundError as err:
        raise DatasetNotFoundError(
            f"image folder split {os.path.abspath(path)} has no class folders ({err})"
        ) from None
    return len(classes)


def subset_indices(num_items: int, limit: int | None, seed: int) -> list[int] | None:
    """A seeded random subset of ``limit`` of ``range(num_items)``, sorted; None means all.

    The subset is the first ``limit`` entries of ``randperm(num_items)`` under ``seed``, so it
    is stable across runs and a smaller limit gives a subset of a larger one.

    Args:
        num_items: Size N of the full dataset.
        limit: How many items to keep (>= 1), or None for all. ``limit >= N`` keeps all.
        seed: Seed of the permutation.

    Returns:
        ``limit`` sorted ints in [0, N), or None when every item is kept.

    Raises:
        ValueError: ``limit`` < 1.
    """
    if limit is None:
        return None
    check_int(limit, "limit", optional=True)
    if limit >= num_items:
        return None
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(num_items, generator=generator)[:limit].tolist())


def channel_mean_std(
    dataset: Dataset, indices: list[int] | None, size: int
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of pixels in [0, 1] over ``dataset[i]`` for i in ``indices``.

    Images are first brought to (size, size) as the eval transform does, so the statistics are
    those of what the network sees. Accumulated in float64 over all pixels.

    Args:
        dataset: Yields (PIL image, label), e.g. from :func:`build_dataset`.
        indices: Which items to read; None reads all of them.
        size: Side S the images are resized / center-cropped to.

    Returns:
        ``(mean, std)``, each three floats (R, G, B).

    Raises:
        ValueError: no image to read.
    """
    indices = list(range(len(dataset))) if indices is None else indices
    if not indices:
        raise ValueError("channel_mean_std needs at least one image, got an empty dataset")
    resize = ResizeIfNeeded(size)
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for i in indices:
        x = pil_to_tensor(resize(dataset[i][0])).to(torch.float64) / 255  # (3, S, S)
        total += x.sum(dim=(1, 2))
        total_sq += x.square().sum(dim=(1, 2))
    count = len(indices) * size * size
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
