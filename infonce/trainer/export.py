"""Take the trained backbone out of a checkpoint, and load it back as an ``nn.Module``.

    python -m infonce.trainer.export runs/cpu_quick/checkpoints/last.ckpt -o backbone.pt

writes the backbone of a method's checkpoint (MoCo's query encoder's: no projection head, no
momentum encoder, no queue) or of a linear-probe checkpoint (its frozen backbone) as a plain
dictionary that ``torch.load(path, weights_only=True)`` reads::

    {"format": "infonce-backbone", "version": 1,
     "architecture": {"backbone": "resnet18", "cifar_stem": True}, "feature_dim": 512,
     "state_dict": {...}, "preprocessing": {"image_size": 32, "mean": [...], "std": [...]},
     "source": {"checkpoint": "...", "global_step": 8775, "epoch": 44}}

``architecture`` holds the arguments of :func:`~infonce.trainer.backbones.build_backbone`
that rebuild the network: ``backbone`` (a name such as ``"resnet18"``, ``"mobilenet_v3_small"``
or ``"timm:resnet18"``, or a dict ``{"class_path": ..., "init_args": {...}}``), ``cifar_stem``,
and ``backbone_kwargs`` when the run had any (files written before it existed have none, and
load as before). The backbone is rebuilt with one BatchNorm split (the same keys), and its
feature width measured on images of ``preprocessing["image_size"]`` when the file records it.

For the ResNets the ``state_dict`` keys are torchvision's (``fc`` removed), so they also load
into ``torchvision.models.resnet18()`` / ``resnet50()`` with ``fc = nn.Identity()`` (and, for
``cifar_stem``, ``conv1`` a 3x3 stride-1 conv without bias and ``maxpool = nn.Identity()``).

Nothing is written until the recorded architecture has been built and the tensors loaded
into it strictly, so a checkpoint whose hyperparameters disagree with its tensors is refused
instead of exported under the wrong architecture. The file is written atomically
(:func:`infonce._files.atomic_write`), never over the checkpoint it comes from, and over
another existing file only with ``--force``.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from infonce._files import atomic_torch_save, load_torch_file
from infonce.trainer.backbones import build_backbone

FORMAT, VERSION = "infonce-backbone", 1
# where each kind of checkpoint keeps its backbone's tensors
_MOCO_PREFIX = "encoder.0."  # MoCo's query encoder is Sequential(backbone, head)
_PROBE_PREFIX = "backbone."  # LinearProbe's frozen backbone
_SHOWN = 3  # keys quoted in a mismatch message


class NotABackboneError(ValueError):
    """The file is neither a MoCo or linear-probe checkpoint nor an exported backbone, or its
    tensors do not fit the architecture it records; the message names the file."""


def backbone_from_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The export dictionary (see the module docstring) of a checkpoint or backbone file.

    The recorded architecture is built and the tensors loaded into it strictly, so what is
    returned is known to load.

    Args:
        path: a MoCo checkpoint, a linear-probe checkpoint or an exported backbone.

    Raises:
        FileNotFoundError: no file at ``path``.
        UnreadableFileError: (a ValueError) not a file ``torch.load(weights_only=True)`` reads:
            a directory, empty, truncated, random bytes, text, a pickled module.
        NotABackboneError: (a ValueError) a torch file of another kind, an architecture this
            infonce does not build, or tensors that do not fit the recorded architecture.
    """
    data = _export_dictionary(path)
    _build_and_load(data, path)
    return data


