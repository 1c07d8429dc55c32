"""The chunked queue InfoNCE: same values and gradients as the reference, any chunk size."""

import importlib

import pytest
import torch
import torch.nn.functional as F
from references import reference_decoupled_info_nce, reference_info_nce

from infonce import info_nce, info_nce_logits
from infonce.chunked import chunked_info_nce, chunked_info_nce_stats

info_nce_module = importlib.import_module("infonce.info_nce")  # `infonce.info_nce` is the function

# 0.01 runs the running-maximum log-sum-exp, 0.07 and 1.0 the bounded path (normalised inputs)
TEMPERATURES = [0.01, 0.07, 1.0]


def inputs(N=5, K=11, D=6, dtype=torch.float64, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(*shape, generator=g, dtype=dtype) * scale for shape in ((N, D),) * 2 + ((K, D),)
    ]


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 4, 11, 64])
def test_chunked_equals_loop_reference_in_float64_for_any_chunk_size(
    temperature, normalize, chunk_size
):
    q, k, n = inputs(scale=1.0 if normalize else 0.3)
    for reduction in ("mean", "sum", "none"):
        loss = chunked_info_nce(q, k, n, temperature, reduction, normalize, chunk_size)
        expected = reference_info_nce(q, k, n, temperature, reduction, normalize)
        assert loss.dtype == torch.float64 and loss.shape == expected.shape
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("normalize", [True, False])
def test_chunked_passes_gradcheck_for_query_key_and_negatives(temperature, normalize):
    q, k, n = (t.requires_grad_() for t in inputs(N=3, K=7, D=4, scale=1.0 if normalize else 0.3))

    def loss(q, k, n):
        return chunked_info_nce(q, k, n, temperature, "none", normalize, chunk_size=3)

    assert torch.autograd.gradcheck(loss, (q, k, n))


def test_chunked_matches_reference_in_float32_at_large_k_to_1e5_relative():
    q, k, n = inputs(N=64, K=10_000, D=128, dtype=torch.float32, seed=1)
    q, k = q.requires_grad_(), k.requires_grad_()
    loss = chunked_info_nce(q, k, n, 0.07, chunk_size=4096)
    grads = torch.autograd.grad(loss, (q, k))
    q64, k64 = q.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    logits, labels = info_nce_logits(q64, k64, n.double(), 0.07)
    expected = F.cross_entropy(logits, labels)
    expected_grads = torch.autograd.grad(expected, (q64, k64))
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max())


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_stats_are_the_positive_the_largest_and_the_mean_negative_logit(temperature):
    q, k, n = inputs(N=8, K=30)
    stats = chunked_info_nce_stats(q, k, n, temperature, chunk_size=7)
    logits, labels = info_nce_logits(q, k, n, temperature)
    torch.testing.assert_close(stats.loss, F.cross_entropy(logits, labels, reduction="none"))
    torch.testing.assert_close(stats.positive_logit, logits[:, 0])
    torch.testing.assert_close(stats.max_negative_logit, logits[:, 1:].amax(dim=1))
    torch.testing.assert_close(stats.mean_negative_logit, logits[:, 1:].mean(dim=1))
    top1 = stats.positive_logit >= stats.max_negative_logit
    assert torch.equal(top1, logits.argmax(dim=1) == 0)
    assert not any(t.requires_grad for t in stats[1:])


def test_a_tie_with_a_negative_counts_the_positive_as_top1_like_argmax():
    e1 = torch.eye(4)[:1]  # (1, 4)
    stats = chunked_info_nce_stats(e1, e1, torch.eye(4)[:2], temperature=0.1)  # negative 0 == key
    assert stats.positive_logit == stats.max_negative_logit
    assert info_nce_logits(e1, e1, torch.eye(4)[:2], 0.1)[0].argmax() == 0


