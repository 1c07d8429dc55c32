"""A first-in first-out queue of negative keys whose whole state lives in persistent buffers."""

import torch
from torch import Tensor, nn

from infonce._checks import (
    check_bool,
    check_float_tensor,
    check_int,
    check_labels,
    check_same_device,
)

__all__ = ["MemoryQueue"]


class MemoryQueue(nn.Module):
    """The queue of K negative keys of MoCo, as fixed-shape persistent buffers.

    ``queue`` (K, D), the write pointer ``ptr`` and the fill count ``filled`` are registered
    buffers, so ``state_dict()``, DDP buffer broadcasts and every Lightning checkpoint carry
    them: a resumed run continues with the same negatives at the same position.

    :meth:`enqueue` accepts any batch size: writes wrap around the end (no assertion that K is
    a multiple of the batch size, no dropped tail), and a batch larger than K keeps its newest
    K keys. :meth:`negatives` returns only the rows written so far, as a copy that later
    enqueues never modify, so it is safe in a loss whose backward runs after the next enqueue.

    Neither method makes the host wait for the device: the fill count that :meth:`negatives`
    slices by is also tracked on the host (:attr:`num_keys`) and read back from the buffer
    only after something other than :meth:`enqueue` wrote it: ``load_state_dict``, or an
    in-place write to the buffer, which its version counter reveals. (A write through
    ``filled.data`` bypasses that counter; don't.)

    With ``labelled=True`` every key carries an int64 label (a ``labels`` buffer (K,), written
    at the same rows): :meth:`enqueue` then takes ``labels`` and :meth:`keys_and_labels` returns
    both, for a supervised loss against the queue (``supcon(..., queue=, queue_labels=)``).

    Args:
        size: K, the number of keys held (>= 1).
        dim: D, the key dimension (>= 1).
        labelled: keep a label with every key.

    Shape:
        enqueue: keys (B, D), labels (B,), any B >= 0. negatives: (min(filled, K), D).

    Raises:
        ValueError: ``size`` or ``dim`` not an integer >= 1, ``labelled`` not a bool.

    Examples:
        >>> queue = MemoryQueue(4096, 128)
        >>> loss = info_nce(q, k, queue.negatives())
        >>> queue.enqueue(k)
    """

    queue: Tensor
    ptr: Tensor
    filled: Tensor

    def __init__(self, size: int, dim: int, labelled: bool = False):
        super().__init__()
        check_int(size, "size")
        check_int(dim, "dim")
        check_bool(labelled, "labelled")
        self.size, self.dim, self.labelled = size, dim, labelled
        self.register_buffer("queue", torch.zeros(size, dim))  # (K, D)
        if labelled:
            self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))  # (K,)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next row to write
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # rows written, <= K
        # (filled, its version, its value): the host's copy, valid while the version holds
        self._host_filled: tuple[Tensor, int, int] | None = (self.filled, _version(self.filled), 0)

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor | None = None) -> None:
        """Write ``keys`` (B, D), and their ``labels`` (B,) int64 in a labelled queue, at the
        pointer, wrapping around; never tracks gradients.

        Raises:
            ValueError: ``keys`` not a floating (B, D) tensor with D equal to the queue's, or
                not on the queue's device; ``labels`` missing for a labelled queue, given to an
                unlabelled one, or not int64 (B,) on the queue's device.
        """
        check_float_tensor(keys, "keys", ndim=2)
        if keys.shape[1] != self.dim:
            raise ValueError(
                f"keys must have shape (B, {self.dim}) for a queue of dim {self.dim}, "
                f"got {tuple(keys.shape)}"
            )
        check_same_device(keys, "keys", self.queue, "the queue")
        B = keys.shape[0]
        if self.labelled != (labels is not None):
            raise ValueError(
                "labels are needed by a labelled queue (labelled=True)"
                if self.labelled
                else "labels given to a queue without labels (MemoryQueue(..., labelled=False))"
            )
        if labels is not None:
            check_labels(labels, "labels", B, rows_of="keys", read=False)
            check_same_device(labels, "labels", self.queue, "the queue")
        if B == 0:
            return
        known = self._known_filled()
        keys = keys[-self.size :].detach().to(self.queue.dtype)  # newest K if B > K
        n = keys.shape[0]
        rows = (self.ptr + torch.arange(n, device=self.queue.device)) % self.size  # (n,)
        self.queue.index_copy_(0, rows, keys)
        if labels is not None:
            self.labels.index_copy_(0, rows, labels[-self.size :])
        self.ptr.copy_((self.ptr + n) % self.size)
        self.filled.copy_(torch.clamp(self.filled + n, max=self.size))
        if known is not None:
            self._host_filled = (self.filled, _version(self.filled), min(known + n, self.size))

    def negatives(self) -> Tensor:
        """The keys written so far, (min(filled, K), D), as a copy detached from the buffer.

        Row order is storage order, not age; InfoNCE does not depend on the order.
        """
        return self.queue[: self.num_keys].clone()

    def keys_and_labels(self) -> tuple[Tensor, Tensor]:
        """The keys written so far and their labels, ``(n, D)`` and ``(n,)`` int64 (n the
        :attr:`num_keys`), copies in the same row order.

        Raises:
            ValueError: the queue is not ``labelled``.
        """
        if not self.labelled:
            raise ValueError(
                "keys_and_labels needs a labelled queue (MemoryQueue(..., labelled=True))"
            )
        n = self.num_keys
        return self.queue[:n].clone(), self.labels[:n].clone()

    @property
    def num_keys(self) -> int:
        """The keys held, ``min(filled, K)``, as a Python int: no device sync after enqueues."""
        known = self._known_filled()
        if known is None:
            known = int(self.filled)  # one sync, after a load or a direct write
            self._host_filled = (self.filled, _version(self.filled), known)
        return known

    def _known_filled(self) -> int | None:
        """The host's copy of ``filled`` if nothing else wrote the buffer since, else None."""
        if self._host_filled is None:
            return None
        tensor, version, value = self._host_filled
        same = tensor is self.filled and version == _version(tensor) and version >= 0
        return value if same else None

    def forward(self) -> Tensor:
        return self.negatives()

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host_filled = None  # loaded (maybe by assignment): read the buffer next time

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}" + (", labelled=True" if self.labelled else "")


def _version(tensor: Tensor) -> int:
    """The in-place write counter of ``tensor``; -1 where it has none (inference tensors)."""
    try:
        return tensor._version
    except RuntimeError:
        return -1
