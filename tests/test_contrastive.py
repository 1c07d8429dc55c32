"""nt_xent and supcon against loops written from the papers' formulas, in float64."""

import math

import pytest
import torch
from references import reference_decoupled_nt_xent

from infonce import nt_xent, supcon


def _unit(v):
    return v / v.norm()


def reference_supcon(features, labels, T, queue=None, queue_labels=None):
    """Khosla et al. eq. 2, a loop over anchors; anchors without positives are left out. The
    queued keys are candidates of every anchor, never anchors."""
    N, V, _ = features.shape
    views = [(_unit(features[n, v]), int(labels[n])) for n in range(N) for v in range(V)]
    queued = [] if queue is None else zip(queue, queue_labels, strict=True)
    keys = [(_unit(k), int(y)) for k, y in queued]
    candidates = views + keys
    losses, per_anchor = [], []
    for a, (za, ya) in enumerate(views):
        others = [j for j in range(len(candidates)) if j != a]
        denom = sum(math.exp(float(za @ candidates[j][0]) / T) for j in others)
        positives = [j for j in others if candidates[j][1] == ya]
        if not positives:
            per_anchor.append(0.0)
            continue
        terms = [math.log(math.exp(float(za @ candidates[p][0]) / T) / denom) for p in positives]
        per_anchor.append(-sum(terms) / len(positives))
        losses.append(per_anchor[-1])
    mean = sum(losses) / len(losses) if losses else 0.0
    return mean, torch.tensor(per_anchor, dtype=torch.float64).view(N, V)


def reference_nt_xent(z1, z2, T):
    """SimCLR's l(i, j) = -log exp(s_ij/T) / sum_{k != i} exp(s_ik/T), over all 2N views."""
    z = [_unit(v) for v in torch.cat([z1, z2])]
    N = z1.shape[0]
    losses = []
    for i in range(2 * N):
        j = (i + N) % (2 * N)
        denom = sum(math.exp(float(z[i] @ z[k]) / T) for k in range(2 * N) if k != i)
        losses.append(-math.log(math.exp(float(z[i] @ z[j]) / T) / denom))
    return torch.tensor(losses, dtype=torch.float64)


def _views(N=6, V=2, D=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, V, D, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("chunk_size", [None, 1, 5, 100])
def test_nt_xent_equals_the_simclr_loop_in_float64(chunk_size):
    f = _views()
    z1, z2 = f[:, 0], f[:, 1]
    expected = reference_nt_xent(z1, z2, 0.5)
    loss = nt_xent(z1, z2, 0.5, reduction="none", chunk_size=chunk_size)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    assert nt_xent(z1, z2, 0.5).item() == pytest.approx(expected.mean().item(), rel=1e-12)
    assert nt_xent(z1, z2, 0.5, reduction="sum").item() == pytest.approx(expected.sum().item())


@pytest.mark.parametrize("V", [1, 2, 3])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_supcon_equals_the_papers_loop_with_repeated_labels(V, chunk_size):
    f = _views(N=7, V=V)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])  # class 2 and 3 once: no positive when V = 1
    mean, per_anchor = reference_supcon(f, labels, 0.1)
    assert supcon(f, labels, 0.1, chunk_size=chunk_size).item() == pytest.approx(mean, rel=1e-11)
    torch.testing.assert_close(
        supcon(f, labels, 0.1, reduction="none", chunk_size=chunk_size), per_anchor,
        rtol=1e-11, atol=1e-12,
    )  # fmt: skip


@pytest.mark.parametrize("V", [1, 2])
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_supcon_against_a_queue_of_labelled_keys_equals_the_loop(V, chunk_size):
    f = _views(N=5, V=V)
    labels = torch.tensor([0, 1, 0, 2, 4])  # 4: no positive in the batch, one in the queue
    queue = _views(N=6, V=1, seed=1)[:, 0]  # (6, 5) keys of earlier batches
    queue_labels = torch.tensor([1, 3, 0, 3, 4, 1], dtype=torch.int32)  # 3: never an anchor's
    mean, per_anchor = reference_supcon(f, labels, 0.2, queue, queue_labels)
    kwargs = dict(chunk_size=chunk_size, queue=queue, queue_labels=queue_labels)
    assert supcon(f, labels, 0.2, **kwargs).item() == pytest.approx(mean, rel=1e-11)
    torch.testing.assert_close(
        supcon(f, labels, 0.2, reduction="none", **kwargs), per_anchor, rtol=1e-11, atol=1e-12
    )
    assert per_anchor[4].gt(0).all()  # the queue gave label 4 its positive
    empty = supcon(f, labels, 0.2, queue=queue[:0], queue_labels=queue_labels[:0])
    assert empty.item() == pytest.approx(supcon(f, labels, 0.2).item(), rel=1e-14)


