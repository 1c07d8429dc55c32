"""Host-to-device copies that do not make the host wait for the device.

A plain ``tensor.to("cuda")`` of a tensor in ordinary (pageable) host memory synchronises: the
host waits until every kernel already queued on the stream has finished, so the GPU then idles
while the host launches the next ones. Copied from pinned memory with ``non_blocking=True``
the copy is queued like a kernel and the host runs ahead. The pinned buffer comes from torch's
caching host allocator, which keeps it until the copy has completed.
"""

import torch
from torch import Tensor


def host_to_device(tensor: Tensor, device: torch.device | str) -> Tensor:
    """``tensor`` (on the CPU) on ``device``, without a host synchronisation on CUDA.

    On the CPU it is returned as is; on other devices it is an ordinary copy.

    Shape:
        any; the result has the shape and dtype of ``tensor``.
    """
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
