import os
import pickle
import shutil
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10
from torchvision.transforms.functional import pil_to_tensor

from infonce.trainer.data.sources import (
    build_dataset,
    channel_mean_std,
    num_classes,
    subset_indices,
)


def test_missing_cifar10_error_names_expected_files_download_and_data_root(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        build_dataset("cifar10", str(tmp_path), train=True, download=False)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in message
    assert str(tmp_path / "cifar-10-batches-py" / "test_batch") in message
    assert "download: true" in message and "network" in message
    assert "--data.root /path/to/dir" in message
    assert "--data.dataset folder --data.root DIR" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__ is False


def test_failed_cifar100_download_raises_the_same_clear_error_without_a_chain(
    tmp_path, monkeypatch
):
    def no_network(self):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(CIFAR10, "download", no_network)
    with pytest.raises(FileNotFoundError) as info:
        build_dataset("cifar100", str(tmp_path), train=False, download=True)
    message = str(info.value)
    assert "download: true failed (URLError" in message
    assert str(tmp_path / "cifar-100-python" / "train") in message
    assert "--data.root" in message
    assert "set download: true" not in message  # it was set: say how to copy the files instead
    assert "copy cifar-100-python.tar.gz" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__ is True


def test_cifar10_fixture_is_the_official_pickle_format(cifar10_pickle_root):
    with open(cifar10_pickle_root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")  # as the CIFAR web page reads it
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (10, 3072)
    assert len(batch[b"labels"]) == 10


def test_cifar10_loads_through_torchvision_as_rgb_pil_and_int_label(
    cifar10_pickle_root, skip_cifar_md5
):
    train = build_dataset("cifar10", str(cifar10_pickle_root), train=True, download=False)
    test = build_dataset("cifar10", str(cifar10_pickle_root), train=False, download=False)
    assert (len(train), len(test)) == (50, 20)
    with open(cifar10_pickle_root / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    image, label = train[13]  # the 4th image of data_batch_2
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)
    assert label == batch[b"labels"][3]
    expected = torch.from_numpy(batch[b"data"][3].reshape(3, 32, 32))  # CHW planes
    assert torch.equal(pil_to_tensor(image), expected)


def test_cifar100_loads_fine_labels(cifar100_pickle_root, skip_cifar_md5):
    train = build_dataset("cifar100", str(cifar100_pickle_root), train=True, download=False)
    with open(cifar100_pickle_root / "cifar-100-python" / "train", "rb") as f:
        fine = pickle.load(f, encoding="bytes")[b"fine_labels"]
    assert len(train) == 40
    assert [train[i][1] for i in range(40)] == fine


def test_cifar_files_failing_torchvision_md5_raise_corrupted_error(cifar10_pickle_root):
    with pytest.raises(RuntimeError, match="exist but are corrupted") as info:
        build_dataset("cifar10", str(cifar10_pickle_root), train=True, download=False)
    assert str(cifar10_pickle_root / "cifar-10-batches-py") in str(info.value)


def test_unknown_dataset_name_raises_value_error_listing_the_choices():
    with pytest.raises(ValueError, match=r"dataset must be one of .*'cifar10'.*got 'imagenet'"):
        build_dataset("imagenet", "data", train=True, download=False)
    with pytest.raises(ValueError, match="got 'svhn'"):
        num_classes("svhn", "data")


def test_folder_dataset_yields_rgb_pil_images_labelled_by_class_folder(tiny_folder):
    train = build_dataset("folder", str(tiny_folder), train=True, download=False)
    test = build_dataset("folder", str(tiny_folder), train=False, download=False)
    assert (len(train), len(test)) == (24, 12)
    assert train.classes == ["blue", "green", "red"]
    dominant = {0: 2, 1: 1, 2: 0}  # label -> its colour's RGB channel
    for image, label in (train[0], train[8], train[23], test[5]):
        assert image.mode == "RGB" and image.size == (32, 32)
        means = pil_to_tensor(image).float().mean(dim=(1, 2))
        assert int(means.argmax()) == dominant[label]


def test_missing_folder_split_error_names_the_expected_directory(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=f"expected directory {tmp_path / 'test'}"):
        build_dataset("folder", str(tmp_path), train=False, download=False)


def test_corrupt_image_error_names_its_file(tiny_folder, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_folder, root)
    bad = root / "train" / "green" / "003.png"
    bad.write_bytes(b"this is not a png")
    train = build_dataset("folder", str(root), train=True, download=False)
    index = [path for path, _ in train.samples].index(str(bad))
    with pytest.raises(RuntimeError, match=f"cannot read image {bad}: "):
        train[index]
    assert train[index - 1][1] == 1  # its neighbours still load


def test_num_classes_counts_class_folders_without_decoding(tiny_folder, tmp_path):
    assert num_classes("cifar10", "nowhere") == 10
    assert num_classes("cifar100", "nowhere") == 100
    assert num_classes("folder", str(tiny_folder)) == 3
    for name in ("a", "b"):  # undecodable files: counted, not read
        os.makedirs(tmp_path / "train" / name)
        (tmp_path / "train" / name / "x.png").write_bytes(b"garbage")
    assert num_classes("folder", str(tmp_path)) == 2


def test_subset_indices_is_a_seeded_sorted_stable_subset():
    subset = subset_indices(100, 10, seed=3)
    assert subset == subset_indices(100, 10, seed=3)
    assert subset == sorted(set(subset)) and len(subset) == 10
    assert all(0 <= i < 100 for i in subset)
    assert subset != subset_indices(100, 10, seed=4)
    assert set(subset) <= set(subset_indices(100, 30, seed=3))  # nested as the limit grows


def test_subset_indices_keeps_all_for_none_or_a_limit_past_the_end():
    assert subset_indices(100, None, seed=0) is None
    assert subset_indices(100, 100, seed=0) is None
    assert subset_indices(100, 500, seed=0) is None


@pytest.mark.parametrize("limit", [0, -3])
def test_subset_indices_rejects_limit_below_one(limit):
    with pytest.raises(ValueError, match=f"limit must be None or an integer >= 1, got {limit}"):
        subset_indices(100, limit, seed=0)


def test_channel_mean_std_matches_a_direct_computation(tiny_folder):
    train = build_dataset("folder", str(tiny_folder), train=True, download=False)
    indices = [0, 5, 9, 20]
    pixels = torch.stack([pil_to_tensor(train[i][0]) for i in indices]).double() / 255
    mean, std = channel_mean_std(train, indices, size=32)
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), pixels.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(
        torch.tensor(std, dtype=torch.float64), pixels.std(dim=(0, 2, 3), unbiased=False)
    )


@pytest.mark.slow
def test_real_cifar10_jpeg_folder_has_50000_train_10000_test_images_in_10_classes(
    cifar10_jpeg_root,
):
    train = build_dataset("folder", str(cifar10_jpeg_root), train=True, download=False)
    test = build_dataset("folder", str(cifar10_jpeg_root), train=False, download=False)
    assert (len(train), len(test)) == (50_000, 10_000)
    assert num_classes("folder", str(cifar10_jpeg_root)) == 10
    image, label = test[9_999]
    assert image.mode == "RGB" and image.size == (32, 32) and label == 9


def test_the_image_scan_is_remembered_and_a_damaged_record_is_scanned_again(tiny_folder, tmp_path):
    from infonce.trainer.data import scan

    dataset = build_dataset("folder", str(tiny_folder), train=True, download=False)
    assert scan.scan_folder(dataset, tmp_path, progress=False) == {}
    (record,) = tmp_path.glob("scan*.json")
    calls = []
    original = scan.find_unreadable
    scan.find_unreadable = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        assert scan.scan_folder(dataset, tmp_path, progress=False) == {}
        assert calls == []  # remembered: no image decoded
        record.write_text("{not json")
        with pytest.warns(UserWarning, match="is damaged: scanning again"):
            assert scan.scan_folder(dataset, tmp_path, progress=False) == {}
        assert calls == [1]
    finally:
        scan.find_unreadable = original