def test_no_negatives_give_zero_loss_and_empty_stats():
    q, k, _ = inputs(N=3, K=0)
    stats = chunked_info_nce_stats(q, k, torch.empty(0, 6, dtype=torch.float64), 0.1)
    assert torch.equal(stats.loss, torch.zeros(3, dtype=torch.float64))
    assert torch.isneginf(stats.max_negative_logit).all() and (stats.mean_negative_logit == 0).all()


def test_backward_survives_an_in_place_enqueue_after_forward():
    """The queue may be overwritten between forward and backward: negatives are not saved."""
    q, k, n = inputs(N=4, K=20, dtype=torch.float32)
    q.requires_grad_()
    loss = chunked_info_nce(q, k, n, 0.1, chunk_size=8)
    expected = torch.autograd.grad(info_nce_logits_loss(q, k, n.clone()), q)[0]
    n.mul_(-1.0)  # what MemoryQueue.enqueue does to its buffer in place
    torch.testing.assert_close(torch.autograd.grad(loss, q)[0], expected)


def info_nce_logits_loss(q, k, n):
    return F.cross_entropy(*info_nce_logits(q, k, n, 0.1))


def test_loss_is_float32_under_bfloat16_autocast_and_matches_fp32():
    q, k, n = inputs(N=16, K=100, D=32, dtype=torch.float32)
    expected = chunked_info_nce(q, k, n, 0.07)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = chunked_info_nce(q, k, n.bfloat16(), 0.07)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=2e-2, atol=0)  # bf16 negatives: 8-bit mantissa


def test_no_grad_call_returns_the_same_loss_without_a_graph():
    q, k, n = (t.requires_grad_() for t in inputs(N=4, K=9))
    with torch.no_grad():
        loss = chunked_info_nce(q, k, n, 0.1)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, chunked_info_nce(q, k, n, 0.1).detach())


def test_info_nce_takes_the_chunked_path_from_chunked_from_negatives(monkeypatch):
    calls = []
    original = info_nce_module.chunked_info_nce

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(info_nce_module, "chunked_info_nce", spy)
    K = info_nce_module.CHUNKED_FROM
    q, k, n = inputs(N=4, K=K - 1, D=8)
    info_nce(q, k, n)
    assert not calls
    q, k, n = inputs(N=4, K=K, D=8)
    q.requires_grad_()
    loss = info_nce(q, k, n, temperature=0.1)
    assert len(calls) == 1
    expected = reference_info_nce(q.detach(), k, n, 0.1, "mean", True)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-12, atol=1e-12)
    logits_loss = F.cross_entropy(*info_nce_logits(q, k, n, 0.1))
    torch.testing.assert_close(
        torch.autograd.grad(loss, q)[0], torch.autograd.grad(logits_loss, q)[0]
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"chunk_size": 0}, "chunk_size must be an integer >= 1, got 0"),
        ({"temperature": -1.0}, "temperature must be a positive finite number, got -1.0"),
        (
            {"negatives": torch.randn(5, 3, 6)},
            r"negatives must have shape \(K, D\), got \(5, 3, 6\)",
        ),
        ({"negatives": torch.randn(9, 7)}, r"negatives must have shape \(K, 6\)"),
        ({"key": torch.randn(5, 7)}, r"key must have the shape of query \(5, 6\), got \(5, 7\)"),
    ],
)
def test_bad_arguments_are_value_errors_naming_them(kwargs, match):
    q, k, n = inputs(N=5, K=9, dtype=torch.float32)
    args = {"query": q, "key": k, "negatives": n} | kwargs
    with pytest.raises(ValueError, match=match):
        chunked_info_nce(**args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_chunked_on_cuda_matches_cpu():
    q, k, n = inputs(N=32, K=5000, D=64, dtype=torch.float32)
    expected = chunked_info_nce(q, k, n, 0.07)
    torch.testing.assert_close(chunked_info_nce(q.cuda(), k.cuda(), n.cuda(), 0.07).cpu(), expected)


# Second derivatives (create_graph=True): gradient penalties, Hessian-vector products


@pytest.mark.parametrize("temperature", [0.07, 0.5])
@pytest.mark.parametrize("normalize", [True, False])
def test_chunked_passes_gradgradcheck_for_query_key_and_negatives(temperature, normalize):
    q, k, n = (t.requires_grad_() for t in inputs(N=4, K=7, D=5))

    def loss(q, k, n):
        return chunked_info_nce(q, k, n, temperature, "none", normalize, chunk_size=3)

    assert torch.autograd.gradgradcheck(loss, (q, k, n))


def hessian_vector_product(loss_fn, x, v):
    (grad,) = torch.autograd.grad(loss_fn(x), x, create_graph=True)
    return torch.autograd.grad((grad * v).sum(), x)[0]


@pytest.mark.parametrize("wrt", ["query", "key", "negatives"])
def test_info_nce_hessian_vector_products_equal_the_logits_paths(wrt):
    """K = 300 >= CHUNKED_FROM: info_nce takes the chunked path; its second derivatives must
    be those of the plain logits formula, not the silent zeros of a constant backward."""
    q, k, n = inputs(N=6, K=300, D=16, seed=3)
    index = ("query", "key", "negatives").index(wrt)
    x = (q, k, n)[index].clone().requires_grad_()
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)

    def with_x(fn):
        return lambda x: fn(*[x if i == index else t for i, t in enumerate((q, k, n))], 0.07)

    chunked = hessian_vector_product(with_x(info_nce), x, v)
    logits = hessian_vector_product(with_x(info_nce_logits_loss_t), x, v)
    assert chunked.abs().max() > 1e-3  # a real second derivative
    torch.testing.assert_close(chunked, logits, rtol=1e-10, atol=1e-12)


