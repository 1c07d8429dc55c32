"""MoCo v2 trains as it did before the methods shared a base: the losses of 8 float32 steps on
the tiny folder, recorded with the trainer of 2026-12-03 (commit 07c1597), must come out again.

The file was written by running this module's ``run`` on that commit. A change that is meant
to alter MoCo v2's numbers must say so and record the file again; a refactor must not.
"""

import json
from pathlib import Path

import lightning as L
import pytest
from train_helpers import tiny_data, tiny_moco, trainer

GOLDEN = json.loads((Path(__file__).parent / "data" / "moco_v2_tiny_losses.json").read_text())
SETUPS = {
    "asymmetric": {},
    "symmetric_random_queue": {
        "symmetric": True,
        "queue_init": "random",
        "momentum_schedule": "cosine",
    },
}


class Record(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(trainer.callback_metrics["train/loss"]))  # the method's loss


def run(root, **overrides) -> list[float]:
    L.seed_everything(0)
    record = Record()
    trainer(max_steps=8, callbacks=[record], deterministic=True).fit(
        tiny_moco(**overrides), tiny_data(root)
    )
    return record.losses


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_moco_v2_gives_the_losses_it_gave_before_the_shared_base(setup, tiny_folder):
    # float32 on the CPU: bitwise on one machine; another CPU's kernels may round differently
    assert run(tiny_folder, **SETUPS[setup]) == pytest.approx(GOLDEN[setup], rel=1e-5)
