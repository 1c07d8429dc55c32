"""clip_loss against OpenCLIP's ClipLoss written out and a loop over pairs, in float64."""

import math

import pytest
import torch
from references import reference_clip_loss, reference_clip_loss_per_pair
from torch import nn

from infonce import LearnableTemperature, clip_loss


def _pairs(N=6, D=5, seed=0, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(N, D, generator=g, dtype=dtype) * scale
    text = torch.randn(N, D, generator=g, dtype=dtype) * scale
    return image, text


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 2.0])
def test_clip_loss_equals_open_clips_formula_and_the_loop_in_float64(normalize, temperature):
    image, text = _pairs(scale=1.0 if normalize else 0.4)
    per_pair = reference_clip_loss_per_pair(image, text, temperature, normalize)  # (N,)
    mean = reference_clip_loss(image, text, temperature, normalize)
    torch.testing.assert_close(per_pair.mean(), mean, rtol=1e-12, atol=1e-12)  # the two agree
    for reduction, want in (("mean", mean), ("sum", per_pair.sum()), ("none", per_pair)):
        loss = clip_loss(image, text, temperature, reduction, normalize)
        assert loss.dtype == torch.float64 and loss.shape == want.shape
        torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)


def test_clip_loss_is_symmetric_in_image_and_text_and_zero_for_one_pair():
    image, text = _pairs()
    torch.testing.assert_close(clip_loss(image, text), clip_loss(text, image), rtol=1e-14, atol=0)
    assert clip_loss(image[:1], text[:1]).item() == 0.0  # a 1-way softmax


@pytest.mark.parametrize("normalize", [True, False])
def test_clip_loss_gradients_equal_open_clips_formula_including_the_temperature(normalize):
    image, text = (t.requires_grad_() for t in _pairs(scale=1.0 if normalize else 0.4))
    T = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    got = torch.autograd.grad(clip_loss(image, text, T, normalize=normalize), (image, text, T))
    want = torch.autograd.grad(reference_clip_loss(image, text, T, normalize), (image, text, T))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
def test_clip_loss_passes_gradcheck_with_a_tensor_temperature(normalize):
    image, text = (t.requires_grad_() for t in _pairs(N=4, D=3, scale=0.5))
    T = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)

    def loss(image, text, T):
        return clip_loss(image, text, T, "none", normalize)

    assert torch.autograd.gradcheck(loss, (image, text, T))


class _ClipCriterion(nn.Module):
    """clip_loss with a LearnableTemperature module as its temperature, as a model holds it."""

    def __init__(self):
        super().__init__()
        self.temperature = LearnableTemperature(init=0.2).double()

    def forward(self, image, text):
        return clip_loss(image, text, self.temperature, "none")


def test_clip_loss_passes_gradcheck_through_a_learnable_temperature_module():
    """The module is called inside clip_loss; functional_call makes its parameter an input."""
    criterion = _ClipCriterion()
    image, text = (t.requires_grad_() for t in _pairs(N=4, D=3))
    log_scale = criterion.temperature.log_scale.detach().clone().requires_grad_()

    def loss(image, text, log_scale):
        params = {"temperature.log_scale": log_scale}
        return torch.func.functional_call(criterion, params, (image, text))

    assert torch.autograd.gradcheck(loss, (image, text, log_scale))


def test_gradient_reaches_the_learnable_temperatures_parameter():
    """CLIP's learnable log-scale: dL/d(log_scale) = dL/dT * dT/d(log_scale) = -T dL/dT."""
    image, text = _pairs()
    temperature = LearnableTemperature(init=0.07).double()
    loss = clip_loss(image, text, temperature)
    loss.backward()
    T = torch.tensor(
        float(temperature().detach()), dtype=torch.float64, requires_grad=True
    )  # ~0.07
    (dT,) = torch.autograd.grad(reference_clip_loss(image, text, T, True), T)
    assert temperature.log_scale.grad is not None and temperature.log_scale.grad != 0
    torch.testing.assert_close(temperature.log_scale.grad, -T.detach() * dT, rtol=1e-12, atol=0)
    torch.testing.assert_close(loss, reference_clip_loss(image, text, T, True), rtol=1e-12, atol=0)


def test_a_float32_learnable_temperature_with_float64_inputs_computes_in_float64():
    image, text = _pairs()
    temperature = LearnableTemperature(init=0.1)  # a float32 parameter
    loss = clip_loss(image, text, temperature)
    assert loss.dtype == torch.float64
    loss.backward()
    assert temperature.log_scale.grad.dtype == torch.float32
    T = float(temperature().detach())  # T in float32, then used in float64
    torch.testing.assert_close(loss, reference_clip_loss(image, text, T, True), rtol=1e-12, atol=0)


