"""Momentum (EMA) update of a target network, as MoCo's key encoder and BYOL's target use."""

import math

import torch
from torch import nn

from infonce._checks import check_int, check_unit_interval

__all__ = ["cosine_momentum", "momentum_update"]


def _check_momentum(m: float) -> float:
    return check_unit_interval(m, "m")


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, m: float) -> None:
    """In-place EMA ``target = m * target + (1 - m) * online`` over parameters; buffers copied.

    Runs under ``torch.no_grad()``: the target never enters the autograd graph. ``m = 1``
    leaves the target's parameters unchanged, ``m = 0`` copies the online parameters exactly.
    Buffers (BatchNorm running statistics) are copied from ``online``, so the target can be
    evaluated with sensible statistics; MoCo's own code averages the parameters only (its key
    encoder runs in training mode, where BatchNorm reads batch statistics, never these).

    Args:
        online: the network trained by gradient descent (MoCo's query encoder).
        target: a network of the same architecture (MoCo's momentum/key encoder).
        m: momentum in [0, 1].

    Raises:
        ValueError: ``online`` or ``target`` not an ``nn.Module``, ``m`` not a number in
            [0, 1] (NaN included), or the two networks' parameters or buffers differ in names,
            shapes or devices.
    """
    for module, name in ((online, "online"), (target, "target")):
        if not isinstance(module, nn.Module):
            raise ValueError(f"{name} must be an nn.Module, got {type(module).__name__}")
    m = _check_momentum(m)
    online_params = dict(online.named_parameters())
    target_params = dict(target.named_parameters())
    _check_same_layout(online_params, target_params, "parameters")
    online_buffers = dict(online.named_buffers())
    target_buffers = dict(target.named_buffers())
    _check_same_layout(online_buffers, target_buffers, "buffers")

    names = list(target_params)
    t = [target_params[n] for n in names]
    o = [online_params[n].to(target_params[n].dtype) for n in names]
    if t:
        torch._foreach_mul_(t, m)
        torch._foreach_add_(t, o, alpha=1.0 - m)
    groups: dict[tuple, tuple[list, list]] = {}  # (device, dtype) -> (targets, sources)
    for name, buffer in target_buffers.items():
        targets, sources = groups.setdefault((buffer.device, buffer.dtype), ([], []))
        targets.append(buffer)
        sources.append(online_buffers[name])
    for targets, sources in groups.values():  # a GPU's fast foreach path wants one dtype
        torch._foreach_copy_(targets, sources)


def _check_same_layout(online: dict, target: dict, kind: str) -> None:
    if online.keys() != target.keys():
        diff = sorted(online.keys() ^ target.keys())[:5]
        raise ValueError(f"online and target {kind} differ in names, e.g. {diff}")
    for name, tensor in online.items():
        if tensor.shape != target[name].shape:
            raise ValueError(
                f"online and target {kind} differ in shape at {name!r}: "
                f"{tuple(tensor.shape)} vs {tuple(target[name].shape)}"
            )
        if tensor.device != target[name].device:
            raise ValueError(
                f"online and target {kind} differ in device at {name!r}: "
                f"{tensor.device} vs {target[name].device}"
            )


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """Momentum ramped from ``base`` at step 0 to 1 at ``total_steps`` on a half cosine (BYOL).

    ``m(step) = 1 - (1 - base) * (cos(pi * step / total_steps) + 1) / 2``; steps past the end
    give 1.

    Raises:
        ValueError: ``base`` not a number in [0, 1], ``total_steps`` not an integer >= 1 or
            ``step`` not an integer >= 0 (a bool is neither).
    """
    base = check_unit_interval(base, "base")
    check_int(step, "step", minimum=0)
    check_int(total_steps, "total_steps")
    progress = min(step / total_steps, 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
