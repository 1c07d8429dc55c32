"""LearnableTemperature, and a tensor temperature through every InfoNCE entry point."""

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from infonce import (
    InfoNCE,
    LearnableTemperature,
    chunked_info_nce,
    info_nce,
    info_nce_stats,
    softmax_with_temperature,
)


def test_learnable_temperature_stores_log_inverse_and_returns_t():
    t = LearnableTemperature(init=0.07)
    assert t.log_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert t().dim() == 0 and t().item() == pytest.approx(0.07)
    assert [n for n, _ in t.named_parameters()] == ["log_scale"]
    assert "log_scale" in t.state_dict()


def test_forward_is_unclamped_and_clamp_projects_the_parameter_into_range():
    t = LearnableTemperature(init=0.5, min=0.1, max=1.0)
    with torch.no_grad():
        t.log_scale.fill_(math.log(1 / 0.001))  # T = 0.001, below min (as after a big step)
    assert t().item() == pytest.approx(0.001)  # as CLIP: forward does not clamp
    t().backward()
    assert t.log_scale.grad.item() == pytest.approx(-0.001)  # dT/dlog_scale = -T: it flows
    t.clamp_()
    assert t.log_scale.item() == pytest.approx(math.log(1 / 0.1))
    with torch.no_grad():
        t.log_scale.fill_(-5.0)  # T = e^5, above max
    assert t.clamp_()().item() == pytest.approx(1.0)


@pytest.mark.parametrize("bound", ["min", "max"])
def test_a_temperature_on_a_bound_still_gets_a_gradient_and_leaves_it(bound):
    """init == min (max): a loss that wants T larger (smaller) moves it off the bound. A clamp
    in forward had a zero gradient there: T stayed on the bound for ever."""
    t = LearnableTemperature(init=0.1 if bound == "min" else 1.0, min=0.1, max=1.0)
    direction = -1.0 if bound == "min" else 1.0  # loss = -T wants T up, +T wants it down
    optimizer = torch.optim.SGD(t.parameters(), lr=0.5)
    (direction * t()).backward()
    assert t.log_scale.grad.item() != 0.0
    optimizer.step()
    t.clamp_()
    assert 0.1 < t().item() < 1.0


@pytest.mark.parametrize("bound", ["min", "max"])
def test_clamp_keeps_a_temperature_pulled_outward_on_its_bound(bound):
    t = LearnableTemperature(init=0.1 if bound == "min" else 1.0, min=0.1, max=1.0)
    direction = 1.0 if bound == "min" else -1.0  # loss = T pulls T below min, -T above max
    optimizer = torch.optim.SGD(t.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        (direction * t()).backward()
        optimizer.step()
        assert not 0.1 <= t().item() <= 1.0  # outside until projected
        t.clamp_()
        assert t().item() == pytest.approx(0.1 if bound == "min" else 1.0, rel=1e-6)


def test_learnable_temperature_follows_clips_logit_scale_step_by_step_in_float64():
    """CLIP's convention: a parameter logit_scale = log(1 / T), exp() in forward, clamped to
    [0, log 100] after each step. A loss linear in the scale first drives T onto its lower
    bound 0.01 (and keeps pushing), then pulls it back up: ours matches at every step."""
    ours = LearnableTemperature(init=0.07, min=0.01, max=1.0).double()
    logit_scale = torch.nn.Parameter(ours.log_scale.detach().clone())  # CLIP's, same start
    ours_sgd = torch.optim.SGD(ours.parameters(), lr=0.03)
    clip_sgd = torch.optim.SGD([logit_scale], lr=0.03)
    on_bound = 0
    for step in range(10):
        c = -1.0 if step < 6 else 0.05  # loss = c / T: wants T down, then up
        ours_sgd.zero_grad()
        clip_sgd.zero_grad()
        (c / ours()).backward()
        (c * logit_scale.exp()).backward()
        ours_sgd.step()
        clip_sgd.step()
        ours.clamp_()
        with torch.no_grad():
            logit_scale.clamp_(0, math.log(100))
        assert ours.log_scale.item() == pytest.approx(logit_scale.item(), rel=1e-13, abs=1e-15)
        assert ours().item() == pytest.approx(1 / logit_scale.exp().item(), rel=1e-13)
        on_bound += ours().item() == pytest.approx(0.01, rel=1e-12)
    assert on_bound >= 3  # it sat on the bound for several steps
    assert ours().item() > 0.015  # and left it


def test_learnable_temperature_gradient_is_dl_dt_times_minus_t():
    t = LearnableTemperature(init=0.2)
    t().backward()  # dT/dlog_scale = -T
    assert t.log_scale.grad.item() == pytest.approx(-0.2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"init": 0.0}, "init must be a positive finite number"),
        ({"init": 2.0}, r"init must be within \[min, max\] = \[0.01, 1.0\], got 2.0"),
        ({"min": 0.5, "max": 0.1}, "min must be <= max"),
        ({"max": float("inf")}, "max must be a positive finite number"),
    ],
)
def test_learnable_temperature_rejects_bad_bounds_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LearnableTemperature(**kwargs)


