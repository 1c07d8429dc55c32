"""The learning-rate schedules against the code of their sources, LARS against solo-learn's step,
and the heads against the modules their sources build."""

import math

import pytest
import torch
from torch import nn

from infonce.trainer.heads import moco_v3_mlp, projection_head, simclr_projector
from infonce.trainer.lars import LARS
from infonce.trainer.schedules import lr_factor, temperature_at


def test_cosine_annealing_per_epoch_is_torchs_cosine_annealing_lr_stepped_each_epoch():
    """lightly's benchmarks: CosineAnnealingLR(T_max=epochs), scheduler.step() per epoch."""
    epochs, per_epoch = 7, 5
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    for epoch in range(epochs):
        for step in range(epoch * per_epoch, (epoch + 1) * per_epoch):
            got = lr_factor(step, epochs * per_epoch, per_epoch, 0, "cosine_annealing_per_epoch")
            assert got == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-12), step
        optimizer.step()
        scheduler.step()


def test_cosine_per_epoch_is_the_moco_demos_adjust_learning_rate():
    """The demo trains epochs 1..E and sets lr * 0.5 (1 + cos(pi epoch / E)) before each."""
    epochs, per_epoch = 6, 4
    for step in range(epochs * per_epoch):
        epoch = step // per_epoch + 1
        demo = 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        assert lr_factor(step, epochs * per_epoch, per_epoch, 0, "cosine_per_epoch") == demo
    last = epochs * per_epoch - 1
    assert lr_factor(last, epochs * per_epoch, per_epoch, 0, "cosine_per_epoch") == 0


def test_cosine_with_warmup_is_linear_then_a_per_step_cosine_to_zero():
    total, warmup = 100, 10
    factors = [lr_factor(s, total, 10, warmup, "cosine") for s in range(total)]
    assert factors[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert factors[warmup] == 1.0
    for s in range(warmup, total):
        expected = 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
        assert factors[s] == pytest.approx(expected, abs=1e-12)
    assert lr_factor(5, 10, 2, 0, "constant") == 1.0


def test_cosine_temperature_is_kukleva_et_als_schedule():
    """T = min + (max - min)(1 + cos(2 pi t / P)) / 2, t in epochs, moving every step."""
    at = lambda step: temperature_at(0.2, "cosine", step, 10, 0.1, 1.0, 4.0)  # noqa: E731
    assert at(0) == 1.0  # max at the start
    assert at(20) == pytest.approx(0.1, abs=1e-15)  # half a period (2 epochs of 10 steps): min
    assert at(40) == pytest.approx(1.0) and at(80) == pytest.approx(1.0)  # every period
    assert at(10) == pytest.approx(0.55)  # a quarter: the middle
    for step in range(0, 81, 3):  # the paper's formula, step by step
        expected = 0.1 + 0.5 * 0.9 * (1 + math.cos(2 * math.pi * (step / 10) / 4.0))
        assert at(step) == pytest.approx(expected, abs=1e-15)
    assert at(1) < at(0)  # within an epoch too
    assert temperature_at(0.2, "constant", 17, 10, 0.1, 1.0, 4.0) == 0.2
    with pytest.raises(ValueError, match="temperature_schedule must be one of"):
        temperature_at(0.2, "linear", 0, 10, 0.1, 1.0, 4.0)


def test_an_unknown_schedule_is_refused_by_name():
    with pytest.raises(ValueError, match="lr_schedule must be one of .* got 'step'"):
        lr_factor(0, 10, 2, 0, "step")


def solo_learn_lars_step(params, lr, momentum, wd, eta, eps, clip_lr, exclude, buffers):
    """solo-learn's ``solo/utils/lars.py`` step, as a loop (dampening 0, no Nesterov)."""
    for i, p in enumerate(params):
        d = p.grad.clone()
        p_norm, g_norm = torch.norm(p), torch.norm(p.grad)
        if not (p.ndim == 1 and exclude) and p_norm != 0 and g_norm != 0:
            trust = eta * p_norm / (g_norm + p_norm * wd + eps)
            if clip_lr:
                trust = min(trust / lr, 1)
            d = (d + wd * p) * trust
        buffers[i] = d.clone() if buffers[i] is None else buffers[i] * momentum + d
        p.data -= lr * buffers[i]


@pytest.mark.parametrize("clip_lr", [True, False])
def test_lars_takes_solo_learns_steps_with_biases_and_norms_excluded(clip_lr):
    torch.manual_seed(0)
    weight, bias = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    ours = [nn.Parameter(weight.clone()), nn.Parameter(bias.clone())]
    theirs = [weight.clone(), bias.clone()]
    optimizer = LARS(
        # the trainer gives the excluded group no weight decay: solo-learn adds none to it
        [{"params": [ours[0]]},
         {"params": [ours[1]], "exclude_from_lars": True, "weight_decay": 0}],
        lr=0.3, momentum=0.9, weight_decay=1e-4, eta=0.02, clip_lr=clip_lr,
    )  # fmt: skip
    buffers = [None, None]
    for step in range(4):
        grads = [torch.randn(4, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
        for p, g in zip(ours, grads, strict=True):
            p.grad = g.clone()
        for p, g in zip(theirs, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        solo_learn_lars_step(theirs, 0.3, 0.9, 1e-4, 0.02, 1e-8, clip_lr, True, buffers)
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a.data, b, rtol=1e-12, atol=1e-14), step


def test_lars_refuses_a_bad_argument_by_name():
    with pytest.raises(ValueError, match="eta"):
        LARS([nn.Parameter(torch.zeros(2))], lr=0.1, eta=0.0)


def test_simclr_projector_is_lightlys_simclr_projection_head():
    """lightly: Linear(bias=False)-BN-ReLU-Linear(bias=False)-BN, both BN with affine."""
    head = simclr_projector(512, 512, 128)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert head[0].bias is None and head[3].bias is None and head[4].affine
    plain = simclr_projector(8, 16, 4, layers=3, batch_norm=False)
    assert [type(m).__name__ for m in plain] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert all(m.bias is not None for m in plain if isinstance(m, nn.Linear))


def test_moco_v3_mlp_is_the_builders_build_mlp():
    """moco-v3: Linear(bias=False) [BN, ReLU] ... and the projector's last BN without affine."""
    projector = moco_v3_mlp(512, 4096, 256, 2, last_bn=True)
    kinds = [type(m).__name__ for m in projector]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert not projector[4].affine and all(m.bias is None for m in projector[::3])
    predictor = moco_v3_mlp(256, 4096, 256, 2, last_bn=False)
    assert [type(m).__name__ for m in predictor] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]


def test_projection_heads_of_moco_and_supcon():
    assert isinstance(projection_head(512, 128, "linear"), nn.Linear)
    mlp = projection_head(512, 256, "mlp", hidden_dim=2048)  # solo-learn's SupCon projector
    assert [m.weight.shape for m in mlp if isinstance(m, nn.Linear)] == [(2048, 512), (256, 2048)]
    with pytest.raises(ValueError, match="head must be 'linear' or 'mlp', got 'deep'"):
        projection_head(512, 128, "deep")
