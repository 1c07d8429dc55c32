"""Loop references shared by several test files, straight from the formulas, in float64.

Imported as ``from references import ...``: pytest puts this folder on ``sys.path`` (the
default ``prepend`` import mode, no ``__init__.py`` here), so a test file collected from any
working directory finds it.
"""

import math

import torch


def _query_key_negatives(query, key, negatives, normalize):
    """Per query: (q, its key, the list of its negatives), L2-normalised when ``normalize``.

    negatives: (K, D) shared, (N, M, D) per query, or None (the other keys of the batch).
    """
    for i in range(query.shape[0]):
        q, k = query[i], key[i]
        if negatives is None:
            negs = [key[j] for j in range(key.shape[0]) if j != i]
        elif negatives.dim() == 2:
            negs = list(negatives)
        else:
            negs = list(negatives[i])
        if normalize:
            q, k = q / q.norm(), k / k.norm()
            negs = [n / n.norm() for n in negs]
        yield q, k, negs


def reference_info_nce(query, key, negatives, temperature, reduction, normalize):
    """InfoNCE by a loop over samples, float64 Python arithmetic.

    negatives: (K, D) shared, (N, M, D) per query, or None (the other keys of the batch).
    """
    losses = []
    for q, k, negs in _query_key_negatives(query, key, negatives, normalize):
        pos = math.exp(float(q @ k) / temperature)
        denom = pos + sum(math.exp(float(q @ n) / temperature) for n in negs)
        losses.append(-math.log(pos / denom))
    losses = torch.tensor(losses, dtype=torch.float64)
    return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]


def reference_decoupled_info_nce(query, key, negatives, temperature, normalize):
    """The decoupled contrastive loss (Yeh et al., 2022) by a loop over queries, per query:
    ``-q.k+/T + log sum_{negatives n} exp(q.n/T)``, the positive in the numerator only.

    Written with float64 torch scalars, so that autograd gives the reference gradients too.
    negatives: (K, D) shared, (N, M, D) per query, or None (the other keys of the batch).
    Returns the (N,) losses.
    """
    losses = []
    for q, k, negs in _query_key_negatives(query, key, negatives, normalize):
        denominator = sum(torch.exp(q @ n / temperature) for n in negs)
        losses.append(-(q @ k) / temperature + torch.log(denominator))
    return torch.stack(losses)


def reference_decoupled_nt_xent(z1, z2, temperature, normalize):
    """The decoupled contrastive loss (Yeh et al., 2022, L_DC) of SimCLR's 2N views, by a loop:
    view ``i``'s loss is ``-s(i, p)/T + log sum_j exp(s(i, j)/T)``, ``p`` its other view and
    ``j`` over the 2N - 2 views of the other samples (neither ``i`` nor ``p``).

    Float64 torch scalars, so that autograd gives the reference gradients too. Returns the
    (2N,) losses, ``z1``'s views first.
    """
    z = list(torch.cat([z1, z2]))
    N = z1.shape[0]
    if normalize:
        z = [v / v.norm() for v in z]
    losses = []
    for i in range(2 * N):
        p = (i + N) % (2 * N)
        others = [j for j in range(2 * N) if j % N != i % N]  # the views of other samples
        denominator = sum(torch.exp(z[i] @ z[j] / temperature) for j in others)
        losses.append(-(z[i] @ z[p]) / temperature + torch.log(denominator))
    return torch.stack(losses)


def reference_clip_loss(image, text, temperature, normalize):
    """OpenCLIP's ``ClipLoss`` (one process) written out: ``logit_scale = 1 / T``,
    ``logits_per_image = logit_scale * image @ text.T``, ``logits_per_text`` its transpose,
    ``(CE(logits_per_image, arange(N)) + CE(logits_per_text, arange(N))) / 2``.

    Differentiable (float64 in, float64 out); returns the scalar mean loss.
    """
    if normalize:
        image, text = image / image.norm(dim=1, keepdim=True), text / text.norm(dim=1, keepdim=True)
    logit_scale = 1.0 / temperature
    logits_per_image = logit_scale * image @ text.T  # (N, N)
    logits_per_text = logits_per_image.T  # (N, N)
    labels = torch.arange(image.shape[0])
    return (
        torch.nn.functional.cross_entropy(logits_per_image, labels)
        + torch.nn.functional.cross_entropy(logits_per_text, labels)
    ) / 2


def reference_clip_loss_per_pair(image, text, temperature, normalize):
    """CLIP's loss by a loop over pairs, Python float arithmetic: pair ``i``'s loss is the mean
    of image ``i``'s ``-log exp(s_ii/T) / sum_j exp(s_ij/T)`` and text ``i``'s
    ``-log exp(s_ii/T) / sum_j exp(s_ji/T)``, ``s_ij = image_i . text_j``. Returns (N,) float64.
    """
    N = image.shape[0]
    if normalize:
        image = [v / v.norm() for v in image]
        text = [v / v.norm() for v in text]
    s = [[float(image[i] @ text[j]) / temperature for j in range(N)] for i in range(N)]
    losses = []
    for i in range(N):
        per_image = -math.log(math.exp(s[i][i]) / sum(math.exp(s[i][j]) for j in range(N)))
        per_text = -math.log(math.exp(s[i][i]) / sum(math.exp(s[j][i]) for j in range(N)))
        losses.append((per_image + per_text) / 2)
    return torch.tensor(losses, dtype=torch.float64)
