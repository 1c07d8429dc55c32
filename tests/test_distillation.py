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


INF, NAN = math.inf, math.nan


def _value_and_grads(student, teacher, T=2.0):
    s = torch.tensor(student, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(teacher, dtype=torch.float64, requires_grad=True)
    T = torch.tensor(T, dtype=torch.float64, requires_grad=True)
    loss = distillation_loss(s, t, T, "none")
    loss.sum().backward()
    return loss, s.grad, t.grad, T.grad


def test_a_class_masked_in_both_adds_exactly_zero_with_the_gradients_of_the_unmasked_loss():
    loss, ds, dt, dT = _value_and_grads([[1.0, 2.0, -INF]], [[0.5, 2.5, -INF]])
    ref, ref_ds, ref_dt, ref_dT = _value_and_grads([[1.0, 2.0]], [[0.5, 2.5]])
    torch.testing.assert_close(loss, ref, rtol=1e-14, atol=0)
    torch.testing.assert_close(ref, reference_kd(*_rows([[1.0, 2.0]], [[0.5, 2.5]]), 2.0))
    assert ds[0, 2] == 0 and dt[0, 2] == 0  # the masked class: no gradient, not nan
    torch.testing.assert_close(ds[:, :2], ref_ds, rtol=1e-14, atol=0)
    torch.testing.assert_close(dt[:, :2], ref_dt, rtol=1e-14, atol=0)  # was nan
    torch.testing.assert_close(dT, ref_dT, rtol=1e-13, atol=0)  # was nan: -inf / T


def _rows(student, teacher):
    return (torch.tensor(x, dtype=torch.float64) for x in (student, teacher))


def test_a_class_at_minus_inf_in_the_student_only_gives_inf_and_the_finite_student_gradient():
    """KL(p_t || p_s) is infinite where p_s = 0 < p_t; dL/ds = T (p_s - p_t) stays finite."""
    loss, ds, _, _ = _value_and_grads([[1.0, -INF, 3.0]], [[1.0, 1.0, 1.0]])
    assert loss.item() == INF
    p_s = torch.softmax(torch.tensor([1.0, -INF, 3.0], dtype=torch.float64) / 2.0, dim=0)
    torch.testing.assert_close(ds[0], 2.0 * (p_s - 1 / 3), rtol=1e-14, atol=1e-16)


def test_a_teacher_probability_that_underflows_against_a_student_zero_is_still_inf():
    """float32: the teacher's exp(-200) is 0, the student's class is -inf: 0 * inf, not nan."""
    s = torch.tensor([[0.0, -INF, 1.0]], requires_grad=True)
    loss = distillation_loss(s, torch.tensor([[0.0, -200.0, 1.0]]), 1.0, "none")
    assert loss.item() == INF
    loss.sum().backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize(
    "student, teacher",
    [
        ([[1.0, 2.0, 3.0]], [[NAN, 1.0, 1.0]]),  # counted as 0 before
        ([[1.0, 2.0, 3.0]], [[NAN, NAN, NAN]]),  # loss 0.0 with a nan gradient before
        ([[1.0, 2.0, 3.0]], [[-INF, -INF, -INF]]),  # no distribution: was 0
        ([[NAN, 2.0, 3.0]], [[1.0, 1.0, 1.0]]),
        ([[1.0, 2.0, -INF]], [[1.0, 1.0, NAN]]),  # a nan where the student is masked
    ],
)
def test_a_nan_or_an_all_minus_inf_row_gives_nan_never_a_finite_value(student, teacher):
    loss, ds, _, _ = _value_and_grads(student, teacher)
    assert torch.isnan(loss).all()
    assert torch.isnan(ds).all()  # nan propagates into the gradient too, as in torch's losses


def test_only_the_row_with_a_nan_is_nan():
    s, t = _logits(N=3, C=4)
    t[1, 2] = NAN
    loss = distillation_loss(s, t, 2.0, "none")
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()
    torch.testing.assert_close(loss[[0, 2]], reference_kd(s[[0, 2]], t[[0, 2]], 2.0))
    assert torch.isnan(distillation_loss(s, t, 2.0))  # batchmean: nan, not the other rows' mean


@pytest.mark.parametrize("T", [1e-30, 1e-37])
def test_a_tiny_valid_temperature_does_not_overflow_to_nan(T):
    """logits / T overflowed float32 (1e4 / 1e-30 = 1e34, fine; 1e10 / 1e-30 = inf: nan);
    (logits - max) / T never exceeds 0. Same logits in both: KL = 0 exactly."""
    s = torch.tensor([[1e10, 0.0, -1e10]])
    assert distillation_loss(s, s.clone(), T).item() == 0.0
    t = torch.tensor([[0.0, 1e10, -1e10]])  # the teacher's argmax is the student's second
    loss = distillation_loss(s, t, T, "none")  # T^2 KL = T^2 (1e10 / T) = 1e10 T, finite
    assert torch.isfinite(loss).all()
    assert loss.item() == pytest.approx(1e10 * T, rel=1e-6)


def test_a_subnormal_temperature_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=r"temperature must lie in \[1.175e-38, .*got 1e-40"):
        distillation_loss(torch.randn(2, 3), torch.randn(2, 3), 1e-40)
    s, t = _logits()  # float64: 1e-40 is a normal float64
    assert torch.isfinite(distillation_loss(s, t, 1e-40))
