"""Two MoCo v2 views of 32x32 images: infonce.trainer.augment against torchvision and kornia.

    python benchmarks/augment.py                 # CPU, 2 threads, batches of 512
    python benchmarks/augment.py --device cuda

The recipe everywhere: RandomResizedCrop(32, scale=(0.2, 1)), ColorJitter(0.4, 0.4, 0.4, 0.1)
with p=0.8, RandomGrayscale(0.2), RandomHorizontalFlip, to float, Normalize; two views per
image, counted as one image. Images are real CIFAR-10 pixels when a copy is named
(``$INFONCE_CIFAR10_ROOT`` or ``$INFONCE_CIFAR10_TARBALL``), else random uint8.

- torchvision v1 on PIL images and v2 on uint8 tensors augment one image per call, as a
  DataLoader worker does: timed in one thread, so their figure is per core, and compared with
  infonce in one thread too (on the CPU).
- torchvision v2 called on a whole batch tensor draws ONE crop and ONE jitter for the batch
  (not valid contrastive views); shown for scale only.
- kornia (``kornia.augmentation``) and infonce augment the whole batch, every image with its
  own parameters, with ``--threads`` threads (or on the GPU).
"""

import argparse
import importlib.util
import subprocess
import time

import torch
from _common import cifar10_jpeg_root, machine, table
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from infonce.trainer.augment.transforms import moco_v2_transform
from infonce.trainer.augment.views import MoCoV2Views
from infonce.trainer.data.sources import CIFAR10_MEAN, CIFAR10_STD


def cifar_batch(n: int) -> torch.Tensor:
    """n real CIFAR-10 test images as (n, 3, 32, 32) uint8 (random ones without the copy)."""
    try:
        paths = sorted((cifar10_jpeg_root() / "test").rglob("*.jpg"))
    except (OSError, subprocess.CalledProcessError):  # no copy: pixels change no work
        return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    paths = paths[:: max(1, len(paths) // n)][:n]
    return torch.stack([pil_to_tensor(Image.open(p).convert("RGB")) for p in paths])


def images_per_second(fn, images: int, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return images / best


def per_sample(transform, samples: list) -> None:
    for sample in samples:
        transform(sample), transform(sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = cifar_batch(args.batch_size)
    mean, std = list(CIFAR10_MEAN), list(CIFAR10_STD)
    results = {}

    torch.set_num_threads(1)  # per-sample pipelines: one image per call, one core
    few = batch[:128]
    pil = [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in few]
    v1 = moco_v2_transform(32, mean, std)
    results["torchvision v1, PIL, per sample (1 core)"] = images_per_second(
        lambda: per_sample(v1, pil), len(pil), torch.device("cpu"), args.repeats
    )
    from torchvision.transforms import v2

    v2_view = v2.Compose(
        [
            v2.RandomResizedCrop(32, scale=(0.2, 1.0), antialias=True),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )
    results["torchvision v2, uint8 tensor, per sample (1 core)"] = images_per_second(
        lambda: per_sample(v2_view, list(few)), len(few), torch.device("cpu"), args.repeats
    )

    torch.set_num_threads(args.threads)
    x = batch.to(device)
    results["torchvision v2 on the batch (one crop for all: invalid)"] = images_per_second(
        lambda: (v2_view(x), v2_view(x)), len(x), device, args.repeats
    )
    if importlib.util.find_spec("kornia"):
        import kornia.augmentation as K

        kornia_view = torch.nn.Sequential(
            K.RandomResizedCrop((32, 32), scale=(0.2, 1.0)),
            K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
            K.RandomGrayscale(p=0.2),
            K.RandomHorizontalFlip(),
            K.Normalize(torch.tensor(mean), torch.tensor(std)),
        ).to(device)

        def kornia_views():
            xf = x.float() / 255
            return kornia_view(xf), kornia_view(xf)

        results["kornia, batch"] = images_per_second(kornia_views, len(x), device, args.repeats)
    ours = MoCoV2Views(32, mean=CIFAR10_MEAN, std=CIFAR10_STD).to(device)
    results["infonce MoCoV2Views, batch"] = images_per_second(
        lambda: ours(x), len(x), device, args.repeats
    )
    threads = {name: args.threads for name in results}  # threads (CPU) each figure used
    if device.type == "cpu":
        threads |= dict.fromkeys(list(results)[:2], 1)
        torch.set_num_threads(1)
        results["infonce MoCoV2Views, batch (1 core)"] = images_per_second(
            lambda: ours(x), len(x), device, args.repeats
        )
        threads["infonce MoCoV2Views, batch (1 core)"] = 1
        torch.set_num_threads(args.threads)
    where = "GPU" if device.type == "cuda" else f"{args.threads} threads unless said"
    print(f"machine: {machine(device)}")
    print(f"two views per image, batches of {len(x)} on {where}, best of {args.repeats}")
    rows = []
    for name, value in results.items():
        # like for like: infonce with as many threads as the pipeline it is compared with
        same = [v for n, v in results.items() if n.startswith("infonce") and
                threads[n] == threads[name]]  # fmt: skip
        ratio = "" if name.startswith("infonce") or not same else f"{same[0] / value:.1f}x"
        rows.append([name, f"{threads[name]}" if device.type == "cpu" else "GPU",
                     f"{value:,.0f}", ratio])  # fmt: skip
    print(table(["pipeline", "threads", "images/s", "infonce, same threads, faster by"], rows))


if __name__ == "__main__":
    main()
