"""Every method at the CPU budget: each ``*_cpu_quick.yaml`` trained with several seeds.

    python benchmarks/cpu_methods.py                        # 4 methods x seeds 0 1 2
    python benchmarks/cpu_methods.py --methods simclr --seeds 0
    python benchmarks/cpu_methods.py --out runs/cpu_methods --train-args --trainer.max_epochs 5

Each run is one ``train.py fit --config configs/<config> --seed_everything S`` on the 60,000
images of a CIFAR-10 JPEG copy (``$INFONCE_CIFAR10_ROOT`` or ``$INFONCE_CIFAR10_TARBALL``), alone
on the machine, one after the other; the wall time is that of the whole command (start-up and
every evaluation included). Each config's epochs are sized so that its ``fit`` takes about ten
minutes on 2 CPU cores, so the methods are compared at the same time, not the same epochs.
A finished run (its result in ``results.json``) is not run again: an interrupted table goes on
where it stopped. Prints the table (weighted-kNN and online-linear top-1 on the 10,000 test
images, mean and sample standard deviation over the seeds, wall time) and draws
``cpu_methods.png`` (kNN top-1 against the minutes of ``fit``, one line per run).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from _common import cifar10_jpeg_root, machine

from infonce.plot import read_metrics

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {  # method: its CPU-budget config
    "moco_v2": "cpu_quick.yaml",
    "simclr": "simclr_cpu_quick.yaml",
    "supcon": "supcon_cpu_quick.yaml",
    "moco_v3": "moco_v3_cpu_quick.yaml",
}


def run_name(method: str, seed: int) -> str:
    return f"{Path(CONFIGS[method]).stem}_s{seed}"


def command(method: str, seed: int, data_root: Path, run: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable, str(REPO / "train.py"), "fit",
        "--config", str(REPO / "configs" / CONFIGS[method]), "--seed_everything", str(seed),
        "--data.dataset", "folder", "--data.root", str(data_root),
        "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false",
        *extra,
    ]  # fmt: skip


def result(method: str, seed: int, run: Path, wall_s: float, argv: list[str]) -> dict:
    """The result row of a finished run folder: its evaluations, epochs and wall time."""
    metrics = read_metrics(run)  # every logged curve of the run, read once
    steps = [s for s, _ in metrics["train/loss"]]
    epochs = yaml.safe_load((REPO / "configs" / CONFIGS[method]).read_text())["trainer"]
    return {
        "method": method,
        "seed": seed,
        "max_epochs": epochs["max_epochs"],
        "steps": max(steps) + 1,
        "knn_top1": metrics["val/knn_top1"],  # (step, %) at each evaluation
        "linear_top1": metrics.get("val/linear_top1", []),
        "wall_min": wall_s / 60,
        "command": " ".join(argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(torch.device("cpu")),
    }


def spread(values: list[float]) -> str:
    """``mean ± sample std (n)``; the std only from two values on."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}% (1 seed)"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}%"


def _range(values: list[float]) -> str:
    low, high = f"{min(values):.1f}", f"{max(values):.1f}"
    return low if low == high else f"{low}-{high}"


def table(results: dict[str, dict]) -> str:
    rows = ["| method | config | epochs | seeds | kNN top-1 | online linear top-1 | wall time "
            "of `fit` |", "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for method, config in CONFIGS.items():
        runs = [r for r in results.values() if r["method"] == method]
        if not runs:
            continue
        knn = [r["knn_top1"][-1][1] for r in runs]
        linear = [r["linear_top1"][-1][1] for r in runs if r["linear_top1"]]
        walls = [r["wall_min"] for r in runs]
        rows.append(
            f"| {method} | `{config}` | {runs[0]['max_epochs']} | "
            f"{', '.join(str(r['seed']) for r in sorted(runs, key=lambda r: r['seed']))} | "
            f"{spread(knn)} | {spread(linear) if linear else 'not logged'} | "
            f"{_range(walls)} min |"
        )
    return "\n".join(rows)


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = dict(zip(CONFIGS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for r in sorted(results.values(), key=lambda r: (r["method"], r["seed"])):
        minutes = [(step + 1) / r["steps"] * r["wall_min"] for step, _ in r["knn_top1"]]
        label = r["method"] if r["seed"] == min(
            x["seed"] for x in results.values() if x["method"] == r["method"]
        ) else None  # fmt: skip
        ax.plot(minutes, [v for _, v in r["knn_top1"]], "o-", color=colours[r["method"]],
                alpha=0.7, label=label)  # fmt: skip
    ax.set_xlim(left=0)
    ax.set_xlabel("minutes of fit (the evaluation's share of the steps x the run's wall time)")
    ax.set_ylabel("weighted kNN top-1 (%), CIFAR-10 test")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "cpu_methods")
    parser.add_argument(
        "--train-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="more train.py arguments (everything after this flag)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    data_root = cifar10_jpeg_root()
    for seed in args.seeds:  # seed by seed: a stopped table has every method for some seeds
        for method in args.methods:
            name = run_name(method, seed)
            if name in results:
                print(f"{name}: done before, {results[name]['knn_top1'][-1][1]:.2f}%")
                continue
            run = args.out / name
            if run.exists():
                raise SystemExit(f"{run} exists without a result: remove it to run it again")
            run.mkdir()
            argv = command(method, seed, data_root, run, args.train_args)
            start = time.perf_counter()
            with open(run / "train.log", "w") as log:
                subprocess.run(argv, check=True, cwd=run, stdout=log, stderr=subprocess.STDOUT)
            results[name] = result(method, seed, run, time.perf_counter() - start, argv)
            results_path.write_text(json.dumps(results, indent=2))
            print(f"{name}: {results[name]['knn_top1'][-1][1]:.2f}% kNN in "
                  f"{results[name]['wall_min']:.1f} min")  # fmt: skip
    print(f"\n{machine(torch.device('cpu'))}, {time.strftime('%Y-%m-%d')}")
    print(table(results))
    plot(results, args.out / "cpu_methods.png")
    print(f"plot: {args.out / 'cpu_methods.png'}")


if __name__ == "__main__":
    main()
