"""Where a MoCo training step of configs/moco_cifar10.yaml spends its time, from torch.profiler.

    python benchmarks/profile_step.py                       # CPU: convnet, batch 256, 2 threads
    python benchmarks/profile_step.py --device cuda --backbone resnet18 --batch-size 512 \
        --precision bf16-mixed [--compile] [--trace step.json.gz]

The step of the demo recipe (CIFAR stem, 8 BN splits with the key batch shuffled, a linear head
to 128-d, K = 4,096, T = 0.1, m = 0.99, channels last) on a CIFAR-10 JPEG copy, resident
and augmented as a batch on the device, inside Lightning's loop. After ``--warmup`` steps it
times ``--steps`` steps (wall time between batch ends: images/s and ms/step, the epoch time
that implies), then profiles ``--profile-steps`` more with CPU (and CUDA) activities. Printed:
the ops by self device time (self CPU time on the CPU), kernels launched per step, the share of
wall time the device spent in kernels, and host synchronisations per step.
"""

import argparse
import gzip
import shutil
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from _common import cifar10_jpeg_root, machine
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from infonce.trainer.augment.normalization import MOCO_CIFAR10_DEMO_STATS
from infonce.trainer.data.datamodule import ImageDataModule
from infonce.trainer.moco import MoCo

DEMO_MEAN, DEMO_STD = MOCO_CIFAR10_DEMO_STATS  # the demo's
SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


class StepProfiler(L.Callback):
    """Step-to-step wall times from step ``warmup``; a profiler over the last ``profiled``."""

    def __init__(self, warmup: int, timed: int, profiled: int, cuda: bool):
        self.warmup, self.timed, self.profiled, self.cuda = warmup, timed, profiled, cuda
        self.times, self.last, self.profiler, self.window = [], None, None, 0.0

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def on_train_batch_end(self, trainer, *args) -> None:
        step = trainer.global_step
        if step == self.warmup:
            self._sync()
        now = time.perf_counter()
        if self.warmup < step <= self.warmup + self.timed:
            self.times.append(now - self.last)
        self.last = now
        if step == self.warmup + self.timed:  # profile the next `profiled` steps
            self._sync()
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
            self.profiler = profile(activities=activities)
            self.profiler.__enter__()
            self.window = time.perf_counter()
        elif step == self.warmup + self.timed + self.profiled and self.profiler is not None:
            self._sync()
            self.window = time.perf_counter() - self.window
            self.profiler.__exit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    parser.add_argument("--workers", type=int, default=2, help="processes decoding the JPEGs")
    parser.add_argument("--backbone", default="convnet")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--compile", action="store_true", help="model.compile: true")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=25, help="ops listed")
    parser.add_argument("--trace", type=Path, help="also write a Chrome trace (.json or .json.gz)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    model = MoCo(
        backbone=args.backbone, cifar_stem=True, bn_splits=8, head="linear", feature_dim=128,
        temperature=0.1, queue_size=4096, momentum=0.99, lr=0.06, weight_decay=5e-4,
        compile=args.compile, diagnostics_images=0,
    )  # fmt: skip
    data = ImageDataModule(
        dataset="folder", root=str(cifar10_jpeg_root()), batch_size=args.batch_size,
        num_workers=args.workers,
        mean=DEMO_MEAN, std=DEMO_STD, augmentation="moco_cifar10_demo", resident=True,
        knn_memory=False,
    )  # fmt: skip
    probe = StepProfiler(args.warmup, args.steps, args.profile_steps, cuda)
    L.Trainer(
        accelerator=device.type, devices=1, precision=args.precision, limit_val_batches=0,
        max_steps=args.warmup + args.steps + args.profile_steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[probe],
    ).fit(model, data)  # fmt: skip

    events = probe.profiler.key_averages()
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=args.rows))
    if args.trace:
        probe.profiler.export_chrome_trace(str(args.trace.with_suffix("")))
        if args.trace.suffix == ".gz":
            with open(args.trace.with_suffix(""), "rb") as raw, gzip.open(args.trace, "wb") as z:
                shutil.copyfileobj(raw, z)
            args.trace.with_suffix("").unlink()
    n = args.profile_steps
    step_ms = 1e3 * statistics.median(probe.times)
    per_epoch = 50_000 // args.batch_size  # CIFAR-10 train, the last partial batch dropped
    print(machine(device))
    flags = f"{args.backbone}, batch {args.batch_size}, {args.precision}, compile={args.compile}"
    print(
        f"{flags}: median step {step_ms:.1f} ms over {len(probe.times)} steps, "
        f"{1e3 * args.batch_size / step_ms:,.0f} images/s, "
        f"{per_epoch * step_ms / 1e3:.1f} s per epoch of {per_epoch} steps "
        f"({200 * per_epoch * step_ms / 6e4:.1f} min for 200 epochs, without the kNN monitor)"
    )
    print(f"profiled {n} steps: {probe.window / n * 1e3:.1f} ms per step under the profiler")
    if cuda:
        syncs = sum(e.count for e in events if e.key in SYNCS) - 1  # less the closing one
        kernels = [
            e for e in probe.profiler.events()
            if e.device_type == DeviceType.CUDA and not e.name.startswith(("Memcpy", "Memset"))
        ]  # fmt: skip
        busy = sum(e.self_device_time_total for e in kernels) / 1e6  # us -> s
        print(
            f"{len(kernels) / n:.0f} kernels and {syncs / n:.1f} host synchronisations per step; "
            f"the GPU ran kernels {100 * busy / probe.window:.0f}% of the wall time"
        )


if __name__ == "__main__":
    main()
