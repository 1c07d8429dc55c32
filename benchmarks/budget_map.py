"""What buys kNN accuracy at a fixed CPU budget: variants of ``configs/cpu_quick.yaml`` (and the
other methods' ``*_cpu_quick.yaml``), each trained for the epochs it fits in ten minutes of
``fit`` on 2 CPU cores, seed by seed.

    python benchmarks/budget_map.py --list                       # the variants and their changes
    python benchmarks/budget_map.py --variants base symmetric --seeds 0 1 2
    python benchmarks/budget_map.py --table                      # table and plot of what is done

Each run is one ``train.py fit --config configs/<config> --seed_everything S <the variant's
arguments> --trainer.max_epochs E --trainer.check_val_every_n_epoch E/2`` on the 60,000 images of
a CIFAR-10 JPEG copy (``$INFONCE_CIFAR10_ROOT`` or ``$INFONCE_CIFAR10_TARBALL``), alone on the
machine, one after the other; the wall time is that of the whole command (start-up, decoding
from the cache and both evaluations included). A variant's epochs ``E`` were sized from its
measured step time so that its ``fit`` takes at most ten minutes on 2 cores: the variants are
compared at the same time, not the same epochs (a change that slows the step pays for it in
epochs). A finished run (its result in ``results.json``) is not run again: an interrupted map
goes on where it stopped. Prints the table (weighted-kNN and online-linear top-1 on the 10,000
test images at the last epoch, mean and sample standard deviation over the seeds, the
difference to ``base`` and the wall time) and draws ``budget_map.png`` (kNN top-1 against minutes
of ``fit``, one line per run).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from _common import cifar10_jpeg_root, machine

from infonce.plot import read_metrics

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Variant:
    """One row of the map: ``args`` change ``config``; ``epochs`` fit the ten-minute budget."""

    knob: str  # the map's group: what is varied
    change: str  # the change from the base, in words
    epochs: int  # even: evaluated at the middle and the last epoch
    args: tuple[str, ...] = ()
    config: str = "cpu_quick.yaml"
    reference: str = "base"  # the variant its difference is taken to


def _widths(widths: tuple[int, int, int], stem: int) -> tuple[str, str]:
    return "--model.backbone_kwargs", f"{{widths: {list(widths)}, stem_width: {stem}}}"


BASE = "base"
VARIANTS: dict[str, Variant] = {
    BASE: Variant(
        "base",
        "`cpu_quick.yaml`: convnet (32, 64, 128), 32 px, batch 256, lr 0.06, "
        "K = 4,096, T = 0.1, m = 0.99, asymmetric",
        24,
    ),
    # network width: the multiply-adds grow with the square of the widths
    "mid": Variant(
        "width",
        "widths (48, 96, 192), stem 24: 2.25x the multiply-adds",
        16,
        _widths((48, 96, 192), 24),
    ),
    "wide": Variant(
        "width",
        "widths (64, 128, 256), stem 32: 4x the multiply-adds",
        10,
        _widths((64, 128, 256), 32),
    ),
    # resolution
    "px24": Variant(
        "resolution",
        "24 px views and test images throughout (images stored at 24 px)",
        38,
        ("--data.image_size", "24"),
    ),
    # the temperature over training
    "t_cosine": Variant(
        "temperature",
        "Kukleva et al.'s cosine: T from 1.0 to 0.1 and back to 1.0, one period over the run",
        24,
        ("--model.temperature_schedule", "cosine", "--model.temperature_period_epochs", "24"),
    ),
    "t_learned": Variant(
        "temperature",
        "T learned from 0.1, its own lr 1e-3",
        24,
        ("--model.learnable_temperature", "true", "--model.temperature_lr", "0.001"),
    ),
    # views and optimisation
    "crop35": Variant(
        "crop scale",
        "crops of 35-100% of the image instead of 20-100%",
        24,
        ("--data.crop_scale", "[0.35, 1.0]"),
    ),
    "lr012": Variant(
        "learning rate", "lr 0.12 instead of 0.06 (batch 256)", 24, ("--model.lr", "0.12")
    ),
    # the loss
    "symmetric": Variant(
        "loss",
        "symmetric loss (loss_12 + loss_21, both keys enqueued)",
        14,
        ("--model.symmetric", "true"),
    ),
    # the methods, each config at the epochs it was sized to before (issue 17's table)
    "moco_v2_e18": Variant("method", "MoCo v2: `cpu_quick.yaml` at 18 epochs", 18),
    "simclr": Variant(
        "method",
        "SimCLR: `simclr_cpu_quick.yaml`",
        16,
        config="simclr_cpu_quick.yaml",
        reference="moco_v2_e18",
    ),
    "moco_v3": Variant(
        "method",
        "MoCo v3: `moco_v3_cpu_quick.yaml`",
        8,
        config="moco_v3_cpu_quick.yaml",
        reference="moco_v2_e18",
    ),
    "supcon": Variant(
        "method",
        "SupCon (reads the labels): `supcon_cpu_quick.yaml`",
        12,
        config="supcon_cpu_quick.yaml",
        reference="moco_v2_e18",
    ),
}


def run_name(variant: str, seed: int) -> str:
    return f"{variant}_s{seed}"


def command(variant: str, seed: int, data_root: Path, run: Path) -> list[str]:
    v = VARIANTS[variant]
    return [
        sys.executable, str(REPO / "train.py"), "fit",
        "--config", str(REPO / "configs" / v.config), "--seed_everything", str(seed),
        "--data.dataset", "folder", "--data.root", str(data_root),
        "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false",
        *v.args,
        "--trainer.max_epochs", str(v.epochs),
        "--trainer.check_val_every_n_epoch", str(v.epochs // 2),
    ]  # fmt: skip


def result(variant: str, seed: int, run: Path, wall_s: float, argv: list[str]) -> dict:
    """The result row of a finished run folder: its evaluations, steps and wall time."""
    metrics = read_metrics(run)  # every logged curve of the run, read once
    steps = [s for s, _ in metrics["train/loss"]]
    return {
        "variant": variant,
        "seed": seed,
        "epochs": VARIANTS[variant].epochs,
        "steps": max(steps) + 1,
        "knn_top1": metrics["val/knn_top1"],  # (step, %) at each evaluation
        "linear_top1": metrics.get("val/linear_top1", []),
        "wall_min": wall_s / 60,
        "command": " ".join(argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(torch.device("cpu")),
    }


def spread(values: list[float]) -> str:
    """``mean ± sample std``; from one value, the value and ``(1 seed)``."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}% (1 seed)"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}%"


