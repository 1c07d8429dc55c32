"""What one MoCo training step moves between ranks under DDP, computed from the model.

    python benchmarks/ddp_traffic.py                      # the MoCo CIFAR demo on 8 GPUs
    python benchmarks/ddp_traffic.py --backbone convnet --batch-size 128 --world 2

Counts, per optimizer step and per rank, the bytes each collective delivers to a rank
(ring algorithms: an all-reduce of S bytes moves 2 (R-1)/R x S through every rank, an
all-gather of s bytes per rank delivers (R-1) x s, a broadcast delivers S):

- DDP's gradient all-reduce over the query encoder's parameters (float32 gradients);
- DDP's broadcast of the module's buffers from rank 0 before each forward: BatchNorm running
  statistics of both encoders (the queue is excluded: it is the same on every rank);
- the all-gather of the keys before the enqueue (B x D per rank, float32: L2-normalised keys
  leave autocast in float32);
- with ``bn_guard: shuffle`` the all-gather of the key images and of the shuffled keys;
- two one-element all-reduces (the finite-loss check and the stop-signal agreement).

Nothing is run across processes: the sizes come from the model and the arguments.
"""

import argparse

from infonce.trainer.moco import MoCo


def step_traffic(model: MoCo, batch: int, world: int, image_size: int, key_bytes: int) -> list:
    """Rows ``(what, bytes received per rank per step)`` for one optimizer step."""
    R, B, D = world, batch, model.hparams.feature_dim
    params = sum(p.numel() for p in model.encoder.parameters()) * 4  # float32 gradients
    buffers = sum(
        b.numel() * b.element_size()
        for name, b in model.named_buffers()
        if not name.startswith("queue.")
    )
    rows = [
        ("gradient all-reduce (query encoder, float32)", 2 * (R - 1) / R * params),
        ("buffer broadcast before each forward (BN statistics)", buffers),
        ("key all-gather for the enqueue", (R - 1) * B * D * key_bytes),
    ]
    if model.hparams.bn_guard == "shuffle":
        image = 3 * image_size * image_size * 4  # float32 views
        rows += [
            ("shuffle BN: key images all-gather", (R - 1) * B * image),
            ("shuffle BN: shuffled keys all-gather", (R - 1) * B * D * key_bytes),
        ]
    rows.append(("finite-loss and stop-signal agreement (2 all-reduces)", 2 * 2 * (R - 1) / R * 8))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--world", type=int, default=8)
    parser.add_argument("--feature-dim", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--bn-guard", default="shuffle", choices=["split", "shuffle", "sync"])
    parser.add_argument("--head", default="linear", choices=["linear", "mlp"])
    parser.add_argument("--imagenet-stem", action="store_true", help="no CIFAR stem")
    args = parser.parse_args()
    splits = 1 if args.bn_guard != "split" else 8
    model = MoCo(
        backbone=args.backbone, feature_dim=args.feature_dim, bn_splits=splits,
        bn_guard=args.bn_guard, head=args.head, cifar_stem=not args.imagenet_stem,
        queue_size=4096,
    )  # fmt: skip
    rows = step_traffic(model, args.batch_size, args.world, args.image_size, key_bytes=4)
    print(
        f"{args.backbone} ({args.head} head), {args.world} ranks x batch {args.batch_size}, "
        f"D = {args.feature_dim},"
        f" bn_guard {args.bn_guard}: bytes received per rank per optimizer step"
    )
    for what, size in rows:
        print(f"  {what:<58} {size / 2**20:9.3f} MiB")
    print(f"  {'total':<58} {sum(size for _, size in rows) / 2**20:9.3f} MiB")


if __name__ == "__main__":
    main()
