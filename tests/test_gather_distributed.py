"""``gather_distributed=True`` with two real processes (gloo, CPU, float64): R ranks of N
samples give the one-process loss and gradients of the RN samples.

One job per module: the two ranks run every check in :func:`_rank_checks` once (this file,
started as a script), save what they computed, and each test compares a part of it with the
one-process loss of the concatenated batch, computed here without any process group.

The identities checked, for rank losses ``L_r`` whose average is the one-process loss ``L``
(what the reductions are scaled for):

- ``mean_r L_r == L``;
- with inputs ``x_r = u_r @ W`` from a parameter ``W`` replicated on every rank, the average
  over ranks of ``W.grad`` (what DDP's all-reduce computes) is the one-process ``W.grad``;
  likewise for a shared temperature;
- the gradient that reaches rank ``r``'s own inputs, ``d(sum_s L_s)/dx_r`` (the gather's
  backward sums the other ranks' contributions into it), is ``R dL/dx_r``.
"""

import os
import subprocess
import sys
import tempfile
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from infonce import (
    LearnableTemperature,
    clip_loss,
    gather_with_grad,
    nt_xent,
    rank_and_world_size,
    supcon,
)

REPO = Path(__file__).resolve().parents[1]
WORLD, N, D_IN, D = 2, 4, 3, 5
SUPCON_LABELS = {  # global labels (R*N,), rank r holding rows r*N:(r+1)*N
    # one view: rank 0 holds 1 anchor with positives (label 0), rank 1 holds 2 (0 and 0)
    "uneven": [0, 1, 2, 3, 0, 0, 5, 6],
    # rank 1 holds no anchor with positives at all: its loss is 0, its backward still runs
    "none_on_rank_1": [0, 0, 1, 2, 3, 4, 5, 6],
}
NT_XENT_CASES = {  # name: (reduction, normalize, chunk_size, decoupled)
    "mean": ("mean", True, None, False),
    "sum_raw_chunked": ("sum", False, 3, False),
    "decoupled": ("mean", True, None, True),
    "decoupled_raw_sum": ("sum", False, 2, True),
}
SUPCON_CASES = {  # name: (labels or None, views, reduction, chunk_size)
    "uneven": ("uneven", 1, "mean", None),
    "none_on_rank_1": ("none_on_rank_1", 1, "mean", 3),
    "uneven_two_views_sum": ("uneven", 2, "sum", None),
    "no_labels": (None, 2, "mean", None),
}
CLIP_CASES = {  # name: (reduction, normalize, learnable temperature)
    "mean_learnable": ("mean", True, True),
    "sum_raw": ("sum", False, False),
}


def _inputs(*shapes, seed: int) -> list[torch.Tensor]:
    """Seeded float64 tensors, the same in every process."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for shape in shapes]


def _rows(x: torch.Tensor, rank: int) -> torch.Tensor:
    """Rank ``rank``'s N samples of a global batch (R*N, ...)."""
    return x[rank * N : (rank + 1) * N]


# ---------------------------------------------------------------------------------------------
# The losses, written once for both sides: rank r of a world of R (under a process group,
# gather_distributed=True), or the whole batch in one process (rank=None).


def _nt_xent_step(case: str, rank: int | None) -> dict:
    reduction, normalize, chunk_size, decoupled = NT_XENT_CASES[case]
    u1, u2, W = _inputs((WORLD * N, D_IN), (WORLD * N, D_IN), (D_IN, D), seed=1)
    if rank is not None:
        u1, u2 = _rows(u1, rank), _rows(u2, rank)
    W = W.requires_grad_()
    T = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    z1, z2 = u1 @ W, u2 @ W  # (n, D) each
    z1.retain_grad(), z2.retain_grad()
    loss = nt_xent(
        z1, z2, T, reduction, normalize, chunk_size, decoupled, gather_distributed=rank is not None
    )
    loss.backward()
    with torch.no_grad():  # the gather without autograd; reduction "none"
        per_view = nt_xent(z1, z2, T, "none", normalize, chunk_size, decoupled, rank is not None)
    return {"loss": loss.detach(), "none": per_view, "W": W.grad, "T": T.grad,
            "z1": z1.grad, "z2": z2.grad}  # fmt: skip


