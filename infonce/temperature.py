"""A learnable temperature, stored as CLIP stores it: the log of the scale ``1 / T``, clamped."""

import math

import torch
from torch import Tensor, nn

from infonce._checks import check_temperature

__all__ = ["LearnableTemperature"]


class LearnableTemperature(nn.Module):
    """A temperature ``T`` trained with the model: ``log(1 / T)`` is the parameter.

    CLIP (Radford et al., 2021) learns ``logit_scale = log(1 / T)`` from ``log(1 / 0.07)`` and
    clamps the scale at 100 (``T >= 0.01``); the log-scale makes steps multiplicative in
    ``T`` and keeps it positive. As in CLIP and OpenCLIP, calling the module returns
    ``T = exp(-log_scale)`` unclamped, so the gradient always flows, also on a bound; the range
    ``[min, max]`` is kept by :meth:`clamp_`, which projects the parameter itself back into
    range and must be called after every optimizer step (as CLIP clamps ``logit_scale``).
    A clamp inside ``forward`` would instead have a zero gradient on the bound, and ``T``,
    once there, could never come back. Between an optimizer step and :meth:`clamp_`, ``T`` may
    lie outside ``[min, max]``. Exclude the parameter from weight decay, which would pull
    ``T`` towards 1.

    Args:
        init: the initial ``T``, within ``[min, max]``.
        min, max: the range of ``T`` (0 < min <= max).

    Shape:
        output () in the parameter's dtype (float32 by default): ``T``, differentiable with
        respect to :attr:`log_scale`.

    Raises:
        ValueError: a bound or ``init`` that is not a positive finite number (normal in the
            default dtype), ``min > max``, or ``init`` outside ``[min, max]``.

    Examples:
        >>> temperature = LearnableTemperature(init=0.07)
        >>> loss = info_nce(q, k, queue, temperature=temperature())
        >>> loss.backward(); optimizer.step(); temperature.clamp_()
    """

    def __init__(self, init: float = 0.07, min: float = 0.01, max: float = 1.0):
        super().__init__()
        dtype = torch.get_default_dtype()  # the parameter's
        init = check_temperature(init, "init", dtype=dtype)
        low = check_temperature(min, "min", dtype=dtype)
        high = check_temperature(max, "max", dtype=dtype)
        if low > high:
            raise ValueError(f"min must be <= max, got min={low}, max={high}")
        if not low <= init <= high:
            raise ValueError(f"init must be within [min, max] = [{low}, {high}], got {init}")
        self.min, self.max = low, high
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init)))  # ()

    def forward(self) -> Tensor:
        return torch.exp(-self.log_scale)  # () T = 1 / exp(log_scale), unclamped (see clamp_)

    @torch.no_grad()
    def clamp_(self) -> "LearnableTemperature":
        """Project ``log_scale`` into ``[log(1 / max), log(1 / min)]`` in place, so that ``T`` is in
        ``[min, max]``; call it after each optimizer step."""
        self.log_scale.clamp_(math.log(1.0 / self.max), math.log(1.0 / self.min))
        return self

    def extra_repr(self) -> str:
        return f"T={float(self().detach()):.4g}, min={self.min}, max={self.max}"
