"""What ``train.py`` says when it is asked for something it cannot do: one line, no traceback.

Three sources of user mistakes, each turned into a :class:`ConfigError` whose message names the
option (``--model.queue_size``) and what is wrong with its value:

- the parser (jsonargparse): a value of the wrong type, an option that does not exist; its
  nested "Does not validate against any of the Union subtypes" report is reduced to its one
  relevant line (:func:`parser_message`);
- the constructors of the model, the data module, the trainer and the callbacks, which validate
  their arguments: LightningCLI buries their ``ValueError`` under the parser's union report;
  the innermost error is dug out and the option named (:func:`instantiation_message`);
- ``--ckpt_path``: a file that is missing, unreadable, or not a training checkpoint of this
  model (:func:`check_checkpoint_file`).
"""

import re
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path

from torch.nn import Module

from infonce._files import load_torch_file
from infonce.trainer.resume import check_resumed_hyperparameters

__all__ = [
    "ConfigError",
    "check_checkpoint_file",
    "checkpoint_candidates",
    "innermost",
    "instantiation_message",
    "parser_message",
]


class ConfigError(ValueError):
    """An option of ``train.py`` is wrong; the message names it and the bad value."""


def _pretty_type(text: str) -> str:
    """``<class 'int'>`` -> ``an int``; ``typing.Literal['a', 'b']`` -> ``one of 'a', 'b'``."""
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text)
    text = re.sub(r"typing\.Literal\[(.*)\]", r"one of \1", text)
    text = re.sub(r"\b(?:typing\.)?Optional\[(.*)\]", r"\1 or null", text)
    text = re.sub(r"^Expected a (?=one of)", "expected ", text)
    text = re.sub(r"^Expected a int\b", "expected an int", text)
    return re.sub(r"^Expected a\b", "expected a", text)


def parser_message(message: str) -> str:
    """jsonargparse's error report as one line: ``--group.key: what is wrong``.

    The report nests ``Parser key "x":`` headers around the error of each union alternative;
    the alternative ``None`` (every optional group has it) is dropped, the first remaining
    error is kept with the keys above it.

    Examples:
        ``Parser key "data.batch_size":`` / ``Expected a <class 'int'>. Got value: 0.5``
        becomes ``--data.batch_size: expected an int, got 0.5``.
    """
    keys: list[str] = []
    detail: str | None = None
    given: str | None = None
    for raw in message.splitlines():
        line = raw.strip()
        if line.startswith("error: "):
            line = line[len("error: ") :]
        key = re.fullmatch(r'Parser key "([^"]+)":', line)
        if key and detail is None:
            keys.append(key.group(1))
            continue
        if line.startswith("Given value:"):
            given = line[len("Given value:") :].strip()
            continue
        if not line or line.startswith(
            ("Does not validate against any", "Subtypes:", "Errors:", "Given value type:")
        ):
            continue
        if line.startswith("- "):
            line = line[2:]
        if re.fullmatch(r"Expected a <class 'NoneType'>", line):
            continue
        if line.startswith("Problem with given class_path") and line.endswith(":"):
            continue
        if detail is None:
            detail = line
    if detail is None:  # not the nested report: keep its first line
        return message.strip().splitlines()[0] if message.strip() else "invalid arguments"
    option = "--" + ".".join(keys) if keys else ""
    accepted = re.fullmatch(r"Option '([^']+)' is not accepted", detail)
    if accepted:
        return f"{option}.{accepted.group(1)} is not an option of this class (a typo?)"
    detail = _pretty_type(detail)
    if "Got value:" in detail:
        detail = re.sub(r"\.? Got value: ", ", got ", detail)
    elif given is not None and not given.startswith(("Namespace(", "NestedArg(")):
        detail = f"{detail}, got {given}"
    return f"{option}: {detail}" if option else detail


def innermost(err: BaseException) -> BaseException:
    """The first cause of ``err``'s chain (``raise ... from``), the error the code raised."""
    seen = {id(err)}
    while err.__cause__ is not None and id(err.__cause__) not in seen:
        err = err.__cause__
        seen.add(id(err))
    return err


def _raising_group(err: BaseException, groups: Mapping[str, type]) -> str | None:
    """The config group (``model``, ``data``, ...) whose constructor raised ``err``: the
    outermost ``__init__`` frame in its traceback whose ``self`` is of one of ``groups``' types."""
    for frame, _ in traceback.walk_tb(err.__traceback__):
        if frame.f_code.co_name != "__init__":
            continue
        owner = frame.f_locals.get("self")
        for group, kind in groups.items():
            if isinstance(owner, kind):
                return group
    return None


