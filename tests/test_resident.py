"""Decoding a split into one uint8 tensor, caching it by its source files, serving batches."""

import os

import pytest
import torch
from torchvision.transforms.functional import pil_to_tensor

from infonce.trainer.data.resident import (
    TensorImageDataset,
    decode,
    ensure_cached,
    fingerprint,
    load_or_decode,
)
from infonce.trainer.data.samplers import sample_seed
from infonce.trainer.data.sources import build_dataset


def folder(root, train=True):
    return build_dataset("folder", str(root), train=train, download=False)


def test_decode_gives_every_image_as_uint8_in_dataset_order(tiny_folder):
    dataset = folder(tiny_folder)
    images, labels = decode(dataset, size=32, progress=False)
    assert images.shape == (24, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(labels, torch.tensor(dataset.targets))
    for i in (0, 9, 23):
        assert torch.equal(images[i], pil_to_tensor(dataset[i][0]))


def test_decode_resizes_and_center_crops_to_size(tiny_folder):
    images, _ = decode(folder(tiny_folder), size=16, progress=False)
    assert images.shape == (24, 3, 16, 16)


def test_cifar_is_its_own_arrays_without_decoding(cifar10_pickle_root, skip_cifar_md5):
    dataset = build_dataset("cifar10", str(cifar10_pickle_root), train=True, download=False)
    images, labels = decode(dataset, size=32)
    assert torch.equal(images, torch.from_numpy(dataset.data).permute(0, 3, 1, 2))
    assert labels.tolist() == dataset.targets


def test_cache_is_written_once_and_read_back_identically(tiny_folder, tmp_path, monkeypatch):
    dataset = folder(tiny_folder)
    first = load_or_decode(dataset, 32, cache_dir=tmp_path, progress=False)
    (cached,) = tmp_path.glob("*.pt")
    assert not list(tmp_path.glob(".tmp-*"))  # written atomically, nothing left over
    monkeypatch.setattr(
        "infonce.trainer.data.resident.decode", lambda *a, **k: pytest.fail("decoded")
    )
    second = load_or_decode(dataset, 32, cache_dir=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert cached.name.startswith("imagefolder-24-32px-")


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_cache_file_is_decoded_again_by_both_readers(damage, tiny_folder, tmp_path):
    dataset = folder(tiny_folder)
    first = load_or_decode(dataset, 32, cache_dir=tmp_path, progress=False)
    (cached,) = tmp_path.glob("*.pt")
    data = cached.read_bytes()
    for reader in (load_or_decode, ensure_cached):
        cached.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
        with pytest.warns(UserWarning, match="decoding the images again"):
            reader(dataset, 32, cache_dir=tmp_path, progress=False)
        assert cached.read_bytes() == data or torch.equal(
            load_or_decode(dataset, 32, cache_dir=tmp_path)[0], first[0]
        )


def test_fingerprint_changes_when_a_source_file_changes(tiny_folder, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_folder, root)
    before = fingerprint(folder(root), 32)
    assert fingerprint(folder(root), 32) == before
    assert fingerprint(folder(root), 16) != before
    path = folder(root).samples[5][0]
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # rewritten
    assert fingerprint(folder(root), 32) != before


def test_dataset_serves_a_batch_in_one_call_with_a_subset_and_a_transform():
    images = torch.arange(10, dtype=torch.uint8)[:, None, None, None].expand(10, 3, 2, 2)
    labels = torch.arange(10) * 10
    seen = []

    def transform(x, generator):
        seen.append(generator)
        return x.float()

    data = TensorImageDataset(images, labels, transform, indices=[9, 7, 5, 3])
    assert len(data) == 4
    x, y = data.__getitems__([0, 2])
    assert x.dtype == torch.float32 and x[:, 0, 0, 0].tolist() == [9.0, 5.0]
    assert y.tolist() == [90, 50] and seen == [None]


def test_seeded_keys_seed_the_batch_generator_with_the_first_sample_seed():
    images = torch.zeros(6, 3, 2, 2, dtype=torch.uint8)
    draws = []
    data = TensorImageDataset(
        images, torch.zeros(6, dtype=torch.long),
        lambda x, g: draws.append(torch.rand(1, generator=g).item()) or x,
    )  # fmt: skip
    keys = [(i, sample_seed(0, 0, i)) for i in (4, 1)]
    data.__getitems__(keys)
    data.__getitems__(keys)
    data.__getitems__([(i, sample_seed(0, 1, i)) for i in (4, 1)])
    expected = torch.rand(1, generator=torch.Generator().manual_seed(keys[0][1])).item()
    assert draws[0] == draws[1] == expected != draws[2]


U8, LABELS_2, LABELS_3 = torch.uint8, torch.zeros(2, dtype=torch.long), torch.zeros(3).long()


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (torch.zeros(2, 3, 4, 4), LABELS_2, r"images must be \(N, 3, S, S\) uint8"),
        (torch.zeros(2, 1, 4, 4, dtype=U8), LABELS_2, "images must be"),
        (torch.zeros(2, 3, 4, 4, dtype=U8), LABELS_3, r"labels must be \(2,\) int64"),
    ],
)
def test_bad_tensors_are_rejected_naming_them(images, labels, match):
    with pytest.raises(ValueError, match=match):
        TensorImageDataset(images, labels)
