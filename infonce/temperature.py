"""A learnable temperature, stored as CLIP stores it: the log of the scale ``1 / T``, clamped."""

import math

import torch
from torch import Tensor, nn

from infonce._checks import check_temperature


class LearnableTemperature(nn.Module):
    """A temperature ``T`` trained with the model: ``log(1 / T)`` is the parameter.

    CLIP (Radford et al., 2021) learns ``logit_scale = log(1 / T)`` from ``log(1 / 0.07)`` and
    clamps the scale at 100 (``T >= 0.01``); the log-scale makes steps multiplicative in
    ``T`` and keeps it positive. Calling the module returns ``T`` clamped to ``[min, max]``
    (no gradient flows through a clamped bound); :meth:`clamp_` projects the parameter itself
    back into range, as CLIP does after every optimizer step, so that momentum cannot carry it
    far past a bound where its gradient is zero. Exclude the parameter from weight decay,
    which would pull ``T`` towards 1.

    Args:
        init: the initial ``T``, within ``[min, max]``.
        min, max: the range of ``T`` (0 < min <= max).

    Shape:
        output () float32: ``T``, differentiable with respect to :attr:`log_scale`.

    Raises:
        ValueError: a bound or ``init`` that is not a positive finite number, ``min > max``,
            or ``init`` outside ``[min, max]``.

    Examples:
        >>> temperature = LearnableTemperature(init=0.07)
        >>> loss = info_nce(q, k, queue, temperature=temperature())
        >>> loss.backward(); optimizer.step(); temperature.clamp_()
    """

    def __init__(self, init: float = 0.07, min: float = 0.01, max: float = 1.0):
        super().__init__()
        init = check_temperature(init, "init")
        low, high = check_temperature(min, "min"), check_temperature(max, "max")
        if low > high:
            raise ValueError(f"min must be <= max, got min={low}, max={high}")
        if not low <= init <= high:
            raise ValueError(f"init must be within [min, max] = [{low}, {high}], got {init}")
        self.min, self.max = low, high
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init)))  # ()

    def forward(self) -> Tensor:
        scale = self.log_scale.clamp(math.log(1.0 / self.max), math.log(1.0 / self.min))
        return torch.exp(-scale)  # () T = 1 / exp(log_scale)

    @torch.no_grad()
    def clamp_(self) -> "LearnableTemperature":
        """Project ``log_scale`` into range in place (call after each optimizer step)."""
        self.log_scale.clamp_(math.log(1.0 / self.max), math.log(1.0 / self.min))
        return self

    def extra_repr(self) -> str:
        return f"T={float(self().detach()):.4g}, min={self.min}, max={self.max}"
