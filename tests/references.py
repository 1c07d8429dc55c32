"""Loop references shared by several test files, straight from the formulas, in float64.

Imported as ``from references import ...``: pytest puts this folder on ``sys.path`` (the
default ``prepend`` import mode, no ``__init__.py`` here), so a test file collected from any
working directory finds it.
"""

import math

import torch


def reference_info_nce(query, key, negatives, temperature, reduction, normalize):
    """InfoNCE by a loop over samples, float64 Python arithmetic.

    negatives: (K, D) shared, (N, M, D) per query, or None (the other keys of the batch).
    """
    losses = []
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
        pos = math.exp(float(q @ k) / temperature)
        denom = pos + sum(math.exp(float(q @ n) / temperature) for n in negs)
        losses.append(-math.log(pos / denom))
    losses = torch.tensor(losses, dtype=torch.float64)
    return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]