def _export_dictionary(path: str | os.PathLike) -> dict[str, Any]:
    """The export dictionary of ``path``, its architecture checked but not yet built."""
    data = load_torch_file(path, "checkpoint")
    if isinstance(data, dict) and data.get("format") == FORMAT:
        if data.get("version") != VERSION:
            raise NotABackboneError(f"{path}: backbone file version {data.get('version')}, "
                             f"this infonce reads version {VERSION}")  # fmt: skip
        if not isinstance(data.get("architecture"), dict) or not isinstance(
            data.get("state_dict"), dict
        ):
            raise NotABackboneError(f"{path}: a backbone file without its 'architecture' or "
                                    "'state_dict' (damaged?)")  # fmt: skip
        _check_architecture(data["architecture"], path)
        return data
    hparams = data.get("hyper_parameters") if isinstance(data, dict) else None
    state = data.get("state_dict") if isinstance(data, dict) else None
    if not isinstance(hparams, dict) or not isinstance(state, dict):
        hparams = {}  # no Lightning checkpoint: refused below
    if "backbone" in hparams:  # MoCo, or another method of the shared base
        kind, prefix = "MoCo checkpoint", _MOCO_PREFIX
        architecture = {"backbone": hparams["backbone"],
                        "cifar_stem": hparams.get("cifar_stem", True)}  # fmt: skip
        if hparams.get("backbone_kwargs"):  # recorded only when set: older files stay equal
            architecture["backbone_kwargs"] = hparams["backbone_kwargs"]
    elif isinstance(hparams.get("architecture"), dict) and "pretrained" in hparams:  # LinearProbe
        kind, prefix = "linear-probe checkpoint", _PROBE_PREFIX
        architecture = dict(hparams["architecture"])
    else:
        held = sorted(map(str, data))[:6] if isinstance(data, dict) else type(data).__name__
        raise NotABackboneError(
            f"{path} is neither a MoCo checkpoint (no 'backbone' hyperparameter), a linear-probe "
            f"checkpoint nor a backbone exported by python -m infonce.trainer.export "
            f"(it holds {held})"
        )
    _check_architecture(architecture, path)
    weights = {
        k[len(prefix) :]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)
    }
    if not weights:
        raise NotABackboneError(f"{path}: a {kind} without backbone tensors (no state_dict key "
                                f"starts with {prefix!r})")  # fmt: skip
    data_state = data.get("ImageDataModule")
    data_state = data_state if isinstance(data_state, dict) else {}
    preprocessing = {k: data_state[k] for k in ("image_size", "mean", "std") if k in data_state}
    return {
        "format": FORMAT,
        "version": VERSION,
        "architecture": architecture,
        "feature_dim": None,  # set from the built backbone
        "state_dict": weights,
        "preprocessing": preprocessing,
        "source": {
            "checkpoint": str(Path(path).resolve()),
            "global_step": _int(data.get("global_step")),
            "epoch": _int(data.get("epoch")),
        },
    }


def _int(value: Any) -> int:
    """A checkpoint's step or epoch as an int; -1 when it has none."""
    try:
        return int(value)
    except (TypeError, ValueError, RuntimeError, OverflowError):  # None, nan, a tensor of many
        return -1


def _check_architecture(architecture: dict[str, Any], path: str | os.PathLike) -> None:
    """The form of ``architecture``; whether this infonce builds it is found when it is built."""
    backbone, cifar_stem = architecture.get("backbone"), architecture.get("cifar_stem", True)
    kwargs = architecture.get("backbone_kwargs")
    named = isinstance(backbone, str) and bool(backbone)
    by_path = isinstance(backbone, dict) and isinstance(backbone.get("class_path"), str)
    if not (named or by_path):
        raise NotABackboneError(f"{path} records backbone {backbone!r}, which this infonce does "
                                "not build: neither a name nor a class_path")  # fmt: skip
    if not isinstance(cifar_stem, bool):
        raise NotABackboneError(f"{path} records cifar_stem={cifar_stem!r}, not true or false")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise NotABackboneError(f"{path} records backbone_kwargs={kwargs!r}, not a dict")


def _describe(architecture: dict[str, Any]) -> str:
    backbone = architecture["backbone"]
    name = backbone if isinstance(backbone, str) else backbone.get("class_path")
    kwargs = architecture.get("backbone_kwargs")
    more = f", backbone_kwargs={kwargs}" if kwargs else ""
    return f"{name} (cifar_stem={architecture.get('cifar_stem', True)}{more})"