def info_nce_logits_loss_t(q, k, n, temperature):
    return F.cross_entropy(*info_nce_logits(q, k, n, temperature))


def test_double_backward_refuses_negatives_overwritten_in_place_after_forward():
    q, k, n = inputs(N=4, K=20)
    q.requires_grad_()
    (grad,) = torch.autograd.grad(
        chunked_info_nce(q, k, n, 0.1, chunk_size=8), q, create_graph=True
    )
    assert grad.requires_grad
    loss = chunked_info_nce(q, k, n, 0.1, chunk_size=8)
    n.mul_(-1.0)  # an in-place enqueue into the very tensor passed as negatives
    with pytest.raises(RuntimeError, match="modified in place .* double backward"):
        torch.autograd.grad(loss, q, create_graph=True)


# Decoupled (DCL): the positive in neither the running log-sum-exp nor the weighted sum


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 4, 11, 64])
def test_decoupled_chunked_equals_the_dcl_loop_in_float64_for_any_chunk_size(
    temperature, normalize, chunk_size
):
    q, k, n = inputs(scale=1.0 if normalize else 0.3)
    expected = reference_decoupled_info_nce(q, k, n, temperature, normalize)  # (N,)
    for reduction, want in (("mean", expected.mean()), ("sum", expected.sum()), ("none", expected)):
        loss = chunked_info_nce(
            q, k, n, temperature, reduction, normalize, chunk_size, decoupled=True
        )
        torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("normalize", [True, False])
