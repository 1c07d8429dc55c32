"""Unreadable images found before training starts, not at the step that meets them.

A folder dataset read by PIL one image at a time would fail at the first corrupt file it
meets, maybe hours into a run. :func:`checked_folder` decodes every image of an ImageFolder
once (by DataLoader workers, with a progress bar; JPEGs in PIL's draft mode, which still reads
every byte of the file), remembers the result under the data cache keyed by the files'
fingerprint (so later runs pay one ``stat`` per file), and then either refuses the dataset
with the paths of the bad files (``bad_images="error"``) or drops them with a warning
(``"skip"``).
"""

import json
import os
import warnings
from pathlib import Path

from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

from infonce._files import atomic_write
from infonce.trainer.data.resident import default_cache_dir, fingerprint

BAD_IMAGES = ("error", "skip")
SCAN_FORMAT = 1  # bump when what the scan checks changes
_SHOWN = 5  # paths named in a message


class UnreadableImagesError(RuntimeError):
    """Images of a dataset cannot be decoded; the message names them and the way around."""


class _Readable(Dataset):
    """Item i: '' when image i decodes, else why not."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> str:
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                img.draft("RGB", (64, 64))  # JPEG: decode at a reduced scale, every byte read
                img.convert("RGB").load()
            return ""
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ...
            why = str(err).replace(f" {path!r}", "").replace(path, "the file")
            return f"{type(err).__name__}: {why}" if why else type(err).__name__


def find_unreadable(paths: list[str], num_workers: int = 0, progress: bool = True) -> dict:
    """``{path: reason}`` for every file of ``paths`` that PIL cannot decode as an image."""
    loader = DataLoader(_Readable(paths), batch_size=256, num_workers=num_workers, collate_fn=list)
    if progress:
        from tqdm.auto import tqdm  # a dependency of lightning

        loader = tqdm(loader, desc=f"checking {len(paths):,} images", unit="batch", leave=False)
    reasons = [reason for batch in loader for reason in batch]
    return {path: why for path, why in zip(paths, reasons, strict=True) if why}


def scan_folder(
    dataset: ImageFolder,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, str]:
    """``{path: reason}`` of ``dataset``'s unreadable images, scanned once and remembered.

    The result is kept under ``cache_dir`` (default: the data cache) keyed by the files'
    fingerprint, so a later call costs one ``stat`` per file. A damaged record is scanned
    again; a cache folder that cannot be written only costs the next call a scan (warned).
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    marker = folder / f"scan{SCAN_FORMAT}-{fingerprint(dataset, 0)[:24]}.json"  # size 0: a scan
    if marker.is_file():
        try:
            bad = json.loads(marker.read_text())
            if isinstance(bad, dict):
                return bad
        except (OSError, ValueError):
            pass
        warnings.warn(f"the image scan record {marker} is damaged: scanning again", stacklevel=2)
    bad = find_unreadable([path for path, _ in dataset.samples], num_workers, progress)
    try:
        atomic_write(marker, lambda f: f.write(json.dumps(bad).encode()))
    except OSError as err:
        warnings.warn(
            f"cannot remember the image scan in {folder} ({err.strerror or err}): the next run "
            "scans again; set INFONCE_CACHE or --data.cache_dir to a writable folder",
            stacklevel=2,
        )
    return bad


def checked_folder(
    dataset: ImageFolder,
    bad_images: str = "error",
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    progress: bool = True,
    warn: bool = True,
) -> ImageFolder:
    """``dataset`` once every image is known to decode: refused or without the bad ones.

    Args:
        dataset: an ImageFolder (its ``samples``, ``imgs`` and ``targets`` are filtered in
            place under ``"skip"``).
        bad_images: ``"error"`` or ``"skip"``.
        cache_dir, num_workers, progress: as :func:`scan_folder`.
        warn: warn about the images ``"skip"`` leaves out.

    Returns:
        ``dataset``.

    Raises:
        UnreadableImagesError: with ``"error"``, some image does not decode (the message names
            the first ones, the count, and the option that skips them); with ``"skip"``, when
            no image is left.
    """
    bad = scan_folder(dataset, cache_dir, num_workers, progress)
    if not bad:
        return dataset
    shown = "; ".join(f"{path} ({why})" for path, why in list(bad.items())[:_SHOWN])
    more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
    if bad_images == "error":
        raise UnreadableImagesError(
            f"{len(bad)} of {len(dataset.samples)} images under {dataset.root} cannot be read: "
            f"{shown}{more}. Remove or replace them, or train without them: "
            "--data.bad_images skip"
        )
    keep = [(path, label) for path, label in dataset.samples if path not in bad]
    if not keep:
        raise UnreadableImagesError(f"no image under {dataset.root} can be read: {shown}{more}")
    if warn:
        warnings.warn(
            f"data.bad_images skip: leaving out {len(bad)} unreadable images under "
            f"{dataset.root}: {shown}{more}",
            stacklevel=2,
        )
    dataset.samples = dataset.imgs = keep
    dataset.targets = [label for _, label in keep]
    return dataset