def _build_and_load(data: dict[str, Any], path: str | os.PathLike) -> nn.Module:
    """Build ``data``'s architecture and load its ``state_dict`` strictly; set its
    ``feature_dim``. Raises :class:`NotABackboneError` (one line) when the tensors do not fit."""
    architecture, state = data["architecture"], data["state_dict"]
    preprocessing = data.get("preprocessing")
    image_size = preprocessing.get("image_size") if isinstance(preprocessing, dict) else None
    try:
        backbone, width = build_from_architecture(architecture, image_size)
    except (ValueError, ImportError) as err:  # an unknown name, timm missing, ...
        raise NotABackboneError(f"{path} records backbone {architecture['backbone']!r}, which "
                                f"this infonce does not build: {err}") from err  # fmt: skip
    expected = backbone.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [str(k) for k in state if k not in expected]
    reshaped = [
        f"{k}: {_shape(state[k])} in the file, {tuple(v.shape)} built"
        for k, v in expected.items()
        if k in state and (not isinstance(state[k], Tensor) or state[k].shape != v.shape)
    ]
    recorded = data.get("feature_dim")
    if missing or unexpected or reshaped:
        found = ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape"))
        parts = [f"{len(keys)} {what}, e.g. {keys[:_SHOWN]}" for keys, what in found if keys]
        raise NotABackboneError(
            f"{path}: its tensors do not fit the architecture it records, "
            f"{_describe(architecture)}: {'; '.join(parts)}"
        )
    if recorded is not None and recorded != width:
        raise NotABackboneError(f"{path} records feature_dim {recorded}, but "
                                f"{_describe(architecture)} gives {width}")  # fmt: skip
    backbone.load_state_dict(state)  # strict; every key and shape checked above
    data["feature_dim"] = width
    return backbone


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else f"a {type(value).__name__}"


def build_from_architecture(
    architecture: dict[str, Any], image_size: int | None = None
) -> tuple[nn.Module, int]:
    """An untrained backbone of ``architecture`` (see the module docstring) with plain
    BatchNorm, and its feature width, measured on ``image_size`` images (None: the
    architecture's own size, else 32). Raises as
    :func:`~infonce.trainer.backbones.build_backbone`."""
    return build_backbone(
        architecture["backbone"],
        bn_splits=1,
        cifar_stem=architecture.get("cifar_stem", True),
        backbone_kwargs=architecture.get("backbone_kwargs"),
        image_size=image_size if type(image_size) is int and image_size > 0 else None,
    )


