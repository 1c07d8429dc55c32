"""In-batch contrastive losses (SimCLR's NT-Xent, SupCon), forward + backward: the usual
formula against ``infonce.nt_xent`` / ``infonce.supcon``, whole and chunked, in one process.

    python benchmarks/contrastive.py                   # CPU, 2 threads
    python benchmarks/contrastive.py --device cuda

"Usual formula" is what SimCLR implementations write (lightly's ``NTXentLoss``, the SimCLR
repository): ``z = cat(z1, z2)`` normalised, the (2N, 2N) similarities divided by T, the
diagonal masked, ``cross_entropy`` against each view's partner. Printed per batch size: the
median time of forward + backward, and the peak memory allocated above the inputs, which is
where ``chunk_size`` pays: the (2N, 2N) matrix (and its softmax and gradient) is never whole.
"""

import argparse

import torch
import torch.nn.functional as F
from _common import machine, peak_extra_bytes, reexec_with_exact_rss, table, time_interleaved

from infonce import nt_xent, supcon

T = 0.5
SIZES = [(1024, 128), (4096, 128)]


def usual_nt_xent(z1, z2):
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    n = z1.shape[0]
    logits = (z @ z.T / T).fill_diagonal_(-torch.inf)  # (2N, 2N)
    target = torch.arange(2 * n, device=z.device).roll(n)
    F.cross_entropy(logits, target).backward()


def implementations(z1, z2):
    """The calls to time, each a forward and backward of the same loss on the same inputs."""
    features = torch.stack([z1.detach(), z2.detach()], dim=1).requires_grad_()  # (N, 2, D)
    return {
        "usual formula": lambda: usual_nt_xent(z1, z2),
        "infonce.nt_xent": lambda: nt_xent(z1, z2, T).backward(),
        "infonce.nt_xent, chunk_size=512": lambda: nt_xent(z1, z2, T, chunk_size=512).backward(),
        "infonce.supcon, no labels, chunk_size=512": lambda: supcon(
            features, None, T, chunk_size=512
        ).backward(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        reexec_with_exact_rss()
        torch.set_num_threads(args.threads)
    print(machine(device))
    rows = []
    for n, d in SIZES:
        g = torch.Generator(device=device).manual_seed(0)
        z1, z2 = (torch.randn(n, d, generator=g, device=device, requires_grad=True) for _ in "12")
        fns = implementations(z1, z2)
        times = time_interleaved(fns, device, args.repeats)
        base = times["usual formula"]
        for name, fn in fns.items():
            mib = peak_extra_bytes(fn, device) / 2**20
            rows.append([f"{2 * n:,} x {d}" if name == "usual formula" else "", name,
                         f"{1e3 * times[name]:.1f} ms", f"{base / times[name]:.2f}x",
                         f"{mib:,.0f} MiB"])  # fmt: skip
    print(table(["2N x D", "implementation", "fwd+bwd", "speed vs usual", "peak extra"], rows))


if __name__ == "__main__":
    main()
