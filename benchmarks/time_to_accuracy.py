"""Time to accuracy: train a config on a CIFAR-10 copy, report wall time and kNN top-1.

    python benchmarks/time_to_accuracy.py                               # configs/cpu_quick.yaml
    python benchmarks/time_to_accuracy.py --config configs/moco_cifar10.yaml -- --seed_everything 1
    python benchmarks/time_to_accuracy.py --at-init                     # also kNN at initialisation

Runs ``train.py fit`` (and with ``--at-init`` first ``train.py validate`` on the untrained
network) in a fresh run folder under ``runs/time_to_accuracy/`` (``--trainer.default_root_dir``:
checkpoints, logs and the curves PNG all land there), on the 60,000 CIFAR-10 images of a JPEG
copy in ImageFolder layout (``$INFONCE_CIFAR10_ROOT`` or ``$INFONCE_CIFAR10_TARBALL``, see
``_common.cifar10_jpeg_root``) through ``dataset: folder``, and prints the
wall time of the fit, the last ``val/knn_top1`` (weighted kNN, k=200, on all 10,000 test
images) and a PNG of the curves. Arguments after ``--`` go to ``train.py``. The JPEG copy can
score slightly below the original pickled CIFAR-10.
"""

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

from _common import cifar10_jpeg_root

REPO = Path(__file__).resolve().parents[1]


def knn_top1(run_dir: Path) -> list[tuple[int, float]]:
    """(step, val/knn_top1) of every evaluation of a run, in order."""
    values = []
    for path in sorted(run_dir.glob("**/metrics.csv")):
        for row in csv.DictReader(open(path)):
            if row.get("val/knn_top1"):
                values.append((int(row["step"]), float(row["val/knn_top1"])))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "cpu_quick.yaml"))
    parser.add_argument("--at-init", action="store_true", help="first validate the untrained net")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "time_to_accuracy")
    parser.add_argument("train_args", nargs="*", help="more train.py arguments, after --")
    args = parser.parse_args()
    root = cifar10_jpeg_root()
    run = args.out / time.strftime("%Y%m%d-%H%M%S")
    run.mkdir(parents=True)
    common = [
        "--config",
        str(Path(args.config).resolve()),
        "--data.dataset",
        "folder",
        "--data.root",
        str(root),
        "--trainer.default_root_dir",
        str(run),
        *args.train_args,
    ]
    train = [sys.executable, str(REPO / "train.py")]
    if args.at_init:
        subprocess.run([*train, "validate", *common], check=True, cwd=run)
        at_init = knn_top1(run)[-1][1]
    start = time.perf_counter()
    subprocess.run([*train, "fit", *common], check=True, cwd=run)
    wall = time.perf_counter() - start
    curve = knn_top1(run)
    subprocess.run(
        [sys.executable, "-m", "infonce.plot", str(run), "-o", str(run / "curves.png")], check=True
    )
    print(f"\nconfig: {args.config} {' '.join(args.train_args)}")
    if args.at_init:
        print(f"kNN top-1 at initialisation: {at_init:.2f}%")
    print(f"fit wall time: {wall / 60:.1f} min (start-up, data, training, kNN evaluations)")
    if not curve:  # e.g. stopped by --trainer.max_time before the first evaluation
        print(f"no kNN evaluation ran   curves: {run / 'curves.png'}")
        return
    print("kNN top-1 by step: " + ", ".join(f"{s}: {v:.2f}%" for s, v in curve))
    print(f"final kNN top-1: {curve[-1][1]:.2f}%   curves: {run / 'curves.png'}")


if __name__ == "__main__":
    main()
