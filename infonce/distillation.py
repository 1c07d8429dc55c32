"""Knowledge distillation with a temperature (Hinton et al., 2015)."""

import torch
import torch.nn.functional as F
from torch import Tensor

from infonce._checks import check_float_tensor, check_temperature

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
    a softmax, so a confident teacher (probabilities that round to 0) gives no nan.
    The teacher is not detached: pass ``teacher_logits.detach()`` for a fixed teacher.

    Args:
        student_logits: the student's logits, classes along the last dimension.
        teacher_logits: the teacher's, same shape.
        temperature: positive finite ``T`` (or a 0-d tensor, receiving its gradient).
        reduction: ``"batchmean"`` (sum over classes, mean over the other positions: the
            true KL per sample), ``"sum"``, or ``"none"`` (one value per position).

    Returns:
        The loss, float32 (float64 for float64 inputs): () or (*) for ``"none"``.

    Shape:
        student_logits (*, C), teacher_logits (*, C); output () or (*).

    Raises:
        ValueError: non-floating inputs, shapes that differ, no class dimension or C = 0, a
            bad temperature or reduction.

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
    temperature = check_temperature(temperature, allow_tensor=True)
    if reduction not in DISTILLATION_REDUCTIONS:
        raise ValueError(f"reduction must be one of {DISTILLATION_REDUCTIONS}, got {reduction!r}")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        if isinstance(temperature, Tensor):
            temperature = temperature.to(device=student_logits.device, dtype=dtype)
        log_p_student = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
        log_p_teacher = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
        p_teacher = log_p_teacher.exp()
        # where(): a class at -inf in both (a masked vocabulary) has p = 0 and adds 0, not nan
        terms = torch.where(p_teacher > 0, p_teacher * (log_p_teacher - log_p_student), 0.0)
        kl = terms.sum(dim=-1)  # (*)
        loss = kl * temperature**2
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / max(1, loss.numel())
