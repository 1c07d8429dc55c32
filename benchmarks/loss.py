"""MoCo queue loss, forward + backward: infonce against its peers, side by side in one process.

    python benchmarks/loss.py                      # CPU, 2 threads, the three sizes below
    python benchmarks/loss.py --device cuda        # on a GPU
    pip install -e ".[bench]"                      # the peers: lightly, info-nce-pytorch, ...

Each implementation gets the same raw queries (N, D) that require a gradient, keys (N, D) and
a queue of K L2-normalised keys, and runs one forward and backward of the MoCo loss at
T = 0.07, as its users would call it (normalising q and k itself). Printed per size: the
median time, the ratio to the two matrix products no implementation can avoid (the logits
q @ queue.T and the gradient softmax @ queue), infonce's speed-up over each peer, and the
peak memory allocated above the inputs. A peer that fails (out of memory) says why.

Sizes: N=256, D=128, K=65,536 (the MoCo paper's queue); N=512, K=4,096 (the MoCo CIFAR-10
recipe); N=256, K=1,048,576 (where the logits alone are 1 GiB).
"""

import argparse
import importlib.util
import math
import re

import torch
import torch.nn.functional as F
from _common import (
    machine,
    memory_cap,
    peak_extra_bytes,
    reexec_with_exact_rss,
    table,
    time_interleaved,
)

import infonce
from infonce import info_nce_logits
from infonce.chunked import chunked_info_nce

T = 0.07
SIZES = [(256, 128, 65_536), (512, 128, 4_096), (256, 128, 1_048_576)]


def two_gemms(q, k, queue):
    """The floor: logits (N, K) = q @ queue.T, then dL/dq = P @ queue with P the same size."""
    logits = q.detach() @ queue.T
    return logits @ queue


def moco_official(q, k, queue):
    """facebookresearch/moco builder.py: einsum, cat, / T, cross_entropy (queue stored (D, K))."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", [q, queue.T])
    logits = torch.cat([l_pos, l_neg], dim=1) / T
    labels = torch.zeros(logits.shape[0], dtype=torch.long)
    F.cross_entropy(logits, labels.to(q.device)).backward()


def infonce_logits_path(q, k, queue):
    """infonce's reference path: the (N, 1+K) logits, then cross_entropy."""
    F.cross_entropy(*info_nce_logits(q, k, queue, T)).backward()


def infonce_default(q, k, queue):
    """infonce.info_nce as users call it: chunked from K >= CHUNKED_FROM."""
    infonce.info_nce(q, k, queue, T).backward()


def peers(N, D, K, device):
    """Peer implementations that are installed, as name -> (q, k, queue) -> None."""
    found = {}
    if importlib.util.find_spec("lightly"):
        from lightly.loss import NTXentLoss

        lightly_loss = NTXentLoss(temperature=T, memory_bank_size=(K, D)).to(device)

        def lightly_(q, k, queue):  # its bank is its own (random, normalised) and enqueues k
            lightly_loss(q, k).backward()

        found["lightly NTXentLoss(memory_bank_size)"] = lightly_
    if importlib.util.find_spec("info_nce"):
        from info_nce import InfoNCE

        info_nce_pytorch = InfoNCE(temperature=T, negative_mode="unpaired")

        def info_nce_pytorch_(q, k, queue):
            info_nce_pytorch(q, k, queue).backward()

        found['info-nce-pytorch InfoNCE(negative_mode="unpaired")'] = info_nce_pytorch_
    if importlib.util.find_spec("pytorch_metric_learning"):
        from pytorch_metric_learning.losses import CrossBatchMemory, NTXentLoss

        pml = CrossBatchMemory(NTXentLoss(temperature=T), embedding_size=D, memory_size=K)
        arange = torch.arange(N, device=device)
        labels = torch.cat([arange, arange])
        enqueue = torch.cat([torch.zeros(N, dtype=torch.bool), torch.ones(N, dtype=torch.bool)])

        def pml_(q, k, queue):
            if not pml.has_been_filled:  # the queue as negatives: labels no query has
                pml.embedding_memory.copy_(queue)
                pml.label_memory.copy_(torch.arange(N, N + K, device=device))
                pml.has_been_filled = True
            with memory_cap():  # it asks for more than the machine has: fail, not get killed
                pml(torch.cat([q, k]), labels, enqueue_mask=enqueue.to(device)).backward()

        found["pytorch-metric-learning CrossBatchMemory(NTXentLoss)"] = pml_
    return found


