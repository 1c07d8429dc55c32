"""Why a temperature learned by InfoNCE itself runs to its lower clamp: the loss of a trained
MoCo network as a function of T, the T that minimises it, and dL/dT at the config's T.

    python benchmarks/learned_temperature.py runs/cpu_quick            # its last.ckpt and init
    python benchmarks/learned_temperature.py runs/cpu_quick --batches 17 --out t.png

For the run's ``checkpoints/last.ckpt`` and for the same network untrained (the run's
hyperparameters, its seed), ``--batches`` batches of training views (the run's recipe, size,
mean and std, on the images of a CIFAR-10 JPEG copy, ``$INFONCE_CIFAR10_ROOT`` or
``$INFONCE_CIFAR10_TARBALL``) are encoded: queries by the encoder, keys by the momentum encoder
(BatchNorm in training mode over each batch, as in a step). Each batch's queries are scored
against their keys and, as negatives, the keys of every other batch (a queue of
``(batches - 1) x batch`` current keys). Printed and plotted (``--out``): the mean InfoNCE
``L(T)`` on a grid of T, its minimiser ``T*``, the share of queries whose positive outranks every
negative, and ``dL/dT`` at the run's T, from autograd and from its closed form
``mean_i (s_i+ - E_p_i[s]) / T^2`` (:func:`infonce.diagnostics.temperature_gradient`).
"""

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import cifar10_jpeg_root, machine
from torchvision.datasets import ImageFolder

from infonce import info_nce
from infonce.diagnostics import temperature_gradient
from infonce.trainer.augment.views import BatchViews
from infonce.trainer.data.resident import load_or_decode
from infonce.trainer.moco import MoCo

GRID = torch.logspace(-2.5, 0.3, 57, dtype=torch.float64)  # T from 0.0032 to 2.0


@torch.no_grad()
def embed(model: MoCo, views: list[tuple[torch.Tensor, torch.Tensor]]):
    """Queries and keys of every batch, float64, L2-normalised: (n, B, D) each."""
    model.train()  # BatchNorm over each batch, as in a training step
    queries = [F.normalize(model.encoder(x1), dim=1) for x1, _ in views]
    keys = [model.encode_keys(x2) for _, x2 in views]
    return torch.stack(queries).double(), torch.stack(keys).double()


def others(k: torch.Tensor, b: int) -> torch.Tensor:
    """Batch ``b``'s negatives: every other batch's keys, ((n-1) B, D)."""
    return torch.cat([k[:b].flatten(0, 1), k[b + 1 :].flatten(0, 1)])


def loss_at(q: torch.Tensor, k: torch.Tensor, temperature) -> torch.Tensor:
    """Mean InfoNCE of each batch's queries against its keys and every other batch's keys."""
    losses = [info_nce(q[b], k[b], others(k, b), temperature) for b in range(len(q))]
    return torch.stack(losses).mean()


def top1(q: torch.Tensor, k: torch.Tensor) -> float:
    """Share of queries whose positive is more similar than every negative."""
    hits = 0
    for b in range(len(q)):
        positive = (q[b] * k[b]).sum(1)  # (B,)
        hits += int((positive > (q[b] @ others(k, b).T).amax(1)).sum())
    return hits / (q.shape[0] * q.shape[1])


def study(name: str, model: MoCo, views, temperature: float) -> dict:
    q, k = embed(model, views)
    curve = torch.stack([loss_at(q, k, float(t)) for t in GRID])
    t = torch.tensor(temperature, dtype=torch.float64, requires_grad=True)
    loss_at(q, k, t).backward()
    closed = torch.stack(
        [temperature_gradient(q[b], k[b], others(k, b), temperature) for b in range(len(q))]
    ).mean()
    best = int(curve.argmin())
    row = {"name": name, "curve": curve, "t_star": float(GRID[best]), "top1": top1(q, k),
           "grad": float(t.grad), "grad_closed": float(closed)}  # fmt: skip
    print(f"{name}: T* = {row['t_star']:.4f} (L = {float(curve[best]):.3f}), "
          f"L({temperature}) = {float(loss_at(q, k, temperature)):.3f}, positive top-1 "
          f"{100 * row['top1']:.1f}%, dL/dT at {temperature}: {row['grad']:.4f} (autograd), "
          f"{row['grad_closed']:.4f} (closed form)")  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a MoCo run folder (checkpoints/last.ckpt)")
    parser.add_argument("--batches", type=int, default=17)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("learned_temperature.png"))
    args = parser.parse_args()
    torch.manual_seed(0)
    path = args.run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    trained = MoCo.load_from_checkpoint(path, map_location="cpu")
    hparams = dict(trained.hparams)
    untrained = MoCo(**hparams)  # the run's network at its seed's initialisation
    data = next(v for k, v in checkpoint.items() if k.endswith("ImageDataModule"))
    config = (args.run / "logs" / "version_0" / "config.yaml").read_text()
    recipe = next(line.split(":")[1].strip() for line in config.splitlines()
                  if line.strip().startswith("augmentation:"))  # fmt: skip
    images, _ = load_or_decode(ImageFolder(str(cifar10_jpeg_root() / "train")), data["image_size"])
    augment = BatchViews(recipe, data["image_size"], tuple(data["mean"]), tuple(data["std"]))
    picks = torch.randperm(len(images))[: args.batches * args.batch_size]
    views = [augment(images[p]) for p in picks.split(args.batch_size)]
    T = float(hparams["temperature"])
    rows = [study("untrained", untrained, views, T),
            study(f"trained ({path})", trained, views, T)]  # fmt: skip
    print(machine(torch.device("cpu")))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row, colour in zip(rows, ("tab:gray", "tab:blue"), strict=True):
        ax.plot(GRID, row["curve"], color=colour, label=f"{row['name'].split(' (')[0]}: "
                f"T* = {row['t_star']:.3f}, positive top-1 {100 * row['top1']:.0f}%")  # fmt: skip
        ax.axvline(row["t_star"], color=colour, linestyle=":")
    ax.axvline(T, color="k", linestyle="--", label=f"the run's T = {T}")
    ax.axvline(0.01, color="tab:red", linestyle="--", label="the learned T's lower clamp 0.01")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("temperature T")
    ax.set_ylabel(f"InfoNCE, K = {(args.batches - 1) * args.batch_size} current keys")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
