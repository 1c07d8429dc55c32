"""A callback that DDP tests add to ``train.py`` runs, to see what every rank holds.

    --trainer.callbacks+='{"class_path": "tests.ddp_helpers.DumpRankState",
                           "init_args": {"out": "DIR"}}'

Each rank writes ``DIR/rank{r}.pt`` when training ends: its module state, its keys and loss
of every step, and the names DDP left out of its buffer broadcast.
"""

from pathlib import Path

import lightning as L
import torch


class DumpRankState(L.Callback):
    def __init__(self, out: str):
        self.out = Path(out)
        self.keys: list[torch.Tensor] = []
        self.losses: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.keys.append(torch.cat(pl_module._pending_keys).detach().float().cpu())

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
