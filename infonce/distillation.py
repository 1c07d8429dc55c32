"""Knowledge distillation with a temperature (Hinton et al., 2015)."""

import torch
from torch import Tensor

from infonce._checks import (
    check_choice,
    check_float_tensor,
    check_same_device,
    check_temperature,
)
from infonce._numerics import compute_dtype, divide, shift_by_max, temperature_like

__all__ = ["distillation_loss"]

DISTILLATION_REDUCTIONS = ("batchmean", "sum", "none")


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float | Tensor,
    reduction: str = "batchmean",
) -> Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` over the last dimension.

    Hinton et al.'s soft-target loss. The ``T^2`` keeps the gradient's scale independent of
    ``T``: ``dL/d student = T (p_student - p_teacher)``, which for large ``T`` tends to
    ``(student - teacher - their mean difference) / C``, whatever ``T`` is; so the soft and
    hard losses can be mixed with one weight at any temperature. Computed from two
    ``log_softmax`` in float32 (float64 for float64 inputs) with autocast off, never as a log of
    a softmax, so a confident teacher (probabilities that round to 0) gives no nan; each row's
    maximum is subtracted before dividing by ``T`` (the same softmax), and the KL is summed
    from ``T log p = (x - max) - T lse((x - max) / T)``, so no finite logits overflow at any
    valid ``T``. The teacher is not detached: pass ``teacher_logits.detach()`` for a fixed
    teacher.

    Non-finite logits: a class at ``-inf`` in both teacher and student (a masked vocabulary)
    has teacher probability 0 and adds exactly 0 (and no gradient); a class at ``-inf`` in the
    student only, which the teacher gives probability, makes that row's loss ``+inf`` (the KL
    is infinite; the student's gradient stays ``T (p_student - p_teacher)``). A nan anywhere in
    a row, or a row of only ``-inf`` (no distribution), gives nan for that row, as torch's own
    losses propagate nan: never a finite value.

    Args:
        student_logits: the student's logits, classes along the last dimension.
        teacher_logits: the teacher's, same shape.
        temperature: positive finite ``T`` (or a 0-d tensor, receiving its gradient), normal in
            the compute dtype.
        reduction: ``"batchmean"`` (sum over classes, mean over the other positions: the
            true KL per sample), ``"sum"``, or ``"none"`` (one value per position).

    Returns:
        The loss, float32 (float64 for float64 inputs): () or (*) for ``"none"``.

    Shape:
        student_logits (*, C), teacher_logits (*, C); output () or (*).

    Raises:
        ValueError: non-floating inputs, shapes that differ, no class dimension or C = 0,
            inputs on two devices, a bad temperature or reduction.

    Examples:
        >>> loss = distillation_loss(student(x), teacher(x).detach(), temperature=4.0)
    """
    check_float_tensor(student_logits, "student_logits")
    check_float_tensor(teacher_logits, "teacher_logits")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits and teacher_logits must have one shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if student_logits.dim() < 1 or student_logits.shape[-1] < 1:
        raise ValueError(
            f"logits need a class dimension C >= 1, got shape {tuple(student_logits.shape)}"
        )
    check_same_device(teacher_logits, "teacher_logits", student_logits, "student_logits")
    dtype = compute_dtype(student_logits)
    temperature = check_temperature(temperature, allow_tensor=True, dtype=dtype)
    check_choice(reduction, "reduction", DISTILLATION_REDUCTIONS)
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        student, teacher = student_logits.to(dtype), teacher_logits.to(dtype)
        temperature = temperature_like(temperature, student)
        # T log p = (x - max) - T lse((x - max) / T): finite for finite logits at any T, even
        # where log p itself (about (x - max) / T) overflows; T^2 KL = T sum p_t (T log p_t -
        # T log p_s). A row with a nan, or of only -inf, is nan throughout.
        t_log_p_student, _ = _scaled_log_softmax(student, temperature)
        t_log_p_teacher, p_teacher = _scaled_log_softmax(teacher, temperature)
        # A class the teacher gives probability exactly 0 (-inf: masked) adds 0, also where
        # the student has -inf too (whose -inf - -inf would be nan); a nan is never masked.
        masked = t_log_p_teacher == -torch.inf
        log_ratio = torch.where(masked, 0.0, t_log_p_teacher - t_log_p_student)  # T log(pt/ps)
        terms = p_teacher * log_ratio  # (*, C); +inf where p_s = 0 < p_t
        # a teacher probability that underflowed to 0 where the student's is exactly 0: the KL
        # is still +inf (0 * inf would be nan)
        terms = torch.where((p_teacher == 0) & (log_ratio == torch.inf), torch.inf, terms)
        loss = terms.sum(dim=-1) * temperature  # (*) T^2 KL
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / max(1, loss.numel())


def _scaled_log_softmax(logits: Tensor, temperature: float | Tensor) -> tuple[Tensor, Tensor]:
    """``T * log_softmax(logits / T)`` and ``softmax(logits / T)`` over the last dimension.

    As ``(x - max) - T lse((x - max) / T)``: the log-sum-exp of entries <= 0 with one at 0 is
    finite, so nothing overflows for finite logits at any valid ``T``.

    Shape:
        logits (*, C); each output (*, C).
    """
    shifted, _ = shift_by_max(logits)  # (*, C) <= 0
    z = divide(shifted, temperature)  # (*, C)
    lse = torch.logsumexp(z, dim=-1, keepdim=True)  # (*, 1) in [0, log C]
    return shifted - temperature * lse, torch.exp(z - lse)