def _inputs(K=9, N=4, D=5):
    g = torch.Generator().manual_seed(1)
    q, k, n = (torch.randn(rows, D, generator=g, dtype=torch.float64) for rows in (N, N, K))
    return q, k, n


def _reference_dl_dt(q, k, n, T):
    """dL/dT of the mean loss from the closed form (l+ - E_p[l]) / T^2, per query, float64."""
    q, k, n = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(n, dim=1)
    out = []
    for i in range(q.shape[0]):
        logits = [float(q[i] @ k[i])] + [float(q[i] @ v) for v in n]
        w = [math.exp(s / T) for s in logits]
        mean = sum(wi * si for wi, si in zip(w, logits, strict=True)) / sum(w)
        out.append((logits[0] - mean) / T**2)
    return sum(out) / len(out)


@pytest.mark.parametrize("path", ["info_nce_small_k", "info_nce_chunked", "chunked", "stats"])
def test_tensor_temperature_gets_the_closed_form_gradient(path, monkeypatch):
    q, k, n = _inputs()
    T = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    if path == "info_nce_chunked":
        monkeypatch.setattr(sys.modules["infonce.info_nce"], "CHUNKED_FROM", 1)
    loss = {
        "info_nce_small_k": lambda: info_nce(q, k, n, T),
        "info_nce_chunked": lambda: info_nce(q, k, n, T),
        "chunked": lambda: chunked_info_nce(q, k, n, T, chunk_size=4),
        "stats": lambda: info_nce_stats(q, k, n, T).loss.mean(),
    }[path]()
    assert loss.item() == pytest.approx(info_nce(q, k, n, 0.3).item(), rel=1e-12)
    (grad,) = torch.autograd.grad(loss, T)
    assert grad.item() == pytest.approx(_reference_dl_dt(q, k, n, 0.3), rel=1e-10)


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_chunked_dl_dt_passes_gradcheck_and_gradgradcheck(chunk_size):
    q, k, n = (x.requires_grad_() for x in _inputs())
    T = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)

    def f(q, k, n, T):
        return chunked_info_nce(q, k, n, T, reduction="none", chunk_size=chunk_size)

    assert torch.autograd.gradcheck(f, (q, k, n, T))
    assert torch.autograd.gradgradcheck(f, (q, k, n, T))
    assert torch.autograd.gradcheck(lambda T: f(q.detach(), k.detach(), n.detach(), T), (T,))


def test_small_temperature_tensor_stays_finite_on_the_chunked_path():
    q, k, n = (x.float() for x in _inputs(K=300))
    T = torch.tensor(0.001, requires_grad=True)  # logits up to 1,000: the running max is needed
    loss = chunked_info_nce(q * 50, k, n, T)
    expected = info_nce(
        q.double(),
        k.double(),
        n.double(),
        0.001,
    )
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item(), rel=1e-4)
    loss.backward()
    assert torch.isfinite(T.grad)


def test_info_nce_module_takes_a_learnable_temperature_as_a_submodule():
    q, k, n = _inputs()
    temperature = LearnableTemperature(init=0.2)
    criterion = InfoNCE(temperature=temperature).double()
    assert list(criterion.state_dict()) == ["temperature.log_scale"]
    loss = criterion(q, k, n)
    loss.backward()
    T = temperature().item()  # 0.2 up to the float64 rounding of log(1 / 0.2)
    expected = -T * _reference_dl_dt(q, k, n, T)  # dL/dlog_scale = dL/dT * -T
    assert temperature.log_scale.grad.item() == pytest.approx(expected, rel=1e-8)


def test_softmax_with_temperature_takes_a_tensor_temperature():
    logits = torch.tensor([1.0, 5.0, 7.0, 10.0], dtype=torch.float64)
    T = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    p = softmax_with_temperature(logits, T)
    torch.testing.assert_close(p, torch.softmax(logits / 2.0, dim=0))
    assert torch.autograd.gradcheck(lambda T: softmax_with_temperature(logits, T), (T,))


@pytest.mark.parametrize(
    "temperature, match",
    [
        (torch.tensor([0.1]), r"temperature must be a 0-d floating-point tensor, got shape \(1,\)"),
        (torch.tensor(1), "temperature must be a 0-d floating-point tensor"),
        (torch.tensor(-0.1), r"temperature must be a positive finite number, got tensor\(-0.1"),
        (torch.tensor(float("nan")), "temperature must be a positive finite number"),
        (  # subnormal in float64, the compute dtype of the float64 inputs
            torch.tensor(1e-310, dtype=torch.float64),
            r"temperature must lie in \[2.225e-308, .*float64.*got tensor\(1e-310\)",
        ),
    ],
)
def test_bad_tensor_temperatures_are_value_errors(temperature, match):
    q, k, n = _inputs()
    for call in (lambda: info_nce(q, k, n, temperature),
                 lambda: chunked_info_nce(q, k, n, temperature)):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            call()
