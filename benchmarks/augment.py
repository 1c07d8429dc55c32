"""A recipe's views of 32x32 images: infonce.trainer.augment against torchvision and kornia.

    python benchmarks/augment.py                 # moco_v2 on the CPU, 2 threads, batches of 512
    python benchmarks/augment.py --device cuda --recipe solo_symmetric

Every pipeline is built from the recipe's views (infonce.trainer.augment.recipes.RECIPES;
moco_v2: RandomResizedCrop(32, scale=(0.2, 1)), ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8,
RandomGrayscale(0.2), RandomHorizontalFlip), then to float and Normalize; all views of an
image counted as one image. torchvision v2 and kornia have no PIL blur: where a recipe blurs,
they blur with a sampled Gaussian kernel of 2 * ceil(3 * max sigma) + 1 taps (not the same
op, a like amount of work). Images are real CIFAR-10 pixels when a copy is named
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
import math
import subprocess

import torch
from _common import cifar10_jpeg_root, machine, table, time_interleaved
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from infonce.trainer.augment.normalization import DATASET_STATS
from infonce.trainer.augment.recipes import RECIPES, ViewSpec
from infonce.trainer.augment.transforms import views_transform
from infonce.trainer.augment.views import BatchViews


def cifar_batch(n: int) -> torch.Tensor:
    """n real CIFAR-10 test images as (n, 3, 32, 32) uint8 (random ones without the copy)."""
    try:
        paths = sorted((cifar10_jpeg_root() / "test").rglob("*.jpg"))
    except (OSError, subprocess.CalledProcessError):  # no copy: pixels change no work
        return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    paths = paths[:: max(1, len(paths) // n)][:n]
    return torch.stack([pil_to_tensor(Image.open(p).convert("RGB")) for p in paths])


def per_sample(transforms: list, samples: list) -> None:
    for sample in samples:
        for transform in transforms:
            transform(sample)


def blur_kernel(spec: ViewSpec) -> int:
    """Taps of the sampled Gaussian that stands in for PIL's blur in torchvision v2 / kornia."""
    return 2 * math.ceil(3 * spec.blur_sigma[1]) + 1


def torchvision_v2_view(spec: ViewSpec, mean: list, std: list):
    """One view of ``spec`` with torchvision's v2 transforms, on uint8 tensors."""
    from torchvision.transforms import v2

    ops = [v2.RandomResizedCrop(32, spec.scale, spec.ratio, spec.interpolation, antialias=True)]
    if spec.jitter_p > 0:
        ops.append(v2.RandomApply([v2.ColorJitter(*spec.jitter)], p=spec.jitter_p))
    if spec.grayscale_p > 0:
        ops.append(v2.RandomGrayscale(p=spec.grayscale_p))
    if spec.blur_p > 0:
        blur = v2.GaussianBlur(blur_kernel(spec), spec.blur_sigma)
        ops.append(v2.RandomApply([blur], p=spec.blur_p))
    if spec.solarize_p > 0:
        ops.append(v2.RandomSolarize(128, p=spec.solarize_p))  # uint8 levels
    if spec.flip_p > 0:
        ops.append(v2.RandomHorizontalFlip(p=spec.flip_p))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)


def kornia_view(spec: ViewSpec, mean: list, std: list) -> torch.nn.Module:
    """One view of ``spec`` with kornia.augmentation, on float batches."""
    import kornia.augmentation as K

    ops = [K.RandomResizedCrop((32, 32), spec.scale, spec.ratio, resample=spec.interpolation)]
    if spec.jitter_p > 0:
        ops.append(K.ColorJitter(*spec.jitter, p=spec.jitter_p))
    if spec.grayscale_p > 0:
        ops.append(K.RandomGrayscale(p=spec.grayscale_p))
    if spec.blur_p > 0:
        k = blur_kernel(spec)
        ops.append(K.RandomGaussianBlur((k, k), spec.blur_sigma, p=spec.blur_p))
    if spec.solarize_p > 0:  # threshold 0.5, no brightness addition
        ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=spec.solarize_p))
    if spec.flip_p > 0:
        ops.append(K.RandomHorizontalFlip(p=spec.flip_p))
    ops.append(K.Normalize(torch.tensor(mean), torch.tensor(std)))
    return torch.nn.Sequential(*ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--recipe", default="moco_v2", choices=list(RECIPES))
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = cifar_batch(args.batch_size)
    views = RECIPES[args.recipe]
    mean, std = (list(stats) for stats in DATASET_STATS["cifar10"])
    results = {}

    # each group's pipelines are timed round by round, interleaved (a slow minute of the machine
    # hits all of them alike), and each figure is the median round
    few = batch[:128]
    pil = [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in few]
    v1 = views_transform(views, 32, mean, std).transforms
    v2_views = [torchvision_v2_view(spec, mean, std) for spec in views]
    x = batch.to(device)
    ours = BatchViews(views, 32, mean, std).to(device)
    one_core = {  # per-sample pipelines: one image per call, as in a DataLoader worker
        "torchvision v1, PIL, per sample (1 core)": (lambda: per_sample(v1, pil), len(pil)),
        "torchvision v2, uint8 tensor, per sample (1 core)": (
            lambda: per_sample(v2_views, list(few)), len(few)),
    }  # fmt: skip
    if device.type == "cpu":
        one_core["infonce BatchViews, batch (1 core)"] = (lambda: ours(x), len(x))
    batched = {"torchvision v2 on the batch (one crop for all: invalid)": (
        lambda: [view(x) for view in v2_views], len(x))}  # fmt: skip
    if importlib.util.find_spec("kornia"):
        kornia_views = [kornia_view(spec, mean, std).to(device) for spec in views]

        def kornia_batch():
            xf = x.float() / 255
            return [view(xf) for view in kornia_views]

        batched["kornia, batch"] = (kornia_batch, len(x))
    batched["infonce BatchViews, batch"] = (lambda: ours(x), len(x))
    results, threads = {}, {}  # images/s and the threads (CPU) each figure used
    for group, n_threads in ((one_core, 1), (batched, args.threads)):
        torch.set_num_threads(n_threads)
        seconds = time_interleaved(
            {name: fn for name, (fn, _) in group.items()}, device, args.repeats
        )
        for name, (_, images) in group.items():
            results[name] = images / seconds[name]
            threads[name] = n_threads if device.type == "cpu" else args.threads
    torch.set_num_threads(args.threads)
    order = [*list(one_core)[:2], *batched, *list(one_core)[2:]]
    results = {name: results[name] for name in order}
    where = "GPU" if device.type == "cuda" else f"{args.threads} threads unless said"
    print(f"machine: {machine(device)}")
    print(f"recipe {args.recipe}: {len(views)} view(s) per image, batches of {len(x)} on "
          f"{where}, median of {args.repeats} interleaved rounds")  # fmt: skip
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
