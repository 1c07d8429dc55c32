"""Median wall time of one whole MoCo training step in cpu_quick.yaml's setup, one process.

    python benchmarks/step_time.py                        # as train.py runs by default
    python benchmarks/step_time.py --keep-freed-memory    # as INFONCE_KEEP_FREED_MEMORY=1 does

The step of ``configs/cpu_quick.yaml``: the ``convnet`` backbone with 8 BN splits and channels
last, batch 256, K = 4,096, bf16 autocast, resident data with batched MoCo v2 views, on a
CIFAR-10 JPEG copy. Prints the median and mean of the step-to-step wall time over ``--steps``
steps after 10 of warm-up. Run the two variants alternately a few times: single runs on a
shared VM wobble by a few percent.
"""

import argparse
import statistics
import time

import lightning as L
import torch
from _common import cifar10_jpeg_root, machine

from infonce.trainer.augment.normalization import DATASET_STATS
from infonce.trainer.cli import keep_freed_memory
from infonce.trainer.data.datamodule import ImageDataModule
from infonce.trainer.moco import MoCo

CIFAR10_MEAN, CIFAR10_STD = DATASET_STATS["cifar10"]

WARMUP = 10


class StepTimes(L.Callback):
    """Wall time between consecutive train batch ends."""

    def __init__(self):
        self.times, self.last = [], None

    def on_train_batch_end(self, *args) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-freed-memory", action="store_true")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.keep_freed_memory and not keep_freed_memory():
        raise SystemExit("keep_freed_memory needs glibc")
    torch.set_num_threads(args.threads)
    model = MoCo(backbone="convnet", bn_splits=8, queue_size=4096, temperature=0.1, momentum=0.99)
    data = ImageDataModule(
        dataset="folder", root=str(cifar10_jpeg_root()), batch_size=256, mean=CIFAR10_MEAN,
        std=CIFAR10_STD, resident=True, knn_memory=False,
    )  # fmt: skip
    timer = StepTimes()
    L.Trainer(
        accelerator="cpu", devices=1, max_steps=WARMUP + args.steps + 1, precision="bf16-mixed",
        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer],
    ).fit(model, data)  # fmt: skip
    times = [t * 1e3 for t in timer.times[WARMUP:]]
    print(machine(torch.device("cpu")))
    median, mean = statistics.median(times), statistics.mean(times)
    print(
        f"keep_freed_memory={args.keep_freed_memory}: median step {median:.1f} ms, "
        f"mean {mean:.1f} ms over {len(times)} steps"
    )


if __name__ == "__main__":
    main()