def test_gradcheck_through_a_queue_of_labelled_keys():
    f = _views(N=4, V=2, D=3).requires_grad_()
    queue = _views(N=5, V=1, D=3, seed=2)[:, 0].requires_grad_()
    queue_labels = torch.tensor([0, 2, 1, 0, 2])

    labels = torch.tensor([0, 1, 0, 3])

    def call(f, q):
        return supcon(f, labels, 0.3, "none", queue=q, queue_labels=queue_labels)

    assert torch.autograd.gradcheck(call, (f, queue))


def test_supcon_with_unique_labels_is_exactly_nt_xent():
    f = _views(N=8)
    torch.testing.assert_close(
        supcon(f, None, 0.3), nt_xent(f[:, 0], f[:, 1], 0.3), rtol=1e-14, atol=0
    )
    torch.testing.assert_close(
        supcon(f, torch.arange(8) * 3, 0.3), nt_xent(f[:, 0], f[:, 1], 0.3), rtol=1e-14, atol=0
    )


def test_supcon_is_safe_for_anchors_without_positives():
    f = _views(N=4, V=1).requires_grad_()
    loss = supcon(f, torch.tensor([0, 1, 2, 3]))  # one view, unique labels: nothing to pull
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(f.grad, torch.zeros_like(f))
    single = _views(N=1, V=1).requires_grad_()  # one view of one image: no softmax at all
    supcon(single).backward()
    assert torch.equal(single.grad, torch.zeros_like(single))
    loss = supcon(f, torch.tensor([0, 0, 1, 2]), reduction="none")  # only two anchors count
    assert torch.isfinite(loss).all() and loss[2:].eq(0).all() and loss[:2].gt(0).all()


@pytest.mark.parametrize("normalize", [True, False])  # False: logits shifted by their max
@pytest.mark.parametrize("fn", ["nt_xent", "supcon"])
def test_gradcheck_for_features_and_a_tensor_temperature(fn, normalize):
    f = _views(N=4, V=2, D=3).requires_grad_()
    T = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1])
    kwargs = {"reduction": "none", "chunk_size": 3, "normalize": normalize}
    call = {
        "nt_xent": lambda f, T: nt_xent(f[:, 0], f[:, 1], T, **kwargs),
        "supcon": lambda f, T: supcon(f, labels, T, **kwargs),
    }[fn]
    assert torch.autograd.gradcheck(call, (f, T))


def test_chunked_gradients_equal_the_unchunked_ones():
    f = _views(N=16, V=2, D=8).float().requires_grad_()
    labels = torch.arange(16) % 5
    (full,) = torch.autograd.grad(supcon(f, labels, 0.1), f)
    (chunked,) = torch.autograd.grad(supcon(f, labels, 0.1, chunk_size=7), f)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-7)


def test_loss_is_float32_under_bfloat16_autocast():
    f = _views(N=8).float()
    expected = nt_xent(f[:, 0], f[:, 1], 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nt_xent(f[:, 0].bfloat16(), f[:, 1].bfloat16(), 0.1)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), rel=2e-2)


Z, Z5, F3 = torch.randn(4, 3), torch.randn(5, 3), torch.randn(4, 2, 3)
Q3, L4 = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])


@pytest.mark.parametrize(
    "fn, args, kwargs, match",
    [
        (nt_xent, (Z, Z5), {}, r"z1 and z2 must be .* \(4, 3\) and \(5, 3\)"),
        (nt_xent, (Z, Z, 0.0), {}, "temperature must be a positive"),
        (nt_xent, (Z, Z), {"chunk_size": 0}, "chunk_size must be an integer >= 1, got 0"),
        (supcon, (Z,), {}, r"features must have 3 dimensions, got shape \(4, 3\)"),
        (
            supcon,
            (F3, torch.zeros(5, dtype=torch.long)),
            {},
            r"labels must be an integer tensor of shape \(4,\), got shape \(5,\)",
        ),
        (supcon, (F3, torch.zeros(4)), {}, r"integer tensor of shape \(4,\), .*torch.float32"),
        (supcon, (F3,), {"reduction": "avg"}, "reduction must be one of"),
        (supcon, (F3, L4), {"queue": Q3}, "queue needs queue_labels"),
        (supcon, (F3, L4), {"queue_labels": L4}, "queue_labels needs queue"),
        (supcon, (F3,), {"queue": Q3, "queue_labels": L4}, "queue of labelled keys needs labels"),
        (
            supcon,
            (F3, L4),
            {"queue": Z5[:, :2], "queue_labels": L4[:1].repeat(5)},
            r"queue must be \(K, 3\) like the features' D, got \(5, 2\)",
        ),  # fmt: skip
        (
            supcon,
            (F3, L4),
            {"queue": Q3.long(), "queue_labels": L4},
            "queue must be a floating-point tensor, got dtype torch.int64",
        ),  # fmt: skip
        (
            supcon,
            (F3, L4),
            {"queue": Q3, "queue_labels": L4[:3]},
            r"queue_labels must be an integer tensor of shape \(4,\), got shape \(3,\)",
        ),
        (
            supcon,
            (F3, L4),
            {"queue": Q3, "queue_labels": L4.float()},
            r"queue_labels must be an integer tensor .*torch.float32",
        ),
    ],
)
def test_bad_inputs_are_value_errors_naming_them(fn, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)


