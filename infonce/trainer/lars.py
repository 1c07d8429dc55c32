"""LARS: SGD whose step is rescaled per layer by the ratio of weight to gradient norms.

Layer-wise adaptive rate scaling (You et al., 2017), in the form SimCLR, MoCo v3 and
solo-learn train with: for each parameter ``p`` with gradient ``g``,
``d = eta ||p|| / (||g|| + wd ||p|| + eps) * (g + wd p)`` where both norms are > 0, then SGD
momentum on ``d``. With ``clip_lr`` the trust ratio is capped so that the effective rate never
exceeds ``lr`` (LARC's clipping: ``min(trust / lr, 1)``); parameter groups with
``exclude_from_lars`` (biases and normalisation weights) take plain SGD steps, as SimCLR does.
"""

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["LARS"]


class LARS(Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling; see the module docstring.

    Args:
        params: parameters or groups; a group with ``exclude_from_lars=True`` is not scaled.
        lr: learning rate (> 0).
        momentum: SGD momentum in [0, 1).
        weight_decay: L2 penalty (>= 0), added to the gradient before the scaling.
        eta: trust coefficient (> 0); 0.02 in solo-learn's CIFAR recipes, 0.001 in the paper.
        eps: added to the denominator.
        clip_lr: cap the trust ratio at ``lr`` (LARC).

    Raises:
        ValueError: an argument out of range, naming it.

    Examples:
        >>> optimizer = LARS(model.parameters(), lr=0.3, momentum=0.9, eta=0.02, clip_lr=True)
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        eps: float = 1e-8,
        clip_lr: bool = True,
    ):
        for name, value, ok in (
            ("lr", lr, lr > 0),
            ("momentum", momentum, 0 <= momentum < 1),
            ("weight_decay", weight_decay, weight_decay >= 0),
            ("eta", eta, eta > 0),
            ("eps", eps, eps >= 0),
        ):
            if not ok:
                raise ValueError(f"LARS {name} out of range, got {value!r}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, eps=eps,
                        clip_lr=clip_lr, exclude_from_lars=False)  # fmt: skip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not group["exclude_from_lars"]:
                    d = self._scaled(p, d, group)
                elif wd:
                    d = d.add(p, alpha=wd)
                if momentum:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.detach().clone()
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(d)
                    d = state["momentum_buffer"]
                p.add_(d, alpha=-lr)
        return loss

    @staticmethod
    def _scaled(p: Tensor, g: Tensor, group: dict) -> Tensor:
        """``trust * (g + wd p)`` where both norms are > 0, else ``g`` unchanged (solo-learn's
        rule: a zero weight or gradient takes a plain step); computed without host syncs."""
        wd = group["weight_decay"]
        p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
        trust = group["eta"] * p_norm / (g_norm + wd * p_norm + group["eps"])
        if group["clip_lr"]:
            trust = torch.clamp(trust / group["lr"], max=1.0)
        scaled = g.add(p, alpha=wd) * trust
        return torch.where((p_norm > 0) & (g_norm > 0), scaled, g)
