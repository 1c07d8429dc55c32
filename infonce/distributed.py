"""Collectives over ranks that hold different numbers of rows, through any ``all_gather``.

``all_gather`` is a callable that stacks a tensor of every rank along a new first dimension,
as Lightning's ``LightningModule.all_gather`` does (and, in one process, ``x[None]``). So the
same code runs in one process and under DDP, and tests can pass a fake.
"""

from collections.abc import Callable

import torch
from torch import Tensor

AllGather = Callable[[Tensor], Tensor]

__all__ = ["gather_rows", "single_process_gather"]


def single_process_gather(x: Tensor) -> Tensor:
    """The ``all_gather`` of a world of one: ``x`` with a leading dimension of 1.

    Shape:
        x (*); output (1, *).

    Raises:
        ValueError: ``x`` not a tensor.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    return x[None]


def gather_rows(x: Tensor, all_gather: AllGather) -> Tensor:
    """Every rank's rows, rank by rank, when ranks hold different numbers of rows.

    Two collectives: the row counts, then the rows padded to the largest count.

    Shape:
        x (n_rank, ...); output (sum of n_rank, ...).

    Raises:
        ValueError: ``x`` not a tensor with a row dimension, ``all_gather`` not callable.
    """
    if not isinstance(x, Tensor) or x.dim() < 1:
        got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of rows (n, ...), got {got}")
    if not callable(all_gather):
        raise ValueError(f"all_gather must be callable, got {type(all_gather).__name__}")
    counts = all_gather(torch.tensor(len(x), device=x.device))  # (world,)
    padded = x.new_zeros((int(counts.max()), *x.shape[1:]))
    padded[: len(x)] = x
    rows = all_gather(padded)  # (world, max n, ...)
    return torch.cat([rows[r, : int(n)] for r, n in enumerate(counts.tolist())])