def _range(values: list[float]) -> str:
    low, high = f"{min(values):.1f}", f"{max(values):.1f}"
    return low if low == high else f"{low}-{high}"


def _final(runs: list[dict], key: str) -> list[float]:
    return [r[key][-1][1] for r in runs if r[key]]


def table(results: dict[str, dict]) -> str:
    """One row per variant with results, in :data:`VARIANTS` order; the difference of the
    seed means to its reference's (``base`` unless it names another; none for the reference
    itself or while the reference has no result)."""
    rows = ["| knob | change | epochs | seeds | kNN top-1 | difference | online linear top-1 "
            "| wall time of `fit` |", "|" + " --- |" * 8]  # fmt: skip
    by_variant = {name: [r for r in results.values() if r["variant"] == name] for name in VARIANTS}
    for name, v in VARIANTS.items():
        runs = sorted(by_variant[name], key=lambda r: r["seed"])
        if not runs:
            continue
        knn, linear = _final(runs, "knn_top1"), _final(runs, "linear_top1")
        reference = _final(by_variant[v.reference], "knn_top1")
        delta = (
            f"{statistics.fmean(knn) - statistics.fmean(reference):+.2f} vs {v.reference}"
            if reference and name != v.reference else ""
        )  # fmt: skip
        rows.append(
            f"| {v.knob} | {v.change} | {runs[0]['epochs']} | "
            f"{', '.join(str(r['seed']) for r in runs)} | {spread(knn)} | {delta} | "
            f"{spread(linear) if linear else 'not logged'} | "
            f"{_range([r['wall_min'] for r in runs])} min |"
        )
    return "\n".join(rows)


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = [n for n in VARIANTS if any(r["variant"] == n for r in results.values())]
    styles = {n: (colours[i % len(colours)], "o-s^vD"[i // len(colours) % 6]) for i, n in
              enumerate(names)}  # fmt: skip
    labelled = set()
    for r in sorted(results.values(), key=lambda r: (names.index(r["variant"]), r["seed"])):
        minutes = [(step + 1) / r["steps"] * r["wall_min"] for step, _ in r["knn_top1"]]
        colour, marker = styles[r["variant"]]
        label = None if r["variant"] in labelled else r["variant"]
        labelled.add(r["variant"])
        ax.plot(minutes, [v for _, v in r["knn_top1"]], marker=marker, color=colour,
                linestyle="-" if marker == "o" else "--", alpha=0.7, label=label)  # fmt: skip
    ax.axvline(10, color="k", linestyle=":", linewidth=1, label="the budget: 10 min")
    ax.set_xlim(left=0)
    ax.set_xlabel("minutes of fit (the evaluation's share of the steps x the run's wall time)")
    ax.set_ylabel("weighted kNN top-1 (%), CIFAR-10 test")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=[BASE])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "budget_map")
    parser.add_argument("--list", action="store_true", help="print the variants and stop")
    parser.add_argument("--table", action="store_true", help="only print the table and plot")
    args = parser.parse_args()
    if args.list:
        for name, v in VARIANTS.items():
            print(f"{name:>18}  {v.knob}: {v.change} ({v.config}, {v.epochs} epochs) "
                  f"{' '.join(v.args)}")  # fmt: skip
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for seed in [] if args.table else args.seeds:  # seed by seed: a stopped map has every
        for variant in args.variants:  # variant for some seeds
            name = run_name(variant, seed)
            if name in results:
                print(f"{name}: done before, {results[name]['knn_top1'][-1][1]:.2f}%")
                continue
            run = args.out / name
            if run.exists():
                raise SystemExit(f"{run} exists without a result: remove it to run it again")
            run.mkdir()
            argv = command(variant, seed, cifar10_jpeg_root(), run)
            start = time.perf_counter()
            with open(run / "train.log", "w") as log:
                subprocess.run(argv, check=True, cwd=run, stdout=log, stderr=subprocess.STDOUT)
            results[name] = result(variant, seed, run, time.perf_counter() - start, argv)
            results_path.write_text(json.dumps(results, indent=2))
            print(f"{name}: {results[name]['knn_top1'][-1][1]:.2f}% kNN in "
                  f"{results[name]['wall_min']:.1f} min")  # fmt: skip
    print(f"\n{machine(torch.device('cpu'))}, {time.strftime('%Y-%m-%d')}")
    print(table(results))
    plot(results, args.out / "budget_map.png")
    print(f"plot: {args.out / 'budget_map.png'}")


if __name__ == "__main__":
    main()