def instantiation_message(
    err: BaseException, groups: Mapping[str, type], options: Mapping[str, Iterable[str]]
) -> str:
    """One line for an error a constructor raised while LightningCLI built the run.

    Args:
        err: what LightningCLI raised (often jsonargparse's union report around the cause).
        groups: config group -> the base class of what it builds (``model``: LightningModule).
        options: config group -> the argument names it was given.

    Returns:
        ``--group.name: message`` when the message starts with (or quotes) one of the group's
        argument names, else ``group: message``; the message is the innermost error's.
    """
    cause = innermost(err)
    text = " ".join(str(cause).split()) or type(cause).__name__
    group = _raising_group(cause, groups)
    if group is None:
        return text
    names = set(options.get(group, ()))
    first = re.match(r"[`'\"]?([A-Za-z_]\w*)", text)
    if first and first.group(1) in names:
        return f"--{group}.{first.group(1)}: {text}"
    return f"{group}: {text}"


def check_checkpoint_file(path: str, model: Module, subcommand: str) -> None:
    """Refuse a ``--ckpt_path`` that is not a training checkpoint of this model, in one line.

    Reads the file with memory-mapped tensors (cheap for a large checkpoint), then checks
    that it is a Lightning checkpoint (not a backbone written by ``infonce.trainer.export``,
    not some other torch file) of the model's class, holding the model's tensors (unless the
    model has none before loading, as a probe whose backbone comes from its checkpoint; keys
    under the model's ``SETUP_STATE_PREFIXES`` may be in the file only, as the online probe,
    which a method builds in ``setup`` once the data says how many classes there are). When
    the tensors differ because an argument that shapes them differs (the model's
    ``RESUME_FIXED``), the model's resume check names both values.

    Raises:
        ConfigError: the file is missing, unreadable or of another kind; the message names it.
        ResumeConflictError: the model's ``RESUME_FIXED`` arguments differ from the saved ones.
    """
    option = f"--ckpt_path {path}"
    try:
        data = load_torch_file(path, "checkpoint", mmap=True)
    except (FileNotFoundError, ValueError) as err:  # the message names the file
        raise ConfigError(f"--ckpt_path: {err}") from None
    if isinstance(data, dict) and data.get("format") == "infonce-backbone":
        raise ConfigError(
            f"{option}: this is a backbone written by python -m infonce.trainer.export, not a "
            f"training checkpoint (such as runs/<run>/checkpoints/last.ckpt); to evaluate the "
            f"backbone, train a probe on it: configs/linear_probe.yaml --model.pretrained {path}"
        )
    state = data.get("state_dict") if isinstance(data, dict) else None
    if not isinstance(state, dict) or "global_step" not in data:
        kind = sorted(map(str, data))[:5] if isinstance(data, dict) else type(data).__name__
        raise ConfigError(
            f"{option}: not a Lightning training checkpoint (it holds {kind}); give a "
            "checkpoint this trainer wrote, e.g. runs/<run>/checkpoints/last.ckpt"
        )
    hparams = data.get("hyper_parameters")
    saved_class = hparams.get("_class_path") if isinstance(hparams, dict) else None
    model_class = f"{type(model).__module__}.{type(model).__qualname__}"
    if saved_class is not None and saved_class != model_class:
        raise ConfigError(
            f"{option}: the checkpoint holds a {saved_class}, this run trains a {model_class}; "
            "check --config and --model.class_path"
        )
    expected, found = set(model.state_dict()), set(map(str, state))
    built_later = tuple(getattr(model, "SETUP_STATE_PREFIXES", ()))  # e.g. the online probe
    if built_later:
        absent = {k for k in found - expected if k.startswith(built_later)}
        found -= absent  # the model builds these in setup, from the data, and loads them then
    if expected and expected != found:
        fixed = getattr(model, "RESUME_FIXED", ())
        if saved_class == model_class and fixed:  # names the argument that shaped the state
            what = f"the checkpoint of step {data.get('global_step', '?')}"
            check_resumed_hyperparameters(model.hparams, hparams, fixed, what)
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise ConfigError(
            f"{option}: the checkpoint does not hold this model's state ({len(missing)} of its "
            f"tensors missing, e.g. {missing[:3]}; {len(extra)} unexpected, e.g. {extra[:3]}); "
            "check --config and --model.class_path"
        )


def checkpoint_candidates(folder: str | Path) -> list[str]:
    """The ``.ckpt`` files of a run's checkpoint folder, newest first, for messages."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [str(p) for p in files]