def read_backbone(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The backbone of ``path`` with its weights, in eval mode, and its export dictionary
    (without the ``state_dict``). Arguments and errors as :func:`load_backbone`."""
    data = _export_dictionary(path)
    backbone = _build_and_load(data, path)
    del data["state_dict"]
    return backbone.eval(), data


def load_backbone(path: str | os.PathLike) -> nn.Module:
    """The trained backbone of a checkpoint or an exported file, ready for features.

    Rebuilt from the recorded architecture with plain BatchNorm (``SplitBatchNorm`` with one
    split: the same keys), weights loaded strictly with ``weights_only=True``, in eval mode.
    A recorded ``class_path`` is imported, and only an ``nn.Module`` subclass is built from it;
    a ``timm:`` backbone needs timm installed.

    Args:
        path: a MoCo checkpoint (``last.ckpt``), a linear-probe checkpoint, or a file written
            by :func:`export_backbone`.

    Returns:
        The backbone: images (B, 3, H, W), normalised as in training, to features (B, F).

    Raises:
        FileNotFoundError: no file at ``path``.
        UnreadableFileError: (a ValueError) ``path`` is a directory, or not a complete file
            written by ``torch.save`` (empty, truncated, random bytes, text), or holds pickled
            Python objects (a module) that ``weights_only=True`` refuses.
        NotABackboneError: (a ValueError) a torch file of another kind, an architecture this
            infonce does not build (an unknown name, timm not installed), or tensors that do
            not fit the architecture it records (the message names the first keys that differ).

    Examples:
        >>> backbone = load_backbone("backbone.pt")
        >>> features = backbone(images)  # (B, 512) for resnet18
    """
    return read_backbone(path)[0]


def export_backbone(
    checkpoint: str | os.PathLike, output: str | os.PathLike, force: bool = False
) -> dict[str, Any]:
    """Write the backbone of ``checkpoint`` to ``output``; returns what was written.

    The output is checked first, then the checkpoint read, its architecture built and its
    tensors loaded strictly; only then is ``output`` written, atomically (a failure leaves no
    partial file and any previous file whole). A missing parent directory is created.

    Args:
        checkpoint: a MoCo or linear-probe checkpoint, or an exported backbone.
        output: the file to write.
        force: replace an existing ``output`` (never ``checkpoint`` itself).

    Raises:
        IsADirectoryError: ``output`` is a directory.
        FileExistsError: ``output`` is ``checkpoint`` (the same file, under any path or link),
            or exists and ``force`` is false.
        FileNotFoundError, UnreadableFileError, NotABackboneError: as
            :func:`backbone_from_checkpoint`.
        OSError: ``output`` cannot be written (a full disk, no permission); the message is
            ``cannot write OUTPUT: reason``.
    """
    output = Path(output)
    _check_output(Path(checkpoint), output, force)
    data = backbone_from_checkpoint(checkpoint)
    try:
        atomic_torch_save(data, output)
    except OSError as err:
        raise OSError(f"cannot write {output}: {err.strerror or err}") from err
    return data


def _check_output(checkpoint: Path, output: Path, force: bool) -> None:
    if output.is_dir():
        raise IsADirectoryError(f"output {output} is a directory; give a file to write, e.g. "
                                f"{output / 'backbone.pt'}")  # fmt: skip
    if not (output.exists() or output.is_symlink()):
        return
    try:
        same = checkpoint.exists() and os.path.samefile(checkpoint, output)
    except OSError:
        same = False
    if same:
        raise FileExistsError(f"output {output} is the checkpoint being exported ({checkpoint}); "
                              "write the backbone to another file")  # fmt: skip
    if not force:
        raise FileExistsError(f"output {output} already exists; pass --force to replace it")


def main(argv: list[str] | None = None) -> int:
    """The command: 0 written; 1 on any mistake, one line ``error: ...`` on stderr (naming the
    file and what is wrong); 2 for a malformed command line (argparse)."""
    parser = argparse.ArgumentParser(
        prog="python -m infonce.trainer.export",
        description="Write the backbone of a MoCo checkpoint (the query encoder's) or of a "
        "linear-probe checkpoint as a state_dict file that torch.load(weights_only=True) and "
        "infonce.load_backbone read. The checkpoint's recorded architecture is built and its "
        "tensors loaded strictly before anything is written.",
        epilog="The output is written atomically, never over the checkpoint itself, and over "
        "another existing file only with --force. Exit status: 0 written; 1 a file that cannot "
        "be used (one line: error: ...); 2 a malformed command line.",
    )
    parser.add_argument("checkpoint", help="a MoCo checkpoint, e.g. runs/x/checkpoints/last.ckpt")
    parser.add_argument("-o", "--output", required=True, help="the file to write, e.g. backbone.pt")
    parser.add_argument("--force", action="store_true",
                        help="replace OUTPUT if it exists (never the checkpoint)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        data = export_backbone(args.checkpoint, args.output, force=args.force)
    except (OSError, ValueError) as err:  # every message names the file and what is wrong
        print(f"error: {err}", file=sys.stderr)
        return 1
    arch, source = data["architecture"], data["source"]
    print(
        f"wrote {args.output}: {_describe(arch)}, "
        f"{data['feature_dim']}-d features, {len(data['state_dict'])} tensors, "
        f"from step {source['global_step']} of {args.checkpoint}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
