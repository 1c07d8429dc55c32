"""InfoNCE against a large shared set of negatives, in chunks, never materialising (N, 1+K).

The queue loss of MoCo is a softmax over ``1 + K`` logits per query. Its gradient with respect
to the query is ``(sum_j p_j v_j - k+) / T`` (``v_j`` the positive and every negative, ``p_j``
their softmax weights): the same "softmax times values" product that attention computes. So
one pass over the negatives, chunk by chunk, computes both the log-sum-exp and that weighted
sum with an online rescaling (as FlashAttention does), and the backward pass only scales the
result: two matrix products in all, the least any implementation needs, and O(N x chunk)
extra memory instead of O(N x K).

Numerics: logits and sums in float32 (float64 for float64 inputs) with autocast off. When
the inputs are L2-normalised every logit lies in ``[-1/T, 1/T]``, finite for every ``T``
normal in the dtype; for ``T >= 0.025`` the exponentials then neither overflow nor underflow
float32 even for millions of negatives, so the running maximum is skipped (one pass less).
Otherwise the classic running-max log-sum-exp is used. Either way ``lse = m + log(sum exp(l -
m))``, never a log of a softmax. Internally the logits are in base 2 (``exp2`` is several
times faster than ``exp`` on CPUs), and with normalised inputs ``log2(e) / T`` rides in the
query for free. Without normalisation ``q.k / T`` could overflow for a small ``T``: the raw
similarities are kept, and each chunk is scaled by ``log2(e) / T`` only after the running
maximum is subtracted (one more pass over the chunk), so no finite input overflows.

Decoupled (DCL, ``decoupled=True``): the positive enters neither the running log-sum-exp nor
the weighted sum, which then run over the negatives alone; ``dL/dk+ = -q / T`` (the positive
has no softmax weight) and the other gradients keep their form with the negatives' weights.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from infonce._checks import check_info_nce, check_int, check_reduction, reduce_loss
from infonce._numerics import compute_dtype, over_temperature, temperature_like

# Bounded logits |l| <= 1/T need no running maximum when exp(+-2/T) stays finite and normal in
# float32 (exp(80) = 5.5e34, and K * exp(1/T) < 1e38 for K up to 2**24 at 1/T = 40).
_MIN_TEMPERATURE_WITHOUT_MAX = 0.025
_LOG2E, _LN2 = 1.0 / math.log(2.0), math.log(2.0)
DEFAULT_CHUNK_SIZE = 4096

__all__ = ["InfoNCEStats", "chunked_info_nce", "chunked_info_nce_stats"]


class InfoNCEStats(NamedTuple):
    """Per-query results of :func:`chunked_info_nce_stats`.

    ``loss`` carries gradients; the rest are detached, for logging.

    Shape:
        every field (N,).
    """

    loss: Tensor  # -log softmax of the positive, per query (decoupled: lse of negatives - l+)
    positive_logit: Tensor  # q.k+ / T
    max_negative_logit: Tensor  # max_j q.k_j / T; the positive wins top-1 iff >= this
    mean_negative_logit: Tensor  # mean_j q.k_j / T


class _ChunkedQueueInfoNCE(torch.autograd.Function):
    """Per-query InfoNCE over shared negatives; see :func:`chunked_info_nce_stats`.

    Inputs are already in the compute dtype; ``query`` and ``key`` already normalised when
    ``normalize``; ``negatives`` raw (each chunk is normalised on the fly); with ``decoupled``
    at least one negative.
    """

    @staticmethod
    def forward(ctx, query, key, negatives, temperature, normalize, chunk_size, stats, decoupled):
        # Logits are kept in base 2 (l2 = l * log2(e)): exp2 is several times faster than exp
        # on CPUs. Normalised, the factor log2(e) / T rides along in the query for free (the
        # logits stay within log2(e) / T, finite); raw, the similarities are kept and the
        # factor applied after the running maximum is subtracted, so that nothing overflows.
        N, D = query.shape
        K = negatives.shape[0]
        need_dq, need_dk, need_dn, need_dt = ctx.needs_input_grad[:4]
        # A tensor T (0-d, learnable) is not read on the host: the running maximum is kept.
        tensor_t = isinstance(temperature, Tensor)
        bounded = normalize and not tensor_t and temperature >= _MIN_TEMPERATURE_WITHOUT_MAX
        scale = _LOG2E / temperature  # float or ()
        folded = normalize  # logits q2 . v in base 2 already; else raw similarities q . v

        def base2(x: Tensor) -> Tensor:  # a difference of logits, in base-2 units of 1/T
            return x if folded else x * scale

        q2 = query * scale if folded else query  # (N, D): the logits are q2 . v
        l_pos = (q2 * key).sum(dim=1)  # (N,)
        # running log-sum-exp state: shift m (N,), sum of 2^(base2(l - m)) s (N,)
        need_weighted = need_dq or need_dt  # dL/dT = -q . dL/dq / T
        if decoupled:  # the sums start empty: the positive is in neither
            m = torch.zeros_like(l_pos) if bounded else torch.full_like(l_pos, -torch.inf)
            s = torch.zeros_like(l_pos)  # (N,)
            weighted = torch.zeros_like(query) if need_weighted else None  # (N, D)
        else:  # the sums start with the positive
            m = torch.zeros_like(l_pos) if bounded else l_pos.clone()
            s = torch.exp2(base2(l_pos - m))  # (N,)
            weighted = s[:, None] * key if need_weighted else None  # (N, D): sum_j 2^(l_j-m) v_j
        max_neg = torch.full_like(l_pos, -torch.inf)  # (N,)
        neg_sum = torch.zeros(D, dtype=query.dtype, device=query.device)  # (D,) sum of negatives
        buffers = _ChunkBuffers(N, D, min(chunk_size, K), query)  # reused: no allocation per chunk
        for start in range(0, K, chunk_size):
            n = buffers.chunk(negatives[start : start + chunk_size], normalize)  # (C, D)
            logits = buffers.logits(q2, n)  # (N, C)
            if stats or not bounded:
                chunk_max = logits.amax(dim=1)  # (N,)
            if stats:
                neg_sum += n.sum(dim=0)
                max_neg = torch.maximum(max_neg, chunk_max)
            if not bounded:
                m_new = torch.maximum(m, chunk_max)
                rescale = torch.exp2(base2(m - m_new))  # (N,) <= 1
                s.mul_(rescale)
                if weighted is not None:
                    weighted.mul_(rescale[:, None])
                logits.sub_(m_new[:, None])
                if not folded:
                    logits.mul_(scale)  # (N, C) <= 0: base-2 logits relative to the maximum
                m = m_new
            p = logits.exp2_()  # (N, C): 2^(l - m), in place
            s += p.sum(dim=1)
            if weighted is not None:
                weighted.addmm_(p, n)  # (N, D)
        log2_s = torch.log2(s)  # (N,): the base-2 log-sum-exp is base2(m) + log2_s
        gap = base2(m - l_pos)  # (N,): how far the positive lies below the shift m
        loss = (gap + log2_s) * _LN2  # (N,) natural log: lse - l_pos
        dq = (weighted / s[:, None] - key) / temperature if need_weighted else None  # (N, D)
        dk = None
        if need_dk and decoupled:  # the positive has no softmax weight
            dk = -query / temperature  # (N, D)
        elif need_dk:
            p_pos = torch.exp2(-gap - log2_s)  # (N,)
            dk = (p_pos - 1.0)[:, None] * query / temperature  # (N, D)
        # dL/dT = (l+ - sum_j p_j l_j) / T^2 (raw logits l = q . v) = -(q . dL/dq) / T
        dt = -(query * dq).sum(dim=1) / temperature if need_dt else None  # (N,)
        # The inputs too (references, not copies): a double backward recomputes from them.
        # Negatives that need no gradient (a queue) are kept outside autograd's version check,
        # so the queue may be overwritten in place before a first-order backward.
        saved_t = temperature if tensor_t else None
        saved_n = negatives if need_dn else None
        ctx.save_for_backward(query, key, saved_n, dq, dk, dt, m, log2_s, saved_t)
        if not need_dn:
            ctx.negatives, ctx.negatives_version = negatives, negatives._version
        ctx.normalize, ctx.chunk_size, ctx.temperature = normalize, chunk_size, temperature
        ctx.decoupled = decoupled
        ctx.need_dq = need_dq
        if folded:
            l_pos, max_neg = l_pos * _LN2, max_neg * _LN2  # back to q.k / T
        else:
            l_pos, max_neg = l_pos / temperature, max_neg / temperature
        mean_neg = (query @ neg_sum) / (temperature * max(K, 1))  # (N,); 0 without stats or K
        ctx.mark_non_differentiable(l_pos, max_neg, mean_neg)
        return loss, l_pos, max_neg, mean_neg

    @staticmethod
    def backward(ctx, grad_loss, *unused):
        query, key, negatives, dq, dk, dt, m, log2_s, temperature = ctx.saved_tensors
        if temperature is None:  # a float
            temperature = ctx.temperature
        if torch.is_grad_enabled():  # create_graph=True: the gradient must be differentiable
            if negatives is None:
                negatives = ctx.negatives
                if negatives._version != ctx.negatives_version:
                    raise RuntimeError(
                        "chunked_info_nce: negatives were modified in place between the forward "
                        "pass and a double backward (create_graph=True); pass a copy, such as "
                        "MemoryQueue.negatives()"
                    )
            grads = _differentiable_grads(ctx, query, key, negatives, temperature, grad_loss)
            return (*grads, *[None] * 4)
        g = grad_loss[:, None]  # (N, 1)
        grad_q = dq * g if ctx.need_dq else None
        grad_k = dk * g if dk is not None else None
        grad_t = (dt * grad_loss).sum() if dt is not None else None  # ()
        grad_n = None
        if negatives is not None:  # saved when they need a gradient
            scale = _LOG2E / temperature
            folded = ctx.normalize  # as in forward
            q2 = query * scale if folded else query  # (N, D)
            qg = query * (g / temperature)  # (N, D): g_i q_i / T
            grad_n = torch.empty_like(negatives)
            for start in range(0, negatives.shape[0], ctx.chunk_size):
                raw = negatives[start : start + ctx.chunk_size].to(q2.dtype)  # (C, D)
                n = F.normalize(raw, dim=1) if ctx.normalize else raw
                relative = q2 @ n.T - m[:, None]  # (N, C)
                relative = relative if folded else relative * scale
                p = torch.exp2(relative - log2_s[:, None])  # (N, C) softmax weights, recomputed
                dn = p.T @ qg  # (C, D): sum_i g_i p_ij q_i / T
                if ctx.normalize:  # through n = r / |r|: (dn - n (n . dn)) / |r|
                    norm = raw.norm(dim=1, keepdim=True).clamp_min(1e-12)
                    dn = (dn - n * (n * dn).sum(dim=1, keepdim=True)) / norm
                grad_n[start : start + ctx.chunk_size] = dn
        return grad_q, grad_k, grad_n, grad_t, None, None, None, None


def _differentiable_grads(ctx, query, key, negatives, temperature, grad_loss) -> list:
    """dL/d(query, key, negatives, temperature) as differentiable functions of the inputs, for
    a double backward (gradient penalties, Hessian-vector products, meta-learning).

    Recomputes the loss with the (N, 1+K) logits and lets autograd differentiate it: the memory
    the chunked path saves is spent here, only when a second derivative is asked for.
    """
    n = negatives.to(query.dtype)
    n = F.normalize(n, dim=1) if ctx.normalize else n  # (K, D)
    l_pos = (query * key).sum(dim=1, keepdim=True)  # (N, 1)
    similarities = torch.cat([l_pos, query @ n.T], dim=1)  # (N, 1+K)
    logits = over_temperature(similarities, temperature, ctx.normalize, dim=1)  # (N, 1+K)
    lse = torch.logsumexp(logits[:, 1:] if ctx.decoupled else logits, dim=1)  # (N,)
    loss = lse - logits[:, 0]  # (N,)
    needs = ctx.needs_input_grad[:4]
    inputs = (query, key, negatives, temperature)
    wanted = [t for t, need in zip(inputs, needs, strict=True) if need]
    grads = iter(torch.autograd.grad(loss, wanted, grad_loss, create_graph=True))
    return [next(grads) if need else None for need in needs]


def chunked_info_nce(
    query: Tensor,
    key: Tensor,
    negatives: Tensor,
    temperature: float | Tensor = 0.07,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    decoupled: bool = False,
) -> Tensor:
    """:func:`infonce.info_nce` with shared negatives (K, D), computed in chunks over K.

    Equal to the reference (a softmax over ``[q.k+, q.k_1, ..., q.k_K] / T``) to float
    rounding, with two matrix products in all and O(N x chunk_size) extra memory: the
    (N, 1+K) logits are never materialised, and the gradient with respect to the query is
    accumulated during the forward pass (so backward costs almost nothing). A gradient with
    respect to ``negatives``, when they require one, is recomputed chunk by chunk in backward.
    Double backward (``create_graph=True``) is supported: that backward recomputes the loss
    from the (N, 1+K) logits so that autograd can differentiate it again (exact second
    derivatives, the reference's memory, only then).
    :func:`infonce.info_nce` takes this path by itself for large K.

    Args:
        query: the queries ``q``.
        key: the positive key of each query.
        negatives: negatives shared by every query (e.g. a MoCo queue); K = 0 is allowed.
        temperature: positive finite ``T``, or a 0-d tensor that receives ``dL/dT`` (then the
            running-maximum log-sum-exp is used: T is not read on the host).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        normalize: L2-normalise query, key and negatives along D first.
        chunk_size: negatives per chunk (>= 1); 4,096 is near the fastest on CPUs and GPUs.
        decoupled: the decoupled loss (DCL) of :func:`infonce.info_nce`: the positive out of
            the log-sum-exp (then K >= 1).

    Returns:
        The loss, float32 (float64 for float64 inputs): a scalar, or (N,) for ``"none"``.

    Shape:
        query (N, D), key (N, D), negatives (K, D); output () or (N,).

    Raises:
        ValueError: as :func:`infonce.info_nce`; also ``negatives`` not a (K, D) tensor (None
            included) or a ``chunk_size`` that is not an integer >= 1.
    """
    reduction = check_reduction(reduction)
    temperature = check_info_nce(
        query, key, negatives, temperature, normalize, shared=True, decoupled=decoupled
    )
    check_int(chunk_size, "chunk_size")
    args = (query, key, negatives, temperature, normalize, chunk_size)
    return reduce_loss(_chunked(*args, stats=False, decoupled=decoupled).loss, reduction)


def chunked_info_nce_stats(
    query: Tensor,
    key: Tensor,
    negatives: Tensor,
    temperature: float | Tensor = 0.07,
    normalize: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    decoupled: bool = False,
) -> InfoNCEStats:
    """Per-query loss of :func:`chunked_info_nce` and the logit statistics worth logging.

    The statistics come from the same pass (one more read of each chunk of logits): the
    positive logit, the largest and the mean negative logit (all divided by ``T``). The
    positive is the top-1 of the ``1 + K`` logits exactly when ``positive_logit >=
    max_negative_logit`` (ties go to the positive, as ``argmax`` over ``[pos, negs]`` does).
    With K = 0 the loss is 0, the largest negative logit ``-inf`` and the mean 0. With
    ``decoupled`` the loss is the decoupled one (K >= 1); the statistics are the same.

    Arguments and errors as :func:`chunked_info_nce`.

    Shape:
        query (N, D), key (N, D), negatives (K, D); every field of the result (N,).
    """
    temperature = check_info_nce(
        query, key, negatives, temperature, normalize, shared=True, decoupled=decoupled
    )
    check_int(chunk_size, "chunk_size")
    args = (query, key, negatives, temperature, normalize, chunk_size)
    return _chunked(*args, stats=True, decoupled=decoupled)


def _chunked(
    query, key, negatives, temperature, normalize, chunk_size, stats, decoupled
) -> InfoNCEStats:
    """The core of :func:`chunked_info_nce` and :func:`chunked_info_nce_stats`, on checked
    arguments; ``stats=False`` skips the logit statistics (one pass per chunk less)."""
    dtype = compute_dtype(query)
    if not torch.is_grad_enabled():  # else the Function would still accumulate dL/dq
        query, key, negatives = query.detach(), key.detach(), negatives.detach()
        temperature = temperature.detach() if isinstance(temperature, Tensor) else temperature
    with torch.autocast(device_type=query.device.type, enabled=False):
        q, k = query.to(dtype), key.to(dtype)
        temperature = temperature_like(temperature, q)
        if normalize:
            q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        args = (q, k, negatives, temperature, normalize, chunk_size, stats, decoupled)
        return InfoNCEStats(*_ChunkedQueueInfoNCE.apply(*args))


class _ChunkBuffers:
    """One (N, C) logits buffer and one (C, D) buffer for a normalised or cast chunk."""

    def __init__(self, N: int, D: int, C: int, like: Tensor):
        self._logits = like.new_empty(N * C)
        self._chunk = like.new_empty(C, D)

    def chunk(self, raw: Tensor, normalize: bool) -> Tensor:
        """``raw`` (C, D) L2-normalised along D (as F.normalize), in the compute dtype."""
        out = self._chunk[: raw.shape[0]]
        if normalize:
            norm = torch.linalg.vector_norm(raw, dim=1, keepdim=True, dtype=out.dtype)  # (C, 1)
            return torch.div(raw, norm.clamp_min_(1e-12), out=out)
        return raw if raw.dtype == out.dtype else out.copy_(raw)

    def logits(self, q2: Tensor, n: Tensor) -> Tensor:
        """``q2 @ n.T`` (N, C), written into the buffer."""
        out = self._logits[: q2.shape[0] * n.shape[0]].view(q2.shape[0], n.shape[0])
        return torch.mm(q2, n.T, out=out)