def test_clip_loss_without_normalize_does_not_overflow_at_a_tiny_temperature():
    """Raw similarities s = [[2^30, 2^30 + 2^16], [2^30 + 2^16, 2^30]] at T = 2^-100: the
    logits (2^130) overflow float32; shifted by their maximum before the division, they do
    not. Each row and each column puts 2^16 / T more on the wrong pair: every loss is
    2^16 / T + log(1 + exp(-2^16 / T)) = 2^116, and the mean loss
    ``(s_01 + s_10 - s_00 - s_11) / (2T)`` has ``d/d image_0 = (text_1 - text_0) / (2T)``,
    all exact in float32."""
    c = 2.0**14
    image = torch.tensor([[2.0**16, 0.0], [0.0, 2.0**16]], requires_grad=True)
    text = torch.tensor([[c, c + 1], [c + 1, c]])  # s = image @ text.T
    loss = clip_loss(image, text, 2.0**-100, "none", normalize=False)
    assert loss.tolist() == [2.0**116, 2.0**116]
    clip_loss(image, text, 2.0**-100, normalize=False).backward()
    assert image.grad.tolist() == [[2.0**99, -(2.0**99)], [-(2.0**99), 2.0**99]]


def test_clip_loss_is_float32_under_bfloat16_autocast():
    image, text = _pairs(N=8, D=16, dtype=torch.float32)
    expected = clip_loss(image, text, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = clip_loss(image.bfloat16(), text.bfloat16(), 0.1)
        from_float32 = clip_loss(image, text, 0.1)  # autocast would run matmuls in bfloat16
    assert loss.dtype == from_float32.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), rel=2e-2)
    assert from_float32.item() == pytest.approx(expected.item(), rel=1e-6)


def test_gather_distributed_without_a_process_group_changes_nothing():
    image, text = _pairs()
    for reduction in ("mean", "sum", "none"):
        assert torch.equal(
            clip_loss(image, text, 0.2, reduction, gather_distributed=True),
            clip_loss(image, text, 0.2, reduction),
        )


class _ReturnsAList(nn.Module):
    def forward(self):
        return [0.1]


IMAGE, TEXT = torch.randn(4, 3), torch.randn(4, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image": None}, "image must be a torch.Tensor, got NoneType"),
        ({"text": TEXT.tolist()}, "text must be a torch.Tensor, got list"),
        ({"image": IMAGE[0]}, r"image must have 2 dimensions, got shape \(3,\)"),
        ({"text": TEXT[None]}, r"text must have 2 dimensions, got shape \(1, 4, 3\)"),
        ({"image": IMAGE.long()}, "image must be a floating-point tensor, got dtype torch.int64"),
        ({"text": TEXT.bool()}, "text must be a floating-point tensor, got dtype torch.bool"),
        ({"text": TEXT[:3]}, r"image and text must be .* one shape .*\(4, 3\) and \(3, 3\)"),
        ({"text": TEXT[:, :2]}, r"image and text must be .*\(4, 3\) and \(4, 2\)"),
        ({"image": IMAGE[:0], "text": TEXT[:0]}, r"image and text must be non-empty .*\(0, 3\)"),
        (
            {"text": torch.empty(4, 3, device="meta")},
            r"text must be on the device of image \(cpu\)",
        ),
        ({"temperature": 0.0}, "temperature must be a positive finite number, got 0.0"),
        ({"temperature": -0.1}, "temperature must be a positive finite number, got -0.1"),
        ({"temperature": math.nan}, "temperature must be a positive finite number, got nan"),
        ({"temperature": "0.1"}, "temperature must be a positive finite .*got '0.1'"),
        ({"temperature": 1e-45}, r"temperature must lie in \[1.175e-38"),
        ({"temperature": torch.tensor([0.1])}, r"temperature must be a 0-d floating.*\(1,\)"),
        ({"temperature": _ReturnsAList()}, r"temperature must be a positive .*got \[0.1\]"),
        ({"reduction": "avg"}, "reduction must be one of .*got 'avg'"),
        ({"reduction": None}, "reduction must be one of .*got None"),
        ({"normalize": "no"}, "normalize must be True or False, got 'no'"),
        ({"normalize": 1}, "normalize must be True or False, got 1"),
        ({"gather_distributed": None}, "gather_distributed must be True or False, got None"),
        ({"gather_distributed": "true"}, "gather_distributed must be True or False, got 'true'"),
    ],
    ids=lambda value: None if isinstance(value, dict) else "",
)
def test_bad_inputs_are_value_errors_naming_the_argument(kwargs, match):
    call = {"image": IMAGE, "text": TEXT, "temperature": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        clip_loss(**call)