def test_decoupled_chunked_gradients_equal_the_dcl_loops(temperature, normalize):
    """Query, key, negatives and a tensor temperature, against autograd through the loop."""
    q, k, n = (t.requires_grad_() for t in inputs(N=4, K=9, scale=1.0 if normalize else 0.3))
    T = torch.tensor(temperature, dtype=torch.float64, requires_grad=True)
    weights = torch.linspace(0.5, 1.5, 4, dtype=torch.float64)
    loss = chunked_info_nce(q, k, n, T, "none", normalize, chunk_size=4, decoupled=True)
    got = torch.autograd.grad((loss * weights).sum(), (q, k, n, T))
    reference = reference_decoupled_info_nce(q, k, n, T, normalize)
    want = torch.autograd.grad((reference * weights).sum(), (q, k, n, T))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("tensor_t", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_decoupled_chunked_passes_gradcheck_and_gradgradcheck(tensor_t, normalize):
    q, k, n = (t.requires_grad_() for t in inputs(N=3, K=7, D=4, scale=1.0 if normalize else 0.3))
    T = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    args = (q, k, n, T) if tensor_t else (q, k, n)

    def loss(q, k, n, T=0.3):
        return chunked_info_nce(q, k, n, T, "none", normalize, chunk_size=3, decoupled=True)

    assert torch.autograd.gradcheck(loss, args)
    assert torch.autograd.gradgradcheck(loss, args)


def decoupled_logits_loss(q, k, n, temperature):
    logits, _ = info_nce_logits(q, k, n, temperature)  # (N, 1+K), the positive in column 0
    return (torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]).mean()


@pytest.mark.parametrize("wrt", ["query", "key", "negatives"])
def test_decoupled_info_nce_hessian_vector_products_equal_the_logits_paths(wrt):
    q, k, n = inputs(N=6, K=300, D=16, seed=3)  # K >= CHUNKED_FROM: the chunked path
    index = ("query", "key", "negatives").index(wrt)
    x = (q, k, n)[index].clone().requires_grad_()
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)

    def with_x(fn, **kwargs):
        return lambda x: fn(
            *[x if i == index else t for i, t in enumerate((q, k, n))], 0.07, **kwargs
        )

    chunked = hessian_vector_product(with_x(info_nce, decoupled=True), x, v)
    logits = hessian_vector_product(with_x(decoupled_logits_loss), x, v)
    assert chunked.abs().max() > 1e-3
    torch.testing.assert_close(chunked, logits, rtol=1e-10, atol=1e-12)


def test_decoupled_chunked_matches_float64_in_float32_at_large_k():
    q, k, n = inputs(N=64, K=10_000, D=128, dtype=torch.float32, seed=1)
    q, k = q.requires_grad_(), k.requires_grad_()
    loss = chunked_info_nce(q, k, n, 0.07, decoupled=True)
    grads = torch.autograd.grad(loss, (q, k))
    q64, k64 = q.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    expected = decoupled_logits_loss(q64, k64, n.double(), 0.07)
    expected_grads = torch.autograd.grad(expected, (q64, k64))
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max())


def test_decoupled_stats_and_the_default_path_through_info_nce(monkeypatch):
    calls = []
    original = info_nce_module.chunked_info_nce

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(info_nce_module, "chunked_info_nce", spy)
    q, k, n = inputs(N=4, K=info_nce_module.CHUNKED_FROM, D=8)
    loss = info_nce(q, k, n, 0.1, decoupled=True)
    assert calls == [{"decoupled": True}]
    reference = reference_decoupled_info_nce(q, k, n, 0.1, True)
    torch.testing.assert_close(loss, reference.mean(), rtol=1e-12, atol=1e-12)
    stats = chunked_info_nce_stats(q, k, n, 0.1, chunk_size=100, decoupled=True)
    standard = chunked_info_nce_stats(q, k, n, 0.1, chunk_size=100)
    torch.testing.assert_close(stats.loss, reference, rtol=1e-12, atol=1e-12)
    for got, want in zip(stats[1:], standard[1:], strict=True):
        assert torch.equal(got, want)


def test_decoupled_with_an_empty_queue_is_a_value_error_naming_decoupled():
    q, k, _ = inputs(N=3, K=0)
    empty = torch.empty(0, 6, dtype=torch.float64)
    for call in (chunked_info_nce, chunked_info_nce_stats):
        with pytest.raises(ValueError, match="decoupled=True needs at least one negative.*K = 0"):
            call(q, k, empty, 0.1, decoupled=True)
