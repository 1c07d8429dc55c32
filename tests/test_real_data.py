"""A short MoCo run on real CIFAR-10 images must improve the kNN accuracy of its features."""

import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import knn_top1_values

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_short_moco_run_on_real_cifar10_beats_knn_at_initialisation(cifar10_jpeg_root, tmp_path):
    """cpu_quick.yaml as shipped (resident data, bf16), 3 epochs of the 50,000 train images."""
    args = [
        "--config", str(REPO / "configs/cpu_quick.yaml"),
        "--data.dataset", "folder", "--data.root", str(cifar10_jpeg_root),
        "--data.limit_test_images", "2000",
        "--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch", "3",
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    for command in ("validate", "fit"):  # validate first: the same network at initialisation
        subprocess.run([sys.executable, str(REPO / "train.py"), command, *args], cwd=tmp_path,
                       check=True, capture_output=True, timeout=900)  # fmt: skip
    at_init, after = knn_top1_values(tmp_path / "runs/cpu_quick")
    print(f"kNN top-1, 2,000 real CIFAR-10 test images: {at_init:.1f}% at init, {after:.1f}% after")
    assert after > at_init + 3.0
    assert list((tmp_path / "runs/cpu_quick/checkpoints").glob("best-epoch2-knn*.ckpt"))
