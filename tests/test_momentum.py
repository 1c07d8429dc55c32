import math

import pytest
import torch
from torch import nn

from infonce import cosine_momentum, momentum_update


def pair(seed=0):
    torch.manual_seed(seed)
    online = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    torch.manual_seed(seed + 1)
    target = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    for p in target.parameters():
        p.requires_grad_(False)
    online.train()(torch.randn(8, 4))  # give online non-trivial running stats
    return online, target


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_momentum_update_is_the_ema_formula():
    online, target = pair()
    before_t, before_o = params(target), params(online)
    momentum_update(online, target, 0.9)
    for t0, o, t in zip(before_t, before_o, target.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * t0 + 0.1 * o)
    assert torch.equal(target[1].running_mean, online[1].running_mean)  # buffers copied


def test_momentum_one_leaves_target_unchanged():
    online, target = pair()
    before = params(target)
    momentum_update(online, target, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, target.parameters(), strict=True))


def test_momentum_zero_copies_exactly():
    online, target = pair()
    with torch.no_grad():
        online[0].weight.mul_(1e8)
    momentum_update(online, target, 0.0)
    assert all(
        torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters(), strict=True)
    )


def test_target_never_receives_gradients():
    online, target = pair()
    for p in target.parameters():
        p.requires_grad_(True)  # even when the user forgot to freeze it
    momentum_update(online, target, 0.5)
    assert all(p.grad_fn is None for p in target.parameters())
    x = torch.randn(8, 4)
    online(x).sum().backward()
    assert all(p.grad is None for p in target.parameters())
    assert all(p.grad is not None for p in online.parameters())


@pytest.mark.parametrize("m", [-0.1, 1.0001, math.nan, "0.9", None])
def test_momentum_outside_unit_interval_is_rejected(m):
    online, target = pair()
    with pytest.raises(ValueError, match=r"m must be a number in \[0, 1\]"):
        momentum_update(online, target, m)


def test_networks_of_different_shape_are_rejected():
    with pytest.raises(ValueError, match=r"differ in shape at '0.weight': \(3, 4\) vs \(2, 4\)"):
        momentum_update(nn.Sequential(nn.Linear(4, 3)), nn.Sequential(nn.Linear(4, 2)), 0.9)
    with pytest.raises(ValueError, match="differ in names"):
        momentum_update(nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 3)), 0.9)


def test_cosine_momentum_ramps_from_base_to_one():
    assert cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 100, 100) == 1.0
    assert cosine_momentum(0.99, 150, 100) == 1.0
    with pytest.raises(ValueError, match="total_steps"):
        cosine_momentum(0.99, 0, 0)