def _supcon_step(case: str, rank: int | None) -> dict:
    labels_name, V, reduction, chunk_size = SUPCON_CASES[case]
    u, W = _inputs((WORLD * N, V, D_IN), (D_IN, D), seed=2)
    labels = None if labels_name is None else torch.tensor(SUPCON_LABELS[labels_name])
    if rank is not None:
        u = _rows(u, rank)
        labels = None if labels is None else _rows(labels, rank)
    W = W.requires_grad_()
    features = u @ W  # (n, V, D)
    features.retain_grad()
    gather = rank is not None
    loss = supcon(features, labels, 0.2, reduction, True, chunk_size, gather_distributed=gather)
    loss.backward()
    with torch.no_grad():
        per_anchor = supcon(features, labels, 0.2, "none", True, chunk_size, gather)
    return {"loss": loss.detach(), "none": per_anchor, "W": W.grad, "features": features.grad}


def _clip_step(case: str, rank: int | None) -> dict:
    reduction, normalize, learnable = CLIP_CASES[case]
    u_image, u_text, W_image, W_text = _inputs(
        (WORLD * N, D_IN), (WORLD * N, 4), (D_IN, D), (4, D), seed=3
    )
    if rank is not None:
        u_image, u_text = _rows(u_image, rank), _rows(u_text, rank)
    W_image, W_text = W_image.requires_grad_(), W_text.requires_grad_()
    temperature = LearnableTemperature(0.1).double() if learnable else 0.5
    image, text = u_image @ W_image, u_text @ W_text  # (n, D) each
    image.retain_grad(), text.retain_grad()
    gather = rank is not None
    loss = clip_loss(image, text, temperature, reduction, normalize, gather_distributed=gather)
    loss.backward()
    with torch.no_grad():
        per_pair = clip_loss(image, text, temperature, "none", normalize, gather)
    T_grad = temperature.log_scale.grad if learnable else torch.tensor(0.0)
    return {"loss": loss.detach(), "none": per_pair, "W_image": W_image.grad,
            "W_text": W_text.grad, "T": T_grad, "image": image.grad, "text": text.grad}  # fmt: skip


def _mismatched_batches(rank: int) -> dict:
    """Rank 0 holds 4 samples, rank 1 holds 3: every rank must raise, none may wait."""
    n = 4 if rank == 0 else 3
    (x,) = _inputs((n, 2, D), seed=4)
    calls = {
        "nt_xent": lambda: nt_xent(x[:, 0], x[:, 1], gather_distributed=True),
        "supcon": lambda: supcon(x, torch.arange(n), gather_distributed=True),
        "clip_loss": lambda: clip_loss(x[:, 0], x[:, 1], gather_distributed=True),
    }
    messages = {}
    for name, call in calls.items():
        try:
            call()
            messages[name] = "no error"
        except ValueError as err:
            messages[name] = str(err)
    # the group is still in step afterwards: one more collective that must complete
    after = nt_xent(*_inputs((N, D), (N, D), seed=5), gather_distributed=True)
    messages["after"] = repr(float(after))
    return messages


def _gather_with_grad_closed_form(rank: int) -> dict:
    """Rank q's loss ``sum_s (1 + q) 10^s sum(parts[s])``: the gradient reaching rank r's x is
    ``sum_q (1 + q) 10^r = 3 10^r`` per entry, for R = 2."""
    x = torch.full((2, 3), float(rank + 1), dtype=torch.float64, requires_grad=True)
    parts = gather_with_grad(x)
    loss = sum((1 + rank) * 10.0**s * part.sum() for s, part in enumerate(parts))
    loss.backward()
    try:
        gather_with_grad(torch.zeros((1,) * 9))
        too_many = "no error"
    except ValueError as err:
        too_many = str(err)
    return {"parts": torch.stack([p.detach() for p in parts]), "grad": x.grad,
            "same_object": parts[rank] is x, "too_many_dims": too_many}  # fmt: skip


