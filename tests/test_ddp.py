"""MoCo under Lightning's DDP, proven with real processes on the CPU (gloo), through train.py.

Every test starts ``train.py`` processes as a user would (``--trainer.devices 2 --trainer.strategy
ddp``, or two launches as two nodes), on the 24-image tiny folder.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from train_helpers import REPO, TRAIN, knn_top1_values, load, run_train, tiny_args

pytestmark = pytest.mark.slow

DDP = ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]


def dump_to(folder) -> list[str]:
    callback = {"class_path": "tests.ddp_helpers.DumpRankState", "init_args": {"out": str(folder)}}
    return [f"--trainer.callbacks+={json.dumps(callback)}"]


def ranks(folder) -> list[dict]:
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_two_processes_hold_the_same_queue_and_momentum_encoder_after_every_step(
    tiny_folder, tmp_path
):
    args = tiny_args(tiny_folder, *DDP, "--trainer.devices", "2", "--trainer.max_steps", "3")
    run_train(["fit", *args, *dump_to(tmp_path / "dump")], cwd=tmp_path)
    rank0, rank1 = ranks(tmp_path / "dump")
    assert rank0["world_size"] == 2
    a, b = rank0["state_dict"], rank1["state_dict"]
    for name in ("queue.queue", "queue.ptr", "queue.filled"):
        assert torch.equal(a[name], b[name]), name
    for name in a:  # parameters of both encoders (BN running statistics are rank 0's: DDP
        if "running_" not in name and "num_batches" not in name:  # broadcasts them)
            assert torch.equal(a[name], b[name]), name
    # the queue holds the keys of rank 0, then rank 1, step after step (3 x 2 x 8 of 64 rows)
    steps = zip(rank0["keys"], rank1["keys"], strict=True)
    expected = torch.cat([torch.cat(keys) for keys in steps])
    assert int(a["queue.filled"]) == int(a["queue.ptr"]) == 48
    assert torch.equal(a["queue.queue"][:48], expected.to(a["queue.queue"].dtype))
    # DDP does not broadcast the queue before every forward: it is already the same everywhere
    assert rank0["ddp_ignored"] == ["queue.filled", "queue.ptr", "queue.queue"]


def one_process_of_16_and_two_of_8(common: list[str], tmp_path) -> tuple[dict, dict, dict]:
    """Runs ``common`` as one process of batch 16 (4 BN splits) and as two DDP processes of 8
    (2 splits each: the same groups); returns what the single rank, rank 0 and rank 1 held."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    one_args = ["--data.batch_size", "16", "--model.bn_splits", "4"]
    run_train(["fit", *common, *one_args, *dump_to(one / "dump")], cwd=one)
    two_args = ["--data.batch_size", "8", "--model.bn_splits", "2", *DDP, "--trainer.devices", "2"]
    run_train(["fit", *common, *two_args, *dump_to(two / "dump")], cwd=two)
    single = torch.load(one / "dump" / "rank0.pt", weights_only=True)
    return single, *ranks(two / "dump")


def test_two_processes_of_batch_b_train_as_one_process_of_batch_2b(tiny_folder, tmp_path):
    """With the cross-rank shuffle, a global batch of 2 x 8 is the batch of 16 of one process:
    same images (blocked ranks), same views (per-image seeds), same BN groups, same keys. In
    float64, so that the two reduction orders agree to 1e-9 (in float32 they drift apart by a
    few 1e-4 over a step whose gradients are large)."""
    common = [
        *tiny_args(tiny_folder, "--trainer.max_steps", "3", "--trainer.precision", "64-true"),
        "--data.resident", "false", "--data.num_workers", "0",
        "--model.bn_guard", "shuffle", "--model.queue_init", "random",
    ]  # fmt: skip
    single, rank0, rank1 = one_process_of_16_and_two_of_8(common, tmp_path)
    mean_loss = [(x + y) / 2 for x, y in zip(rank0["losses"], rank1["losses"], strict=True)]
    assert mean_loss == pytest.approx(single["losses"], rel=1e-12)  # float64 rounding
    for step, (k0, k1) in enumerate(zip(rank0["keys"], rank1["keys"], strict=True)):
        torch.testing.assert_close(torch.cat([k0, k1]), single["keys"][step], rtol=1e-9, atol=1e-12)
    for name, tensor in single["state_dict"].items():
        if "running_" not in name and "num_batches" not in name:
            torch.testing.assert_close(rank0["state_dict"][name], tensor, rtol=1e-9, atol=1e-12)


def test_a_world_of_one_under_ddp_is_exactly_no_ddp(tiny_folder, tmp_path):
    plain, ddp = tmp_path / "plain", tmp_path / "ddp"
    plain.mkdir(), ddp.mkdir()
    args = tiny_args(tiny_folder, "--trainer.max_steps", "4", "--trainer.deterministic", "true")
    run_train(["fit", *args], cwd=plain)
    run_train(["fit", *args, *DDP, "--trainer.devices", "1"], cwd=ddp)
    a = load(plain / "runs/cpu_quick/checkpoints/last.ckpt")
    b = load(ddp / "runs/cpu_quick/checkpoints/last.ckpt")
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name