def describe(result) -> str:
    if isinstance(result, BaseException):
        tried = re.search(r"allocate (\d+) bytes", str(result))
        if tried:
            return f"fails: out of memory (asked for {int(tried.group(1)) / 1e9:.0f} GB more)"
        return f"fails: {str(result).splitlines()[0][:60]}"
    return f"{result * 1e3:.1f} ms"


def run_size(N, D, K, device, repeats, with_peers):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(N, D, generator=g).to(device).requires_grad_()
    k = torch.randn(N, D, generator=g).to(device)
    queue = F.normalize(torch.randn(K, D, generator=g), dim=1).to(device)
    impls = {
        "the two GEMMs alone (floor)": two_gemms,
        "official MoCo formula": moco_official,
        **(peers(N, D, K, device) if with_peers else {}),
        "infonce reference path (logits + cross_entropy)": infonce_logits_path,
        "infonce.info_nce (chunked)": infonce_default,
    }

    def call(fn):
        def run():
            q.grad = None
            fn(q, k, queue)

        return run

    fns = {name: call(fn) for name, fn in impls.items()}
    times = time_interleaved(fns, device, repeats)
    memory = {}
    for name, fn in fns.items():
        if isinstance(times[name], BaseException):
            continue
        memory[name] = peak_extra_bytes(fn, device)
    floor, ours = times["the two GEMMs alone (floor)"], times["infonce.info_nce (chunked)"]
    floor = floor if not isinstance(floor, BaseException) else float("nan")
    reference_memory = memory.get("infonce reference path (logits + cross_entropy)")
    rows = []
    for name, result in times.items():
        ok = not isinstance(result, BaseException)
        rows.append(
            [
                name,
                describe(result),
                f"{result / floor:.2f}x" if ok else "-",
                f"{result / ours:.2f}x" if ok else "-",
                f"{memory[name] / 2**20:.0f} MiB" if name in memory else "-",
            ]
        )
    print(f"\nN={N}, D={D}, K={K:,}, float32, T={T}, median of {repeats}")
    print(table(["implementation", "fwd+bwd", "vs floor", "infonce faster by", "peak extra"], rows))
    if reference_memory:
        share = memory["infonce.info_nce (chunked)"] / reference_memory
        print(f"infonce chunked peak extra memory: {share:.0%} of the reference path's")
    return times


def crossover(N, D, device, repeats) -> None:
    """The reference path against the chunked one for growing K: where chunking starts to pay."""
    rows = []
    for K in [2**p for p in range(6, 15)]:
        g = torch.Generator().manual_seed(0)
        q = torch.randn(N, D, generator=g).to(device).requires_grad_()
        k = torch.randn(N, D, generator=g).to(device)
        queue = F.normalize(torch.randn(K, D, generator=g), dim=1).to(device)

        def reference(q=q, k=k, queue=queue):
            F.cross_entropy(*info_nce_logits(q, k, queue, T)).backward()

        def chunked(q=q, k=k, queue=queue):
            chunked_info_nce(q, k, queue, T).backward()

        times = time_interleaved({"reference": reference, "chunked": chunked}, device, repeats)
        ratio = times["reference"] / times["chunked"]
        rows.append([f"{K:,}", *(f"{t * 1e3:.2f} ms" for t in times.values()), f"{ratio:.2f}x"])
    print(f"\ncrossover at N={N}, D={D}: reference path vs chunked, median of {repeats}")
    print(table(["K", "reference", "chunked", "chunked faster by"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-peers", action="store_true", help="skip the peer libraries")
    parser.add_argument("--sizes", default="all", help="all, or N,D,K (e.g. 256,128,65536)")
    parser.add_argument("--crossover", action="store_true", help="also time K = 64 ... 16,384")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        reexec_with_exact_rss()
        torch.set_num_threads(args.threads)
    sizes = SIZES if args.sizes == "all" else [tuple(int(v) for v in args.sizes.split(","))]
    print(f"machine: {machine(device)}")
    if not args.no_peers:
        modules = {"lightly": "lightly", "info_nce": "info-nce-pytorch",
                   "pytorch_metric_learning": "pytorch-metric-learning"}  # fmt: skip
        missing = [name for module, name in modules.items() if not importlib.util.find_spec(module)]
        if missing:
            print(f"peers not installed, left out: {', '.join(missing)}")
    for N, D, K in sizes:
        repeats = max(3, math.ceil(args.repeats * 65_536 / max(K, 65_536)))
        run_size(N, D, K, device, repeats, not args.no_peers)
    if args.crossover:
        crossover(256, 128, device, 4 * args.repeats)


if __name__ == "__main__":
    main()
