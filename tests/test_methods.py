"""Every method of the trainer on one base (MoCo v2, SimCLR, MoCo v3, SupCon): each trains and
reports kNN and online-linear accuracy, computes its paper's loss, resumes exactly, stops on a
non-finite loss, refuses bad arguments by name and exports a backbone ``load_backbone`` reads.
(MoCo's own behaviour: test_moco.py; under DDP: test_ddp.py.)"""

import copy
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from train_helpers import METHODS, tiny_data, tiny_method, trainer

from infonce import load_backbone
from infonce.trainer.base import NonFiniteLossError
from infonce.trainer.checkpoint import RunCheckpoint
from infonce.trainer.export import export_backbone
from infonce.trainer.moco_v3 import moco_v3_loss


class Recorder(L.Callback):
    """Keeps, for each training batch, the module's state before the step, the batch and the
    loss the step returned."""

    def __init__(self):
        self.states, self.batches, self.losses = [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.states.append(copy.deepcopy(pl_module.state_dict()))
        self.batches.append(batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if outputs else None  # None: a skipped step
        self.losses.append(None if loss is None else loss.detach())


def fit(model, folder, steps: int, **trainer_args) -> Recorder:
    recorder = Recorder()
    args = dict(max_steps=steps, callbacks=[recorder]) | trainer_args
    trainer(**args).fit(model, tiny_data(folder))
    return recorder


# ---- references, float64, written as the papers' and peers' code -----------------------------
def nt_xent_loop(z1, z2, t):
    """SimCLR's loss: for each of the 2N views, -log of its positive's share among the others."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n, total = len(z1), 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        logits = [z[i] @ z[j] / t for j in range(2 * n) if j != i]
        total += -(z[i] @ z[positive] / t - torch.logsumexp(torch.stack(logits), 0))
    return total / (2 * n)


def supcon_loop(z, labels, t, queue=None, queue_labels=None):
    """Khosla et al.'s L_out: z (N, V, D); every other view of the class is a positive; the
    queued keys (K, D) are candidates too, never anchors."""
    n, v, _ = z.shape
    flat, classes = F.normalize(z.reshape(n * v, -1), dim=1), labels.repeat_interleave(v)
    if queue is not None:
        flat = torch.cat([flat, F.normalize(queue.to(flat.dtype), dim=1)])
        classes = torch.cat([classes, queue_labels])
    losses = []
    for a in range(n * v):
        others = [j for j in range(len(flat)) if j != a]
        lse = torch.logsumexp(torch.stack([flat[a] @ flat[j] / t for j in others]), 0)
        positives = [j for j in others if classes[j] == classes[a]]
        if positives:
            losses.append(-sum(flat[a] @ flat[p] / t - lse for p in positives) / len(positives))
    return sum(losses) / len(losses)


def moco_v3_builder(q, k, t):
    """facebookresearch/moco-v3 builder.py ``contrastive_loss`` on one GPU, as a loop."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    rows = [torch.logsumexp(q[i] @ k.T / t, 0) - q[i] @ k[i] / t for i in range(len(q))]
    return torch.stack(rows).mean() * (2 * t)


def expected_loss(name: str, model, batch, t: float) -> torch.Tensor:
    """The loss of a method's step at temperature ``t`` from its networks, written out; float64."""
    (x1, x2), y = batch
    x1, x2 = x1.double(), x2.double()
    if name == "simclr":
        return nt_xent_loop(model.encoder(x1), model.encoder(x2), t)
    if name in ("supcon", "supcon_queue"):
        queued = model.queue.keys_and_labels() if model.queue is not None else (None, None)
        if queued[0] is not None and len(queued[0]) == 0:
            queued = (None, None)
        return supcon_loop(torch.stack([model.encoder(x1), model.encoder(x2)], 1), y, t, *queued)
    if name == "moco_v3":
        q1, q2 = model.predictor(model.encoder(x1)), model.predictor(model.encoder(x2))
        k1, k2 = model.momentum_encoder(x1), model.momentum_encoder(x2)
        return moco_v3_builder(q1, k2, t) + moco_v3_builder(q2, k1, t)
    raise AssertionError(name)


# ---- tests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_each_method_trains_and_reports_knn_and_online_linear_top1(name, tiny_folder):
    model = tiny_method(name)
    before = copy.deepcopy(model.encoder.state_dict())
    t = trainer(max_epochs=2, limit_val_batches=1.0, check_val_every_n_epoch=2)
    t.fit(model, tiny_data(tiny_folder))
    metrics = t.callback_metrics
    assert math.isfinite(float(metrics["train/loss"]))
    assert 0.0 <= float(metrics["val/knn_top1"]) <= 100.0
    assert 0.0 <= float(metrics["val/linear_top1"]) <= 100.0
    assert model.probe is not None and model.probe.out_features == 3  # the tiny folder's classes
    moved = [k for k, v in model.encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("0.") for k in moved) and any(k.startswith("1.") for k in moved)


COSINE_T = dict(temperature_schedule="cosine", temperature_min=0.1, temperature_max=0.9,
                temperature_period_epochs=2.0)  # fmt: skip  # 3 steps an epoch: 6 a period


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("name", ["simclr", "moco_v3", "supcon", "supcon_queue"])
def test_a_step_computes_the_methods_loss_as_its_source_writes_it(name, schedule, tiny_folder):
    """Every step's loss from the networks before it, at the step's T (the method's, or
    Kukleva et al.'s cosine written out: 0.9 at step 0, 0.1 at step 3)."""
    args = dict(online_probe=False, **(COSINE_T if schedule == "cosine" else {}))
    model = tiny_method(name, **args)
    recorder = fit(model, tiny_folder, 4, precision="64-true")  # supcon_queue: empty, 8, 16, 20
    for step, (state, batch, loss) in enumerate(
        zip(recorder.states, recorder.batches, recorder.losses, strict=True)
    ):
        reference = tiny_method(name, **args).double()
        reference.load_state_dict(state)
        reference.train()
        t = model.hparams.temperature
        if schedule == "cosine":
            t = 0.1 + 0.4 * (1 + math.cos(2 * math.pi * (step / 3) / 2.0))
        with torch.no_grad():
            expected = expected_loss(name, reference, batch, t)
        assert float(loss) == pytest.approx(float(expected), rel=1e-10)


@pytest.mark.parametrize("name", METHODS)
def test_a_scheduled_temperature_is_logged_and_resumes_exactly(name, tiny_folder, tmp_path):
    """train/temperature follows the cosine step by step, and a run stopped at step 2 and
    resumed to 5 equals a straight run (the schedule is a function of the step alone)."""
    logged = []

    class Temperatures(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.append(float(trainer.callback_metrics["train/temperature"]))

    torch.manual_seed(0)
    straight = tiny_method(name, **COSINE_T)
    fit(straight, tiny_folder, 5, max_epochs=3, callbacks=[Temperatures()])
    expected = [0.1 + 0.4 * (1 + math.cos(2 * math.pi * (s / 3) / 2.0)) for s in range(5)]
    assert logged == pytest.approx(expected, abs=1e-6)  # logged in float32
    torch.manual_seed(0)
    saves = RunCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=1)
    first = trainer(max_steps=2, max_epochs=3, callbacks=[saves], enable_checkpointing=True)
    first.fit(tiny_method(name, **COSINE_T), tiny_data(tiny_folder))
    resumed = tiny_method(name, **COSINE_T)
    trainer(max_steps=5, max_epochs=3).fit(
        resumed, tiny_data(tiny_folder), ckpt_path=tmp_path / "last.ckpt"
    )
    for key, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[key]), key


@pytest.mark.parametrize("name", METHODS)
def test_a_scheduled_temperature_survives_the_sanity_check_and_logs_diagnostics_after_it(
    name, tiny_folder, tmp_path
):
    """Lightning's sanity check validates before the train loader exists: no diagnostics
    there (they would need the epoch's length to place the step in the schedule), the real
    validations log them."""
    model = tiny_method(name, diagnostics_images=6, **COSINE_T)
    run = trainer(max_epochs=1, num_sanity_val_steps=2, limit_val_batches=None,
                  default_root_dir=tmp_path)  # fmt: skip
    run.fit(model, tiny_data(tiny_folder))
    assert "val/alignment" in run.callback_metrics and "val/knn_top1" in run.callback_metrics


def test_supcon_enqueues_the_momentum_encoders_keys_of_the_second_view_with_their_labels(
    tiny_folder,
):
    model = tiny_method("supcon_queue", online_probe=False, momentum=0.5)
    recorder = fit(model, tiny_folder, 1, precision="64-true")
    reference = tiny_method("supcon_queue", online_probe=False, momentum=0.5).double()
    reference.load_state_dict(recorder.states[0])
    (_, x2), y = recorder.batches[0]
    with torch.no_grad():
        keys = F.normalize(reference.train().momentum_encoder(x2.double()), dim=1)
    queued, labels = model.queue.keys_and_labels()
    torch.testing.assert_close(queued, keys, rtol=1e-12, atol=1e-12)
    assert torch.equal(labels, y)
    for name, tensor in model.momentum_encoder.state_dict().items():  # m = 0.5: halfway
        if tensor.is_floating_point() and "running_" not in name:
            before = reference.momentum_encoder.state_dict()[name]
            after = model.encoder.state_dict()[name]
            torch.testing.assert_close(tensor, 0.5 * before + 0.5 * after, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", METHODS)
def test_the_online_probe_never_changes_the_method(name, tiny_folder):
    """The probe trains on detached features in its own parameter group: the method's weights
    after three steps are bitwise those of a run without it."""
    torch.manual_seed(0)
    with_probe = tiny_method(name)
    torch.manual_seed(0)
    without = tiny_method(name, online_probe=False)
    fit(with_probe, tiny_folder, 3)
    fit(without, tiny_folder, 3)
    a, b = with_probe.state_dict(), without.state_dict()
    assert {k for k in a if k.startswith("probe.")} == {"probe.weight", "probe.bias"}
    for key, tensor in b.items():
        assert torch.equal(a[key], tensor), key


@pytest.mark.parametrize("name", METHODS)
def test_stopping_and_resuming_equals_a_straight_run(name, tiny_folder, tmp_path):
    """3 steps an epoch: 5 straight == 2, a checkpoint, then resumed to 5 (mid-epoch)."""
    torch.manual_seed(0)
    straight = tiny_method(name)
    fit(straight, tiny_folder, 5, max_epochs=3)
    torch.manual_seed(0)
    saves = RunCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=1)
    first = trainer(max_steps=2, max_epochs=3, callbacks=[saves], enable_checkpointing=True)
    first.fit(tiny_method(name), tiny_data(tiny_folder))
    resumed = tiny_method(name)
    trainer(max_steps=5, max_epochs=3).fit(
        resumed, tiny_data(tiny_folder), ckpt_path=tmp_path / "last.ckpt"
    )
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key, tensor in a.items():
        assert torch.equal(tensor, b[key]), key


class NaNViews(L.Callback):
    """Turns the views of the first batch at optimizer step ``step`` into NaN."""

    def __init__(self, step: int):
        self.step, self.done = step, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and not self.done:
            self.done = True
            for x in batch[0]:
                x.fill_(float("nan"))


@pytest.mark.parametrize("name", METHODS)
def test_a_non_finite_loss_stops_before_the_update(name, tiny_folder):
    model, recorder = tiny_method(name), Recorder()
    t = trainer(max_steps=3, callbacks=[recorder, NaNViews(step=1)])
    with pytest.raises(NonFiniteLossError, match=r"train/loss is nan at step 1 \(epoch 0"):
        t.fit(model, tiny_data(tiny_folder))
    for key, tensor in recorder.states[1].items():  # the state before step 1, untouched
        if "running_" not in key and "num_batches" not in key:  # BN saw the NaN batch
            assert torch.equal(model.state_dict()[key], tensor), key


@pytest.mark.parametrize("name", METHODS)
def test_skip_leaves_a_non_finite_step_out_and_goes_on(name, tiny_folder):
    model, recorder = tiny_method(name, nonfinite_loss="skip"), Recorder()
    t = trainer(max_steps=3, callbacks=[recorder, NaNViews(step=1)])
    with pytest.warns(UserWarning, match="train/loss is nan at step 1"):
        t.fit(model, tiny_data(tiny_folder))
    assert recorder.losses[1] is None and recorder.losses[2] is not None  # skipped, then a step
    assert model._skipped_steps == 1
    for key, tensor in recorder.states[2].items():  # the skipped step left nothing behind:
        # weights, BN statistics, queue, momentum encoder (the step still counts: Lightning's)
        assert torch.equal(recorder.states[1][key], tensor), key


BAD_ARGUMENTS = [
    ("simclr", "temperature", 0.0, "temperature"),
    ("simclr", "hidden_dim", 0, "hidden_dim"),
    ("simclr", "projector_layers", 1, "projector_layers"),
    ("simclr", "decoupled", "yes", "decoupled"),
    ("simclr", "optimizer", "adam", "optimizer"),
    ("moco_v3", "momentum", 1.5, "momentum"),
    ("moco_v3", "momentum_schedule", "linear", "momentum_schedule"),
    ("moco_v3", "feature_dim", -1, "feature_dim"),
    ("moco_v3", "lars_eta", 0.0, "lars_eta"),
    ("supcon", "temperature", -0.1, "temperature"),
    ("supcon", "gather_distributed", 1, "gather_distributed"),
    ("supcon", "warmup_epochs", -1.0, "warmup_epochs"),
    ("supcon", "queue_size", -1, "queue_size"),
    ("supcon", "momentum", 1.5, "momentum"),
    ("supcon", "momentum_schedule", "step", "momentum_schedule"),
    ("moco", "lr_schedule", "step", "lr_schedule"),
    ("moco", "probe_lr", 0.0, "probe_lr"),
    ("simclr", "temperature_schedule", "step", "temperature_schedule"),
    ("supcon", "temperature_min", 0.0, "temperature_min"),
    ("moco_v3", "temperature_period_epochs", 0.0, "temperature_period_epochs"),
    ("moco", "temperature_max", float("nan"), "temperature_max"),
]


@pytest.mark.parametrize(("name", "argument", "value", "named"), BAD_ARGUMENTS)
def test_a_bad_argument_is_refused_by_name(name, argument, value, named):
    with pytest.raises(ValueError, match=named) as error:
        tiny_method(name, **{argument: value})
    assert repr(value) in str(error.value) or str(value) in str(error.value)


@pytest.mark.parametrize("name", METHODS)
def test_each_methods_backbone_exports_and_loads_back(name, tiny_folder, tmp_path):
    model = tiny_method(name)
    t = trainer(max_steps=1, default_root_dir=tmp_path)
    t.fit(model, tiny_data(tiny_folder))
    t.save_checkpoint(tmp_path / "run.ckpt")
    export_backbone(tmp_path / "run.ckpt", tmp_path / "backbone.pt")
    backbone = load_backbone(tmp_path / "backbone.pt").eval()
    x = torch.rand(4, 3, 32, 32)
    trained = model.encoder[0].eval().double().to(memory_format=torch.contiguous_format)
    with torch.no_grad():  # float64 and one layout: the trained one ran channels_last
        torch.testing.assert_close(backbone.double()(x.double()), trained(x.double()))


def test_moco_v3_loss_is_the_builders_formula_with_its_2t_factor():
    torch.manual_seed(0)
    q, k = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    for t in (0.2, 1.0):
        got = moco_v3_loss(q, k, rank=0, temperature=t)
        assert got.dtype == torch.float64
        assert float(got) == pytest.approx(float(moco_v3_builder(q, k, t)), rel=1e-12)


def test_moco_v3_loss_finds_each_query_key_at_its_ranks_rows():
    """Rank 1 of 2: its queries' keys are rows N..2N-1 of the gathered keys."""
    torch.manual_seed(0)
    q, keys = torch.randn(4, 8, dtype=torch.float64), torch.randn(8, 8, dtype=torch.float64)
    qn, kn = F.normalize(q, dim=1), F.normalize(keys, dim=1)
    rows = [torch.logsumexp(qn[i] @ kn.T / 0.2, 0) - qn[i] @ kn[4 + i] / 0.2 for i in range(4)]
    expected = torch.stack(rows).mean() * 0.4
    assert float(moco_v3_loss(q, keys, rank=1, temperature=0.2)) == pytest.approx(float(expected))


def test_moco_v3_loss_passes_gradcheck():
    torch.manual_seed(0)
    q = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(10, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda q: moco_v3_loss(q, k, 1, 0.3), (q,))


def test_a_learned_and_a_scheduled_temperature_cannot_both_set_t():
    with pytest.raises(ValueError, match="learnable_temperature: true learns T, "
                                         "temperature_schedule: cosine sets it"):  # fmt: skip
        tiny_method("moco", learnable_temperature=True, temperature_schedule="cosine")
    with pytest.raises(ValueError, match="temperature_min must be <= temperature_max, got 0.5 >"):
        tiny_method("simclr", temperature_min=0.5, temperature_max=0.2)
