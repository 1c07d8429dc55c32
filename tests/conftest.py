"""Shared fixtures: tiny on-disk datasets in the real formats the data module reads."""

import os
import pickle
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.cifar
from PIL import Image

TINY_CLASSES = ("blue", "green", "red")  # sorted, as ImageFolder orders them
_DOMINANT_CHANNEL = {"red": 0, "green": 1, "blue": 2}
# the real CIFAR-10 as JPEGs in ImageFolder layout, cifar10-jpeg/{train,test}/<class>/<image>
CIFAR10_JPEG_TARBALL = os.environ.get("INFONCE_CIFAR10_TARBALL", "")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """``root/{train,test}/{blue,green,red}/*.png``: 8 train and 4 test 32x32 RGB per class.

    Pixels are seeded noise in [0, 100) plus 155 on the class's own channel, so each class
    has a dominant colour.
    """
    root = tmp_path_factory.mktemp("tiny_folder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 4)):
        for name in TINY_CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 100, size=(32, 32, 3), dtype=np.uint8)
                pixels[..., _DOMINANT_CHANNEL[name]] += 155
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` (BINSTRING), as the official CIFAR pickles do.

    Loaded with ``encoding="bytes"`` the keys are ``b"data"``; with ``encoding="latin1"``
    (what torchvision uses) they are ``"data"``, exactly as for the real files.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _write_py2_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _cifar_batch(rng, n: int, num_classes: int, label_key: bytes, name: bytes) -> dict:
    labels = [int(label) for label in rng.integers(0, num_classes, size=n)]
    return {
        b"batch_label": name,
        label_key: labels,
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),  # (N, 3*32*32) CHW
        b"filenames": [b"img_%05d.png" % i for i in range(n)],
    }


@pytest.fixture(scope="session")
def cifar10_pickle_root(tmp_path_factory) -> Path:
    """A tiny CIFAR-10 in the official python-pickle layout: 5 x 10 train, 20 test images.

    ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` with ``b"data"``
    uint8 (n, 3072) and ``b"labels"``. torchvision md5-checks these files in ``__init__``,
    which no synthetic file can pass: tests that load it also use ``skip_cifar_md5``.
    """
    root = tmp_path_factory.mktemp("cifar10")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(10)
    for i in range(1, 6):
        batch = _cifar_batch(rng, 10, 10, b"labels", b"training batch %d of 5" % i)
        _write_py2_pickle(folder / f"data_batch_{i}", batch)
    _write_py2_pickle(folder / "test_batch", _cifar_batch(rng, 20, 10, b"labels", b"testing"))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"label_names": names, b"num_cases_per_batch": 10, b"num_vis": 3072}
    _write_py2_pickle(folder / "batches.meta", meta)
    return root


@pytest.fixture(scope="session")
def cifar100_pickle_root(tmp_path_factory) -> Path:
    """A tiny CIFAR-100 in the official layout: ``cifar-100-python/{train, test, meta}``.

    40 train and 20 test images with ``b"fine_labels"`` and ``b"coarse_labels"``; md5 as for
    ``cifar10_pickle_root``.
    """
    root = tmp_path_factory.mktemp("cifar100")
    folder = root / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(100)
    for split, n in (("train", 40), ("test", 20)):
        batch = _cifar_batch(rng, n, 100, b"fine_labels", split.encode())
        batch[b"coarse_labels"] = [label // 5 for label in batch[b"fine_labels"]]
        _write_py2_pickle(folder / split, batch)
    meta = {
        b"fine_label_names": [b"fine_%02d" % i for i in range(100)],
        b"coarse_label_names": [b"coarse_%02d" % i for i in range(20)],
    }
    _write_py2_pickle(folder / "meta", meta)
    return root


@pytest.fixture
def skip_cifar_md5(monkeypatch) -> None:
    """Make torchvision's CIFAR md5 check a file-exists check, for this test only.

    ``torchvision.datasets.CIFAR10.__init__`` always calls ``_check_integrity`` (md5 of every
    batch file) and ``_load_meta`` checks the meta file's md5, both through the module-level
    ``check_integrity``; the synthetic fixture files cannot match the official md5s. Only that
    function is replaced: everything else torchvision does (paths, unpickling, HWC reshape) runs.
    """
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath)
    )


@pytest.fixture(scope="session")
def cifar10_jpeg_root(tmp_path_factory) -> Path:
    """The real CIFAR-10 as JPEGs (the tarball ``$INFONCE_CIFAR10_TARBALL``), extracted once.

    Returns ``.../cifar10-jpeg`` with ``train/`` and ``test/`` in ImageFolder layout. Skips
    when no tarball is named, except in CI (``CI`` set), where the real-data tests must run:
    there it fails.
    """
    if not CIFAR10_JPEG_TARBALL or not Path(CIFAR10_JPEG_TARBALL).is_file():
        message = f"INFONCE_CIFAR10_TARBALL names no file: {CIFAR10_JPEG_TARBALL!r}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    target = tmp_path_factory.mktemp("cifar10_jpeg")
    if shutil.which("tar"):  # about 2 s; Python's tarfile takes about 30 s on this archive
        subprocess.run(["tar", "-xJf", str(CIFAR10_JPEG_TARBALL), "-C", str(target)], check=True)
    else:
        with tarfile.open(CIFAR10_JPEG_TARBALL) as tar:
            tar.extractall(target, filter="data")
    return target / "cifar10-jpeg"


@pytest.fixture(autouse=True, scope="session")
def decoded_splits_cached_in_a_temporary_folder(tmp_path_factory):
    """Resident data modules (and train.py subprocesses) cache decoded splits here, not in ~."""
    os.environ["INFONCE_CACHE"] = str(tmp_path_factory.mktemp("infonce_cache"))
