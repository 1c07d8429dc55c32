"""Callbacks that tests add to ``train.py`` runs: what every rank holds (DDP tests), and a
stop signal sent at a given step.

    --trainer.callbacks+='{"class_path": "tests.ddp_helpers.DumpRankState",
                           "init_args": {"out": "DIR"}}'

Each rank writes ``DIR/rank{r}.pt`` when training ends: its module state, its keys and loss
of every step, and the names DDP left out of its buffer broadcast.
"""

import os
import signal
from pathlib import Path

import lightning as L
import torch


class DumpRankState(L.Callback):
    def __init__(self, out: str):
        self.out = Path(out)
        self.keys: list[torch.Tensor] = []
        self.losses: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        pending = getattr(pl_module, "_pending_keys", None)  # MoCo's keys of this step
        if pending:
            self.keys.append(torch.cat(pending).detach().float().cpu())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        ignored = sorted(getattr(trainer.strategy.model, "parameters_to_ignore", ()))
        torch.save(
            {
                "state_dict": {k: v.detach().cpu() for k, v in pl_module.state_dict().items()},
                "keys": self.keys,
                "losses": self.losses,
                "ddp_ignored": ignored,
                "world_size": trainer.world_size,
            },
            self.out / f"rank{trainer.global_rank}.pt",
        )


class SignalAtStep(L.Callback):
    """Sends this process SIGTERM once optimizer step ``step`` has ended."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