# Decoupled NT-Xent (DCL, Yeh et al., 2022): the positive view out of the denominator


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("chunk_size", [None, 1, 5, 100])
def test_decoupled_nt_xent_equals_the_dcl_loop_in_float64(normalize, chunk_size):
    f = _views(N=6, D=5) * (1.0 if normalize else 0.4)
    z1, z2 = f[:, 0], f[:, 1]
    expected = reference_decoupled_nt_xent(z1, z2, 0.3, normalize)  # (2N,)
    for reduction, want in (("mean", expected.mean()), ("sum", expected.sum()), ("none", expected)):
        loss = nt_xent(z1, z2, 0.3, reduction, normalize, chunk_size, decoupled=True)
        assert loss.dtype == torch.float64 and loss.shape == want.shape
        torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)


def test_decoupled_nt_xent_is_nt_xent_plus_log_of_one_minus_the_positives_probability():
    """Leaving the positive out of the log-sum-exp adds log(1 - p+) = log(1 - exp(-L)): a
    closed form over the standard loss, and always smaller."""
    f = _views(N=5)
    standard = nt_xent(f[:, 0], f[:, 1], 0.2, reduction="none")
    decoupled = nt_xent(f[:, 0], f[:, 1], 0.2, reduction="none", decoupled=True)
    expected = standard + torch.log(-torch.expm1(-standard))
    torch.testing.assert_close(decoupled, expected, rtol=1e-12, atol=1e-12)
    assert (decoupled < standard).all()


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_decoupled_nt_xent_gradients_equal_the_dcl_loops(normalize, chunk_size):
    """Both views and a tensor temperature, per-view weights (not just the mean)."""
    f = _views(N=4, D=3) * (1.0 if normalize else 0.4)
    z1, z2 = f[:, 0].clone().requires_grad_(), f[:, 1].clone().requires_grad_()
    T = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    weights = torch.linspace(0.5, 1.5, 8, dtype=torch.float64)
    loss = nt_xent(z1, z2, T, "none", normalize, chunk_size, decoupled=True)
    got = torch.autograd.grad((loss * weights).sum(), (z1, z2, T))
    reference = reference_decoupled_nt_xent(z1, z2, T, normalize)
    want = torch.autograd.grad((reference * weights).sum(), (z1, z2, T))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
def test_decoupled_nt_xent_passes_gradcheck_with_a_tensor_temperature(normalize):
    f = _views(N=3, V=2, D=3).requires_grad_()
    T = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)

    def loss(f, T):
        return nt_xent(f[:, 0], f[:, 1], T, "none", normalize, chunk_size=4, decoupled=True)

    assert torch.autograd.gradcheck(loss, (f, T))


def test_decoupled_nt_xent_chunked_gradients_equal_the_unchunked_ones():
    f = _views(N=16, V=2, D=8).float().requires_grad_()
    (full,) = torch.autograd.grad(nt_xent(f[:, 0], f[:, 1], 0.1, decoupled=True), f)
    chunked = nt_xent(f[:, 0], f[:, 1], 0.1, chunk_size=7, decoupled=True)
    (grad,) = torch.autograd.grad(chunked, f)
    torch.testing.assert_close(grad, full, rtol=1e-5, atol=1e-7)


def test_decoupled_nt_xent_without_normalize_does_not_overflow_at_a_tiny_temperature():
    """Raw similarities near 2^32 at T = 2^-1000: the logits (2^1032) overflow float64, the
    loss does not. Sample 0's views are both a = (2^16, 0), sample 1's both b = (2^16 + 1, 0):
    a's loss is (a.b - a.a) / T + log 2 = 2^16 / T, b's is (a.b - b.b) / T + log 2
    = -(2^16 + 1) / T (log 2 is below their rounding), exact in float64."""
    z = torch.tensor([[2.0**16, 0.0], [2.0**16 + 1, 0.0]], dtype=torch.float64)
    loss = nt_xent(z, z.clone(), 2.0**-1000, "none", normalize=False, decoupled=True)
    a, b = 2.0**1016, -(2.0**1016 + 2.0**1000)
    assert loss.tolist() == [a, b, a, b]


def test_decoupled_nt_xent_with_one_sample_is_a_value_error_naming_decoupled():
    """One sample: its two views have no negative left (the log-sum-exp would be empty)."""
    z = torch.randn(1, 4)
    with pytest.raises(ValueError, match=r"decoupled=True needs at least one negative .*N = 1"):
        nt_xent(z, z.flip(1), decoupled=True)
    assert torch.isfinite(nt_xent(z, z.flip(1)))  # NT-Xent itself is defined (the loss is 0)
    with pytest.raises(ValueError, match="decoupled must be True or False, got 1"):
        nt_xent(Z, Z, decoupled=1)
