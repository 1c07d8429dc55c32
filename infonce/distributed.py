"""Collectives for losses and metrics computed over several ranks.

Two kinds. ``gather_rows`` takes an ``all_gather`` callable that stacks a tensor of every rank
along a new first dimension, as Lightning's ``LightningModule.all_gather`` does (and, in one
process, ``x[None]``), so the same code runs in one process and under DDP, and tests can pass a
fake. ``gather_with_grad`` and ``rank_and_world_size`` read ``torch.distributed``'s default
process group, for the losses' ``gather_distributed=True``: without an initialised group (or
without ``torch.distributed`` at all) they are those of a world of one. Nothing here needs a
group to be initialised when imported.
"""

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

AllGather = Callable[[Tensor], Tensor]
_MAX_DIMS = 8  # gather_with_grad's shape check sends a fixed-size vector

__all__ = ["gather_rows", "gather_with_grad", "rank_and_world_size", "single_process_gather"]


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


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of processes in torch.distributed's default group;
    ``(0, 1)`` when torch.distributed is unavailable or no process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: Tensor, name: str = "x") -> list[Tensor]:
    """Every rank's ``x``, in rank order, with gradients that flow back to the rank they came
    from.

    The entry of this rank is ``x`` itself; the others are copies received from their ranks.
    In backward, the gradients that every rank's loss sends to rank ``r``'s entry are summed
    into rank ``r``'s ``x`` (one all-reduce of the stacked gradients, then this rank's slice),
    as ``torch.distributed.nn.functional.all_gather`` does. So when every rank computes the
    loss of its own rows against the gathered set, and DDP averages the parameters' gradients
    over the R ranks, the result is the gradient of the average of the R losses. A tensor that
    needs no gradient (labels) is gathered without autograd. Without an initialised process
    group, or in a world of one, the result is ``[x]``: no collective at all. Every rank must
    call it (and run backward) in the same order, as for any collective.

    Args:
        x: this rank's tensor; every rank's must have the same shape and dtype.
        name: what error messages call ``x``.

    Returns:
        A list of world-size tensors of ``x``'s shape.

    Shape:
        x (*); output R x (*).

    Raises:
        ValueError: ``x`` not a tensor or of more than 8 dimensions; ranks whose ``x`` differ
            in shape (every rank raises: the shapes are gathered first, in one collective of
            a fixed size, so no rank waits in a mismatched one).
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    rank, world = rank_and_world_size()
    if world == 1:
        return [x]
    if x.dim() > _MAX_DIMS:
        raise ValueError(f"{name} must have at most {_MAX_DIMS} dimensions, got {x.dim()}")
    # one collective: [ndim, *shape, -1 padding], so that no rank waits in a mismatched gather
    padding = [-1] * (_MAX_DIMS - x.dim())
    shape = torch.tensor([x.dim(), *x.shape, *padding], dtype=torch.int64, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    got = [tuple(s[1 : 1 + int(s[0])].tolist()) for s in torch.stack(shapes).cpu()]
    if any(s != tuple(x.shape) for s in got):
        raise ValueError(
            f"{name} must have one shape on every rank to be gathered (the same batch size, so "
            f"that the mean over ranks is the mean over the gathered batch), got {got}"
        )
    if not (x.requires_grad and torch.is_grad_enabled()):
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
    else:
        parts = list(_AllGatherWithGrad.apply(x))
    parts[rank] = x  # this rank's own rows keep their direct graph
    return parts


class _AllGatherWithGrad(torch.autograd.Function):
    """``dist.all_gather`` whose backward sums every rank's gradient for each entry back into
    that entry's rank: all-reduce of the stacked gradients (works on gloo, which has no
    reduce-scatter; R times the bytes of one, small next to DDP's gradient all-reduce for
    embeddings)."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return tuple(parts)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        grad = torch.stack(grads)  # (R, *): this rank's gradient for every rank's entry
        dist.all_reduce(grad)  # summed over the ranks that computed them
        return grad[dist.get_rank()]
