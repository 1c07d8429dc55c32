"""Take the trained backbone out of a MoCo checkpoint, and load it back as an ``nn.Module``.

    python -m infonce.trainer.export runs/cpu_quick/checkpoints/last.ckpt -o backbone.pt

writes the query encoder's backbone (no projection head, no momentum encoder, no queue) as a
plain dictionary that ``torch.load(path, weights_only=True)`` reads::

    {"format": "infonce-backbone", "version": 1,
     "architecture": {"backbone": "resnet18", "cifar_stem": True}, "feature_dim": 512,
     "state_dict": {...}, "preprocessing": {"image_size": 32, "mean": [...], "std": [...]},
     "source": {"checkpoint": "...", "global_step": 8775, "epoch": 44}}

For the ResNets the ``state_dict`` keys are torchvision's (``fc`` removed), so they also load
into ``torchvision.models.resnet18()`` / ``resnet50()`` with ``fc = nn.Identity()`` (and, for
``cifar_stem``, ``conv1`` a 3x3 stride-1 conv without bias and ``maxpool = nn.Identity()``).
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infonce.trainer.backbones import FEATURE_DIMS, build_backbone

FORMAT, VERSION = "infonce-backbone", 1
_PREFIX = "encoder.0."  # MoCo's query encoder is Sequential(backbone, head)


class NotABackboneError(ValueError):
    """The file is neither a MoCo checkpoint nor an exported backbone."""


def backbone_from_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The export dictionary (see the module docstring) of a MoCo checkpoint or backbone file.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is neither a MoCo checkpoint nor an exported backbone.
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    if isinstance(data, dict) and data.get("format") == FORMAT:
        if data.get("version") != VERSION:
            raise NotABackboneError(f"{path}: backbone file version {data.get('version')}, "
                             f"this infonce reads version {VERSION}")  # fmt: skip
        return data
    hparams = data.get("hyper_parameters", {}) if isinstance(data, dict) else {}
    if "backbone" not in hparams or "state_dict" not in data:
        raise NotABackboneError(
            f"{path} is neither a MoCo checkpoint (no 'backbone' hyperparameter) nor a backbone "
            f"exported by python -m infonce.trainer.export"
        )
    architecture = {"backbone": hparams["backbone"], "cifar_stem": hparams.get("cifar_stem", True)}
    state = {k[len(_PREFIX) :]: v for k, v in data["state_dict"].items() if k.startswith(_PREFIX)}
    width = FEATURE_DIMS[architecture["backbone"]]
    data_state = data.get("ImageDataModule", {})
    preprocessing = {k: data_state[k] for k in ("image_size", "mean", "std") if k in data_state}
    return {
        "format": FORMAT,
        "version": VERSION,
        "architecture": architecture,
        "feature_dim": width,
        "state_dict": state,
        "preprocessing": preprocessing,
        "source": {
            "checkpoint": str(Path(path).resolve()),
            "global_step": int(data.get("global_step", -1)),
            "epoch": int(data.get("epoch", -1)),
        },
    }


def build_from_architecture(architecture: dict[str, Any]) -> tuple[nn.Module, int]:
    """An untrained backbone of ``architecture`` with plain BatchNorm, and its feature width."""
    return build_backbone(architecture["backbone"], bn_splits=1,
                          cifar_stem=architecture.get("cifar_stem", True))  # fmt: skip


def read_backbone(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The backbone of ``path`` with its weights, in eval mode, and its export dictionary
    (without the ``state_dict``). Arguments and errors as :func:`load_backbone`."""
    data = backbone_from_checkpoint(path)
    backbone, _ = build_from_architecture(data["architecture"])
    backbone.load_state_dict(data.pop("state_dict"))
    return backbone.eval(), data


def load_backbone(path: str | os.PathLike) -> nn.Module:
    """The trained backbone of a MoCo checkpoint or an exported file, ready for features.

    Rebuilt from the recorded architecture with plain BatchNorm (``SplitBatchNorm`` with one
    split: the same keys), weights loaded strictly with ``weights_only=True``, in eval mode.

    Args:
        path: a MoCo checkpoint (``last.ckpt``) or a file written by :func:`export_backbone`.

    Returns:
        The backbone: images (B, 3, H, W), normalised as in training, to features (B, F).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is neither a MoCo checkpoint nor an exported backbone.

    Examples:
        >>> backbone = load_backbone("backbone.pt")
        >>> features = backbone(images)  # (B, 512) for resnet18
    """
    return read_backbone(path)[0]


def export_backbone(checkpoint: str | os.PathLike, output: str | os.PathLike) -> dict[str, Any]:
    """Write the backbone of a MoCo ``checkpoint`` to ``output``; returns what was written."""
    data = backbone_from_checkpoint(checkpoint)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, output)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infonce.trainer.export",
        description="Write the query encoder's backbone of a MoCo checkpoint as a state_dict "
        "file that torch.load(weights_only=True) and infonce.load_backbone read.",
    )
    parser.add_argument("checkpoint", help="a MoCo checkpoint, e.g. runs/x/checkpoints/last.ckpt")
    parser.add_argument("-o", "--output", required=True, help="the file to write, e.g. backbone.pt")
    args = parser.parse_args(argv)
    try:
        data = export_backbone(args.checkpoint, args.output)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    arch, source = data["architecture"], data["source"]
    print(
        f"wrote {args.output}: {arch['backbone']} (cifar_stem={arch['cifar_stem']}), "
        f"{data['feature_dim']}-d features, {len(data['state_dict'])} tensors, "
        f"from step {source['global_step']} of {args.checkpoint}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
