"""Temperature sweep: kNN top-1 of one config trained at several InfoNCE temperatures.

    python benchmarks/temperature_sweep.py                          # cpu_quick, T 0.05 .. 0.5
    python benchmarks/temperature_sweep.py 0.07 learnable           # only these runs
    python benchmarks/temperature_sweep.py --out runs/sweep --train-args --trainer.max_epochs 10

Each value is one ``train.py fit`` of ``--config`` (``configs/cpu_quick.yaml`` by default) on the
60,000 images of a CIFAR-10 JPEG copy (``$INFONCE_CIFAR10_ROOT`` or ``$INFONCE_CIFAR10_TARBALL``)
with ``--model.temperature T``;
``learnable`` trains ``T`` with the module's ``learnable_temperature`` from the config's value.
Each run has its own folder under ``--out``; a finished run (its result in ``results.json``)
is not run again, so an interrupted sweep continues where it stopped. Prints a table (final
weighted-kNN top-1 on all 10,000 test images, wall time, and for the learnable run the final
temperature) and draws ``temperature_sweep.png`` (kNN top-1 against T). The JPEG copy can score
slightly below the original pickled CIFAR-10.
"""

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import cifar10_jpeg_root, machine

from infonce.plot import read_metrics

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = ["0.05", "0.07", "0.1", "0.2", "0.5", "learnable"]


def run_one(name: str, config: Path, data_root: Path, run: Path, extra: list[str]) -> dict:
    """Train one run of the sweep and return its result row."""
    args = ["--model.learnable_temperature", "true"] if name == "learnable" else []
    args = args or ["--model.temperature", name]
    command = [
        sys.executable,
        str(REPO / "train.py"),
        "fit",
        "--config",
        str(config),
        "--data.dataset",
        "folder",
        "--data.root",
        str(data_root),
        "--trainer.default_root_dir",
        str(run),
        *args,
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=run)
    wall = time.perf_counter() - start
    metrics = read_metrics(run)  # every logged curve of the run, read once
    temperature = metrics.get("train/temperature")
    fixed = math.nan if name == "learnable" else float(name)
    return {
        "run": name,
        "knn_top1": [v for _, v in metrics["val/knn_top1"]],
        # a learnable run that logged no temperature is reported as nan, not as a guess
        "final_temperature": temperature[-1][1] if temperature else fixed,
        "wall_min": wall / 60,
        "command": " ".join(command),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(torch.device("cpu")),
    }


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fixed = sorted(
        (r for r in results.values() if r["run"] != "learnable"),
        key=lambda r: r["final_temperature"],
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [r["final_temperature"] for r in fixed],
        [r["knn_top1"][-1] for r in fixed],
        "o-",
        label="fixed T",
    )
    if "learnable" in results:
        r = results["learnable"]
        ax.plot(
            [r["final_temperature"]],
            [r["knn_top1"][-1]],
            "r*",
            markersize=14,
            label=f"learnable T (final {r['final_temperature']:.3f})",
        )
    ax.set_xscale("log")
    ax.set_xlabel("temperature T (log scale)")
    ax.set_ylabel("weighted kNN top-1 (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "runs",
        nargs="*",
        default=DEFAULT_RUNS,
        help="temperatures and/or 'learnable' (default: %(default)s)",
    )
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "cpu_quick.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "temperature_sweep")
    parser.add_argument(
        "--train-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="more train.py arguments (everything after this flag)",
    )
    args = parser.parse_args()
    for name in args.runs:
        if name != "learnable":
            float(name)  # a typo fails here, before hours of training
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    data_root = cifar10_jpeg_root()
    for name in args.runs:
        if name in results:
            print(f"{name}: done before, {results[name]['knn_top1'][-1]:.2f}%")
            continue
        run = args.out / f"T{name}"
        if run.exists():
            raise SystemExit(f"{run} exists without a result: remove it to run {name} again")
        run.mkdir()
        results[name] = run_one(name, args.config.resolve(), data_root, run, args.train_args)
        results_path.write_text(json.dumps(results, indent=2))
    print(f"\nconfig: {args.config} {' '.join(args.train_args)}")
    print("| run | final T | kNN top-1 | fit wall time |\n| --- | --- | --- | --- |")
    for r in sorted(
        results.values(), key=lambda r: (r["run"] == "learnable", r["final_temperature"])
    ):
        print(
            f"| {r['run']} | {r['final_temperature']:.3f} | {r['knn_top1'][-1]:.2f}% "
            f"| {r['wall_min']:.1f} min |"
        )
    plot(results, args.out / "temperature_sweep.png")
    print(f"plot: {args.out / 'temperature_sweep.png'}")


if __name__ == "__main__":
    main()