def _rank_checks(rank: int) -> dict:
    assert rank_and_world_size() == (rank, WORLD)
    results = {"gather": _gather_with_grad_closed_form(rank)}
    for case in NT_XENT_CASES:
        results[f"nt_xent/{case}"] = _nt_xent_step(case, rank)
    for case in SUPCON_CASES:
        results[f"supcon/{case}"] = _supcon_step(case, rank)
    for case in CLIP_CASES:
        results[f"clip/{case}"] = _clip_step(case, rank)
    results["mismatch"] = _mismatched_batches(rank)
    return results


def _worker(rank: int, init_method: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=WORLD,
        timeout=timedelta(seconds=30),  # a rank left waiting fails instead of hanging
    )  # fmt: skip
    try:
        results = _rank_checks(rank)
    except BaseException:  # saved for the test to show
        results = {"error": traceback.format_exc()}
    finally:
        dist.destroy_process_group()
    torch.save(results, out)


# ---------------------------------------------------------------------------------------------
# The tests (in the pytest process, which has no process group)


@pytest.fixture(scope="module")
def ranks() -> list[dict]:
    """Both ranks' results of :func:`_rank_checks`, from one run of two processes."""
    with tempfile.TemporaryDirectory() as folder:
        init = f"file://{folder}/rendezvous"
        path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
        outs = [os.path.join(folder, f"rank{r}.pt") for r in range(WORLD)]
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, str(r), init, outs[r]],
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            for r in range(WORLD)
        ]
        try:
            logs = [p.communicate(timeout=120)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        assert [p.returncode for p in procs] == [0] * WORLD, "\n".join(logs)
        results = [torch.load(out, weights_only=True) for out in outs]
    for r, result in enumerate(results):
        assert "error" not in result, f"rank {r}:\n{result.get('error')}"
    return results


def _close(got, want):
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _average(ranks, case, key):
    return sum(r[case][key] for r in ranks) / WORLD


@pytest.mark.parametrize("case", list(NT_XENT_CASES))
def test_nt_xent_ranks_average_to_the_one_process_loss_and_gradients(ranks, case):
    one = _nt_xent_step(case, rank=None)
    name = f"nt_xent/{case}"
    _close(_average(ranks, name, "loss"), one["loss"])
    _close(_average(ranks, name, "W"), one["W"])  # DDP's all-reduce average of W.grad
    _close(_average(ranks, name, "T"), one["T"])
    for r, result in enumerate(ranks):
        for key in ("z1", "z2"):  # d(sum_s L_s)/dz_r = R dL/dz_r
            _close(result[name][key], WORLD * _rows(one[key], r))
        local = torch.cat([_rows(one["none"][: WORLD * N], r), _rows(one["none"][WORLD * N :], r)])
        _close(result[name]["none"], local)  # z1's views, then z2's, of this rank's samples
    assert one["loss"].dtype == torch.float64


@pytest.mark.parametrize("case", list(SUPCON_CASES))
def test_supcon_ranks_average_to_the_one_process_loss_and_gradients(ranks, case):
    one = _supcon_step(case, rank=None)
    name = f"supcon/{case}"
    _close(_average(ranks, name, "loss"), one["loss"])
    _close(_average(ranks, name, "W"), one["W"])
    for r, result in enumerate(ranks):
        _close(result[name]["features"], WORLD * _rows(one["features"], r))
        _close(result[name]["none"], _rows(one["none"], r))


def test_supcon_mean_is_the_global_mean_over_anchors_with_positives_not_the_local_mean(ranks):
    """ "uneven": rank 0 holds 1 anchor with positives, rank 1 holds 2. The average of the
    ranks' local means would weigh rank 0's anchor twice as much as the others."""
    per_anchor = [r["supcon/uneven"]["none"] for r in ranks]  # (N, 1) each
    counted = [p[p != 0] for p in per_anchor]
    assert [len(c) for c in counted] == [1, 2]
    global_mean = torch.cat(counted).mean()
    _close(_average(ranks, "supcon/uneven", "loss"), global_mean)
    local_means = sum(c.mean() for c in counted) / WORLD
    assert abs(float(local_means - global_mean)) > 1e-3  # the two differ on these inputs
    result = ranks[1]["supcon/none_on_rank_1"]
    assert float(result["none"].abs().max()) == 0.0 and float(result["loss"]) == 0.0
    assert result["features"].abs().max() > 0  # rank 0's loss pulls rank 1's rows


@pytest.mark.parametrize("case", list(CLIP_CASES))
def test_clip_loss_ranks_average_to_the_one_process_loss_and_gradients(ranks, case):
    one = _clip_step(case, rank=None)
    name = f"clip/{case}"
    for key in ("loss", "W_image", "W_text", "T"):
        _close(_average(ranks, name, key), one[key])
    for r, result in enumerate(ranks):
        for key in ("image", "text"):
            _close(result[name][key], WORLD * _rows(one[key], r))
        _close(result[name]["none"], _rows(one["none"], r))
    if CLIP_CASES[case][2]:
        assert one["T"] != 0  # the learnable temperature's gradient is compared, not zeros


def test_gather_with_grad_returns_every_rank_and_sums_gradients_back(ranks):
    for r, result in enumerate(ranks):
        gathered = result["gather"]
        assert torch.equal(
            gathered["parts"][:, 0, 0], torch.tensor([1.0, 2.0], dtype=torch.float64)
        )
        assert gathered["same_object"]  # its own entry is the input itself
        assert torch.equal(gathered["grad"], torch.full((2, 3), 3.0 * 10.0**r, dtype=torch.float64))
        assert "x must have at most 8 dimensions, got 9" == gathered["too_many_dims"]


def test_mismatched_batch_sizes_raise_a_value_error_on_every_rank_without_hanging(ranks):
    for result in ranks:
        messages = result["mismatch"]
        for name, what in (("nt_xent", "cat(z1, z2)"), ("supcon", "features"),
                           ("clip_loss", "stack([image, text])")):  # fmt: skip
            assert "must have one shape on every rank" in messages[name], (name, messages[name])
            assert messages[name].startswith(what), messages[name]
        assert "(8, 5), (6, 5)" in messages["nt_xent"]  # each rank's shape, named
        assert messages["after"] == ranks[0]["mismatch"]["after"]  # the group still in step


def test_without_a_process_group_gather_distributed_changes_nothing():
    assert rank_and_world_size() == (0, 1) and not dist.is_initialized()
    x = torch.randn(3, 2)
    (only,) = gather_with_grad(x)
    assert only is x
    (z1, z2), (f,), labels = _inputs((N, D), (N, D), seed=6), _inputs((N, 2, D), seed=7), None
    for reduction in ("mean", "sum", "none"):
        for decoupled in (False, True):
            kwargs = {"reduction": reduction, "decoupled": decoupled}
            assert torch.equal(
                nt_xent(z1, z2, **kwargs, gather_distributed=True), nt_xent(z1, z2, **kwargs)
            )
        for labels in (None, torch.tensor([0, 1, 0, 2])):
            assert torch.equal(
                supcon(f, labels, reduction=reduction, gather_distributed=True),
                supcon(f, labels, reduction=reduction),
            )
        assert torch.equal(
            clip_loss(z1, z2, reduction=reduction, gather_distributed=True),
            clip_loss(z1, z2, reduction=reduction),
        )


def test_gather_distributed_must_be_a_bool():
    (z,) = _inputs((N, D), seed=8)
    for call in (
        lambda flag: nt_xent(z, z, gather_distributed=flag),
        lambda flag: supcon(z[:, None], gather_distributed=flag),
        lambda flag: clip_loss(z, z, gather_distributed=flag),
    ):
        with pytest.raises(ValueError, match="gather_distributed must be True or False, got 1"):
            call(1)


if __name__ == "__main__":  # one rank of the job the ``ranks`` fixture starts
    _worker(int(sys.argv[1]), sys.argv[2], sys.argv[3])
