"""Several ranks in one process, as threads, with an ``all_gather`` that really waits for all.

Lets code written against an ``all_gather`` callable (infonce.distributed) be checked rank by
rank on a CPU without starting processes; the DDP tests start real ones.
"""

import threading

import torch


def run_ranks(world: int, fn) -> list:
    """``[fn(rank, all_gather) for rank in range(world)]``, every call in its own thread."""
    slots: list = [None] * world
    barrier = threading.Barrier(world)
    results: list = [None] * world
    errors: list = []

    def all_gather_for(rank):
        def all_gather(tensor: torch.Tensor) -> torch.Tensor:
            slots[rank] = tensor
            barrier.wait()
            stacked = torch.stack(list(slots))  # (world, ...)
            barrier.wait()  # nobody overwrites a slot before every rank has read them
            return stacked

        return all_gather

    def target(rank):
        try:
            results[rank] = fn(rank, all_gather_for(rank))
        except BaseException as err:  # re-raised below, in the test's thread
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=target, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return results
