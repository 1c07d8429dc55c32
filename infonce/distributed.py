"""Collectives over ranks that hold different numbers of rows, through any ``all_gather``.

``all_gather`` is a callable that stacks a tensor of every rank along a new first dimension,
as Lightning's ``LightningModule.all_gather`` does (and, in one process, ``x[None]``). So the
same code runs in one process and under DDP, and tests can pass a fake.
"""

from collections.abc import Callable

import torch
from torch import Tensor

AllGather = Callable[[Tensor], Tensor]


def single_process_gather(x: Tensor) -> Tensor:
    """The ``all_gather`` of a world of one: ``x`` with a leading dimension of 1."""
    return x[None]


def gather_rows(x: Tensor, all_gather: AllGather) -> Tensor:
    """Every rank's rows, rank by rank, when ranks hold different numbers of rows.

    Two collectives: the row counts, then the rows padded to the largest count.

    Shape:
        x (n_rank, ...); output (sum of n_rank, ...).
    """
    counts = all_gather(torch.tensor(len(x), device=x.device))  # (world,)
    padded = x.new_zeros((int(counts.max()), *x.shape[1:]))
    padded[: len(x)] = x
    rows = all_gather(padded)  # (world, max n, ...)
    return torch.cat([rows[r, : int(n)] for r, n in enumerate(counts.tolist())])
