"""MoCo training throughput on CIFAR-10: infonce's two data paths against lightly, one process.

    python benchmarks/train_throughput.py                   # CPU, 2 threads, batch 256
    python benchmarks/train_throughput.py --device cuda --batch-size 512 --backbone resnet18

Images per second of whole training steps: data loading and augmentation (two MoCo v2 views
per image), query encoder forward and backward, momentum-encoder forward, the queue loss
(K = 4,096, T = 0.1), the SGD step, the EMA update and the enqueue. The same backbone and
MLP head everywhere (SplitBatchNorm with 8 splits; the key batch shuffled for infonce):

- lightly: its ``MoCoV2Transform`` (per-sample PIL, in DataLoader workers), ``NTXentLoss``
  with a memory bank and ``update_momentum``, in a plain loop, as its MoCo example does; in
  float32 and with the encoders under bfloat16 autocast (its loss as it computes it);
- infonce, loader path: per-sample PIL torchvision transforms in DataLoader workers, the data
  path lightly uses; in float32 and in bfloat16 autocast;
- infonce, resident path: the split decoded once into a uint8 tensor, batches augmented as a
  whole by ``infonce.trainer.augment.views.BatchViews``; in float32 and in bfloat16 autocast.

Ratios are printed like for like: the same precision, threads and data path on both sides;
the resident path has no lightly counterpart, so its ratio says that the data path differs.
The data is a CIFAR-10 copy in ImageFolder layout (``--root``, or the tarball of
``$INFONCE_CIFAR10_TARBALL`` extracted to a cache folder on first use).
"""

import argparse
import copy
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from _common import cifar10_jpeg_root, machine, table

from infonce.trainer.augment.normalization import DATASET_STATS
from infonce.trainer.data.datamodule import ImageDataModule
from infonce.trainer.heads import projection_head
from infonce.trainer.moco import MoCo

CIFAR10_MEAN, CIFAR10_STD = DATASET_STATS["cifar10"]


class StepTimer(L.Callback):
    """Wall time from the end of step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def infonce_throughput(args, root: Path, resident: bool, precision: str) -> float:
    model = MoCo(
        backbone=args.backbone, bn_splits=8, queue_size=4096, temperature=0.1, momentum=0.99
    )
    data = ImageDataModule(
        dataset="folder", root=str(root), batch_size=args.batch_size, num_workers=args.workers,
        mean=CIFAR10_MEAN, std=CIFAR10_STD, resident=resident, knn_memory=False,
    )  # fmt: skip
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(
        accelerator=args.device, devices=1, max_steps=args.warmup + args.steps, precision=precision,
        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(model, data)
    return args.steps * args.batch_size / (timer.end - timer.start)


def lightly_throughput(args, root: Path, bf16: bool) -> float:
    from lightly.loss import NTXentLoss
    from lightly.models.utils import update_momentum
    from lightly.transforms import MoCoV2Transform
    from torchvision.datasets import ImageFolder

    from infonce.trainer.backbones import build_backbone

    device = torch.device(args.device)
    normalize = {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}
    transform = MoCoV2Transform(input_size=32, gaussian_blur=0.0, normalize=normalize)
    loader = torch.utils.data.DataLoader(
        ImageFolder(root / "train", transform=transform), batch_size=args.batch_size,
        shuffle=True, num_workers=args.workers, drop_last=True, persistent_workers=True,
    )  # fmt: skip
    backbone, width = build_backbone(args.backbone, bn_splits=8)
    model = torch.nn.Sequential(backbone, projection_head(width, 128, "mlp")).to(device)
    momentum_model = copy.deepcopy(model).requires_grad_(False)
    criterion = NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    steps = args.warmup + args.steps
    start = None
    for step, ((x_q, x_k), _) in enumerate(loader):
        update_momentum(model, momentum_model, m=0.99)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            query = model(x_q.to(device))
            key = momentum_model(x_k.to(device)).detach()
            loss = criterion(query, key)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        if step + 1 == args.warmup:
            start = time.perf_counter()
        if step + 1 == steps:
            return args.steps * args.batch_size / (time.perf_counter() - start)
    raise RuntimeError("the dataset has fewer batches than --warmup + --steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--backbone", default="convnet")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (PIL paths)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--root",
        type=Path,
        help="CIFAR-10 ImageFolder root (default: $INFONCE_CIFAR10_ROOT / _TARBALL)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("INFONCE_CACHE", str(Path(tempfile.gettempdir()) / "infonce-cache"))
    root = args.root or cifar10_jpeg_root()
    results = {}
    for precision, name in (("32-true", "float32"), ("bf16-mixed", "bf16 autocast")):
        if importlib.util.find_spec("lightly"):
            results["lightly", name] = lightly_throughput(args, root, precision != "32-true")
        results["infonce loader", name] = infonce_throughput(args, root, False, precision)
        results["infonce resident", name] = infonce_throughput(args, root, True, precision)
    labels = {
        "lightly": "lightly (per-sample PIL in workers)",
        "infonce loader": "infonce, loader path (per-sample PIL in workers)",
        "infonce resident": "infonce, resident path (uint8 tensor, batched views)",
    }
    rows = []
    for (kind, precision), value in results.items():
        peer = results.get(("lightly", precision))
        ratio = "" if peer is None or kind == "lightly" else f"{value / peer:.2f}x"
        if ratio and kind == "infonce resident":
            ratio += " (data path differs)"
        rows.append([labels[kind], precision, f"{value:,.0f}", ratio])
    print(f"\nmachine: {machine(torch.device(args.device))}, {args.threads} threads, "
          f"{args.workers} DataLoader workers on the PIL paths")  # fmt: skip
    print(
        f"MoCo, {args.backbone}, batch {args.batch_size}, K=4,096, two 32x32 views per image, "
        f"{args.steps} steps after {args.warmup} warm-up"
    )
    print(table(["pipeline", "precision", "images/s", "vs lightly, same precision"], rows))


if __name__ == "__main__":
    main()
