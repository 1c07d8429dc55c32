"""Median step time of ``configs/cpu_quick.yaml`` under changes that alter only the speed
(precision, layout, ``compile``, workers, batch, network), inside ``train.py fit`` itself.

    python benchmarks/step_probe.py                                   # base, fp32, ... in turn
    python benchmarks/step_probe.py --probes base compile base --steps 80

Each probe is one ``train.py fit --config configs/cpu_quick.yaml <its arguments>`` on a CIFAR-10
JPEG copy (``$INFONCE_CIFAR10_ROOT`` or ``$INFONCE_CIFAR10_TARBALL``) with the kNN evaluation off
and :class:`StepTimer` added as a callback: it times ``--steps`` steps after ``--warmup`` (the
wall time between batch ends: data, augmentation, forward, backward, optimizer, EMA, enqueue and
the checkpoint every 50 steps, whose few slow steps barely move the median), prints it and stops
the run. Start-up and the evaluations are not included: ``budget_map.py`` measures whole runs.
On a shared virtual machine single probes wobble by 10-30% from one minute to the next: list
``base`` between the others (the default does) and compare neighbours.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
from _common import cifar10_jpeg_root

REPO = Path(__file__).resolve().parents[1]
PROBES = {
    "base": [],
    "fp32": ["--trainer.precision", "32"],
    "no_channels_last": ["--model.channels_last", "false"],
    "compile": ["--model.compile", "true"],
    "workers_0": ["--data.num_workers", "0"],
    "workers_1": ["--data.num_workers", "1"],
    "batch_128": ["--data.batch_size", "128"],
    "narrow": ["--model.backbone_kwargs", "{widths: [24, 48, 96], stem_width: 12}"],
    "wide": ["--model.backbone_kwargs", "{widths: [64, 128, 256], stem_width: 32}"],
    "px24": ["--data.image_size", "24"],
    "symmetric": ["--model.symmetric", "true"],
}
DEFAULT = ["base", "fp32", "no_channels_last", "compile", "base", "workers_1", "batch_128",
           "narrow", "base"]  # fmt: skip


class StepTimer(L.Callback):
    """Prints the median wall time between batch ends over ``steps`` steps after ``warmup``,
    then stops the run."""

    def __init__(self, warmup: int = 10, steps: int = 40):
        self.warmup, self.steps, self.times, self.last = warmup, steps, [], 0.0

    def on_train_batch_end(self, trainer, *args) -> None:
        now, step = time.perf_counter(), trainer.global_step
        if step > self.warmup:
            self.times.append(now - self.last)
        self.last = now
        if step >= self.warmup + self.steps:
            median = statistics.median(self.times)
            batch = trainer.datamodule.batch_size
            print(f"STEP {1e3 * median:.1f} ms, {batch / median:,.0f} images/s", flush=True)
            trainer.should_stop = True


def probe(name: str, warmup: int, steps: int, data_root: Path) -> str:
    with tempfile.TemporaryDirectory() as run:
        argv = [
            sys.executable, str(REPO / "train.py"), "fit",
            "--config", str(REPO / "configs" / "cpu_quick.yaml"),
            "--data.dataset", "folder", "--data.root", str(data_root),
            "--trainer.default_root_dir", run, "--trainer.enable_progress_bar", "false",
            "--trainer.limit_val_batches", "0",
            "--trainer.callbacks+=step_probe.StepTimer",
            f"--trainer.callbacks.warmup={warmup}",
            f"--trainer.callbacks.steps={steps}",
            *PROBES[name],
        ]  # fmt: skip
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "benchmarks"), os.environ.get("PYTHONPATH", "")]
            ),
        }
        out = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=run)
    lines = [line for line in out.stdout.splitlines() if line.startswith("STEP ")]
    if out.returncode != 0 or not lines:
        return f"failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}"
    return lines[-1][len("STEP ") :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", nargs="+", choices=list(PROBES), default=DEFAULT)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    data_root = cifar10_jpeg_root()
    for name in args.probes:
        print(f"{time.strftime('%H:%M:%S')} {name:>17}: "
              f"{probe(name, args.warmup, args.steps, data_root)}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
