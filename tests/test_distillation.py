"""distillation_loss against Hinton et al.'s formula written as a loop, in float64."""

import math

import pytest
import torch

from infonce import distillation_loss


def reference_kd(student, teacher, T):
    """T^2 * sum_c p_t,c (log p_t,c - log p_s,c) per row, from explicit softmaxes."""
    out = []
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        zs = sum(math.exp(v / T) for v in s_row)
        zt = sum(math.exp(v / T) for v in t_row)
        kl = 0.0
        for s, t in zip(s_row, t_row, strict=True):
            pt, ps = math.exp(t / T) / zt, math.exp(s / T) / zs
            kl += pt * (math.log(pt) - math.log(ps))
        out.append(T * T * kl)
    return torch.tensor(out, dtype=torch.float64)


def _logits(N=5, C=7, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, C, generator=g, dtype=torch.float64) * scale for _ in range(2))


@pytest.mark.parametrize("T", [0.5, 1.0, 4.0, 20.0])
def test_distillation_equals_the_loop_reference(T):
    s, t = _logits()
    expected = reference_kd(s, t, T)
    torch.testing.assert_close(distillation_loss(s, t, T, "none"), expected, rtol=1e-12, atol=1e-14)
    assert distillation_loss(s, t, T).item() == pytest.approx(expected.mean().item(), rel=1e-12)
    assert distillation_loss(s, t, T, "sum").item() == pytest.approx(expected.sum().item())


def test_batchmean_equals_torch_kl_div_batchmean_times_t_squared():
    s, t = _logits()
    T = 3.0
    kl = torch.nn.functional.kl_div(
        torch.log_softmax(s / T, 1), torch.log_softmax(t / T, 1), reduction="batchmean",
        log_target=True,
    )  # fmt: skip
    assert distillation_loss(s, t, T).item() == pytest.approx(kl.item() * T * T, rel=1e-12)


def test_gradcheck_for_student_teacher_and_a_tensor_temperature():
    s, t = (x.requires_grad_() for x in _logits(N=3, C=4))
    T = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, t, T: distillation_loss(s, t, T, "none"), (s, t, T))


def test_gradient_scale_is_independent_of_t_to_first_order():
    """dL/ds = T (p_s - p_t) -> (s - t - mean(s - t)) / (N C) at high T, whatever T is."""
    s, t = _logits(scale=1.0)
    s.requires_grad_()
    N, C = s.shape
    d = (s - t).detach()
    limit = (d - d.mean(dim=1, keepdim=True)) / (N * C)
    grads = {}
    for T in (10.0, 100.0, 1000.0):
        (grads[T],) = torch.autograd.grad(distillation_loss(s, t, T), s)
    for T in (100.0, 1000.0):  # error O(1/T)
        torch.testing.assert_close(grads[T], limit, rtol=5.0 / T, atol=0)
    norms = [grads[T].norm().item() for T in (10.0, 100.0, 1000.0)]
    assert max(norms) / min(norms) < 1.1  # without T^2 it would shrink 10,000-fold
    (no_t2,) = torch.autograd.grad(distillation_loss(s, t, 100.0) / 100.0**2, s)
    assert no_t2.norm().item() < 1e-3 * norms[1]


def test_a_one_hot_teacher_gives_no_nan():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.full((4, 5), -1e4)
    t[:, 0] = 1e4  # softmax underflows to exact zeros
    loss = distillation_loss(s, t, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_leading_dimensions_are_kept_by_none_and_averaged_by_batchmean():
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    per_position = distillation_loss(s, t, 2.0, "none")
    assert per_position.shape == (2, 3)
    assert distillation_loss(s, t, 2.0).item() == pytest.approx(per_position.mean().item())


def test_float32_under_bfloat16_autocast():
    s, t = (x.float() for x in _logits())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = distillation_loss(s.bfloat16(), t.bfloat16(), 2.0)
    assert loss.dtype == torch.float32


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.randn(3, 4), torch.randn(3, 5), 1.0), r"one shape, got \(3, 4\) and \(3, 5\)"),
        ((torch.randn(3, 4), torch.randn(3, 4), -1.0), "temperature must be a positive"),
        ((torch.randn(3, 4), torch.randint(0, 3, (3, 4)), 1.0), "teacher_logits must be a float"),
        ((torch.randn(3, 4), torch.randn(3, 4), 1.0, "mean"), "reduction must be one of"),
    ],
)
def test_bad_inputs_are_value_errors_naming_them(args, match):
    with pytest.raises(ValueError, match=match):
        distillation_loss(*args)


def test_a_class_masked_in_both_adds_nothing_instead_of_nan():
    s = torch.tensor([[1.0, 2.0, -torch.inf]], requires_grad=True)
    t = torch.tensor([[0.5, 2.5, -torch.inf]])
    loss = distillation_loss(s, t, 2.0)
    expected = distillation_loss(s[:, :2].detach(), t[:, :2], 2.0)
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert torch.isfinite(s.grad[:, :2]).all()