def test_resume_under_two_processes_is_exact(tiny_folder, tmp_path):
    """Global batch 2 x 4: 3 steps an epoch; 8 straight == 4 (mid-epoch) + resume + 4."""
    args = tiny_args(tiny_folder, *DDP, "--trainer.devices", "2", "--data.batch_size", "4",
                     "--model.bn_splits", "2", "--trainer.max_epochs", "4")  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir(), resumed.mkdir()
    run_train(["fit", *args, "--trainer.max_steps", "8"], cwd=straight)
    run_train(["fit", *args, "--trainer.max_steps", "4"], cwd=resumed)
    run_train(["fit", *args, "--trainer.max_steps", "8", "--ckpt_path", "last"], cwd=resumed)
    a = load(straight / "runs/cpu_quick/checkpoints/last.ckpt")
    b = load(resumed / "runs/cpu_quick/checkpoints/last.ckpt")
    assert a["global_step"] == b["global_step"] == 8
    assert a["ImageDataModule"] == b["ImageDataModule"]
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_localhost_train_together_and_write_one_checkpoint(tiny_folder, tmp_path):
    args = tiny_args(tiny_folder, *DDP, "--trainer.devices", "1", "--trainer.num_nodes", "2",
                     "--trainer.max_steps", "3")  # fmt: skip
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    nodes = [
        subprocess.Popen(
            [sys.executable, TRAIN, "fit", *args, *dump_to(tmp_path / "dump")],
            cwd=tmp_path,
            env={**env, "NODE_RANK": str(node)},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for node in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert [p.name for p in (tmp_path / "runs/cpu_quick/checkpoints").iterdir()] == ["last.ckpt"]
    assert load(tmp_path / "runs/cpu_quick/checkpoints/last.ckpt")["global_step"] == 3
    rank0, rank1 = ranks(tmp_path / "dump")
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert torch.equal(rank0["state_dict"]["queue.queue"], rank1["state_dict"]["queue.queue"])


def test_knn_under_ddp_equals_one_process_with_an_odd_dataset(tiny_folder, tmp_path):
    """23 memory images and 12 queries: not a multiple of 2; the untrained network, k = 5."""
    args = tiny_args(tiny_folder, "--data.limit_train_images", "23", "--model.knn_k", "5",
                     "--model.knn_feature", "head", "--data.eval_batch_size", "4")  # fmt: skip
    run_train(["fit", *args, "--trainer.max_steps", "1"], cwd=tmp_path)
    last = str(tmp_path / "runs/cpu_quick/checkpoints/last.ckpt")
    run_train(["validate", *args, "--ckpt_path", last], cwd=tmp_path)
    run_train(["validate", *args, "--ckpt_path", last, *DDP, "--trainer.devices", "2"], tmp_path)
    one, two = knn_top1_values(tmp_path / "runs/cpu_quick")
    assert one == two


def test_linear_probe_top1_under_ddp_equals_one_process(tiny_folder, tmp_path):
    run_train(["fit", *tiny_args(tiny_folder, "--trainer.max_steps", "1")], cwd=tmp_path)
    probe = [
        "--config", str(REPO / "configs/linear_probe.yaml"),
        "--model.pretrained", str(tmp_path / "runs/cpu_quick/checkpoints/last.ckpt"),
        "--model.num_classes", "3", "--data.dataset", "folder", "--data.root", str(tiny_folder),
        "--data.batch_size", "8", "--data.eval_batch_size", "2", "--data.num_workers", "0",
        "--data.limit_test_images", "11", "--trainer.max_epochs", "1",
        "--trainer.accelerator", "cpu",
    ]  # fmt: skip
    run_train(["fit", *probe], cwd=tmp_path)
    last = str(tmp_path / "runs/linear_probe/checkpoints/last.ckpt")
    one = run_train(
        ["test", *probe, "--ckpt_path", last, "--model.logits_file", "one.pt"], tmp_path
    )
    two = run_train(
        ["test", *probe, "--ckpt_path", last, "--model.logits_file", "two.pt", *DDP,
         "--trainer.devices", "2"], tmp_path,
    )  # fmt: skip
    saved = [torch.load(tmp_path / f, weights_only=True) for f in ("one.pt", "two.pt")]
    # every test image once, also under DDP (rank by rank: compare as sets of rows)
    assert saved[0]["logits"].shape == saved[1]["logits"].shape == (11, 3)
    rows = [torch.tensor(sorted(torch.cat([s["logits"], s["labels"][:, None].float()], 1).tolist()))
            for s in saved]  # fmt: skip
    torch.testing.assert_close(rows[0], rows[1], rtol=1e-5, atol=1e-6)

    def top1(result) -> str:
        (line,) = [row for row in result.stdout.splitlines() if "test/top1" in row]
        return line.split()[-1]

    assert top1(one) == top1(two)


@pytest.mark.parametrize(
    "method, extra",
    [("simclr", []), ("moco_v3", []), ("supcon", []), ("supcon", ["--model.queue_size", "20"])],
    ids=["simclr", "moco_v3", "supcon", "supcon_queue"],
)
def test_every_method_on_two_processes_trains_as_one_process_of_twice_the_batch(
    method, extra, tiny_folder, tmp_path
):
    """2 x 8 images == 16 in one process, in float64: SimCLR's and SupCon's embeddings (and
    labels) gathered with their gradient, MoCo v3's keys gathered, SupCon's queue of labelled
    keys filled with every rank's keys (equal on both ranks); each rank's BatchNorm groups
    (backbone and heads) are the one process's split groups."""
    common = [
        *tiny_args(tiny_folder, "--trainer.max_steps", "3", "--trainer.precision", "64-true",
                   *extra, method=method),
        "--data.resident", "false", "--data.num_workers", "0",
    ]  # fmt: skip
    single, rank0, rank1 = one_process_of_16_and_two_of_8(common, tmp_path)
    mean_loss = [(x + y) / 2 for x, y in zip(rank0["losses"], rank1["losses"], strict=True)]
    assert mean_loss == pytest.approx(single["losses"], rel=1e-9)
    for name, tensor in single["state_dict"].items():
        if "running_" not in name and "num_batches" not in name:
            torch.testing.assert_close(rank0["state_dict"][name], tensor, rtol=1e-9, atol=1e-10)
            assert torch.equal(rank0["state_dict"][name], rank1["state_dict"][name]), name
