"""The MoCo LightningModule, in process, on the tiny image folder."""

import copy
import math
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from train_helpers import tiny_data, tiny_moco, trainer

import infonce.trainer.base
import infonce.trainer.moco
from infonce import info_nce
from infonce.shuffle_bn import key_permutation
from infonce.trainer.base import NonFiniteLossError
from infonce.trainer.moco import MoCo
from infonce.trainer.resume import ResumeConflictError
from infonce.trainer.rng import KEY_SHUFFLE, derive_seed


def contrast(model: MoCo, x_q, x_k) -> tuple:
    """(queue loss of queries from ``x_q`` against keys from ``x_k``, the keys)."""
    keys = model.encode_keys(x_k)
    return model.queue_loss(model.encoder(x_q), keys), keys


def test_enqueue_and_momentum_update_happen_once_per_optimizer_step_under_accumulation(
    tiny_folder, monkeypatch
):
    calls = []
    original = infonce.trainer.moco.momentum_update
    monkeypatch.setattr(
        infonce.trainer.moco, "momentum_update", lambda *a: calls.append(a[2]) or original(*a)
    )
    model = tiny_moco()
    data = tiny_data(tiny_folder, batch_size=4)  # 6 batches an epoch
    trainer(max_steps=2, accumulate_grad_batches=2).fit(model, data)
    assert model.global_step == 2
    assert len(calls) == 2  # not 4: once per optimizer step
    assert int(model.queue.filled) == 2 * 2 * 4  # every micro-batch's keys are enqueued


def test_symmetric_loss_is_loss_12_plus_loss_21_and_enqueues_k1_then_k2(tiny_folder):
    """The MoCo CIFAR demo's symmetric loss, recomputed from the networks and queue before the
    step: InfoNCE(q1, k2) + InfoNCE(q2, k1) against the same queue, then cat(k1, k2) enqueued.
    (One BN split, so the keys do not depend on the key shuffle.)"""
    seen = {}

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 2:  # the queue holds 2 steps of keys by now
                seen["batch"] = batch
                seen["encoder"] = copy.deepcopy(module.encoder)
                seen["momentum_encoder"] = copy.deepcopy(module.momentum_encoder)
                seen["queue"] = module.queue.negatives()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if "batch" in seen and "loss" not in seen:  # the method's loss, the probe's apart
                seen["loss"] = trainer.callback_metrics["train/loss"].detach()
                seen["queue_after"] = module.queue.queue.clone()

    model = tiny_moco(symmetric=True, bn_splits=1, queue_size=64)
    with pytest.warns(UserWarning, match="WITHOUT A BATCHNORM GUARD"):
        trainer(max_steps=3, callbacks=[Record()]).fit(model, tiny_data(tiny_folder))
    (x1, x2), _ = seen["batch"]
    with torch.no_grad():
        q1, q2 = seen["encoder"](x1), seen["encoder"](x2)
        k1 = F.normalize(seen["momentum_encoder"](x1), dim=1)
        k2 = F.normalize(seen["momentum_encoder"](x2), dim=1)
    negatives = seen["queue"].double()
    loss_12 = info_nce(q1.double(), k2.double(), negatives, temperature=0.1)
    loss_21 = info_nce(q2.double(), k1.double(), negatives, temperature=0.1)
    torch.testing.assert_close(seen["loss"].double(), loss_12 + loss_21, rtol=0, atol=1e-5)
    assert loss_12 > 0.1 and loss_21 > 0.1 and not torch.isclose(loss_12, loss_21)
    # step 2 wrote rows 2 * 16 .. 3 * 16 of the queue (K = 64): k1's 8 keys, then k2's
    written = seen["queue_after"][32:48]
    torch.testing.assert_close(written, torch.cat([k1, k2]), rtol=0, atol=1e-6)
    assert int(model.queue.filled) == 3 * 2 * 8


def test_validation_never_touches_queue_or_momentum_encoder(tiny_folder):
    model = tiny_moco()
    data = tiny_data(tiny_folder)
    trainer(max_steps=2).fit(model, data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = trainer(limit_val_batches=1.0).validate(model, data, verbose=False)
    assert 0.0 <= metrics[0]["val/knn_top1"] <= 100.0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_knn_monitor_uses_the_train_split_as_memory_and_the_test_split_as_queries(
    tiny_folder, monkeypatch
):
    seen = {}
    original = infonce.trainer.base.sharded_knn_accuracy

    def spy(queries, labels, memory, memory_labels, *args, **kwargs):
        seen.update(queries=queries, labels=labels, memory=memory, memory_labels=memory_labels)
        return original(queries, labels, memory, memory_labels, *args, **kwargs)

    monkeypatch.setattr(infonce.trainer.base, "sharded_knn_accuracy", spy)
    model, data = tiny_moco(), tiny_data(tiny_folder, eval_batch_size=5)  # batches mix splits
    metrics = trainer(limit_val_batches=1.0).validate(model, data, verbose=False)
    # 24 train images (8 a class) are the memory, 12 test images (4 a class) the queries
    assert torch.equal(seen["memory_labels"], torch.arange(3).repeat_interleave(8))
    assert torch.equal(seen["labels"], torch.arange(3).repeat_interleave(4))
    x_test = torch.cat([x[is_query] for x, _, is_query in data.val_dataloader()])
    model.eval()  # as during validation (Lightning puts it back in train mode afterwards)
    with torch.no_grad():
        expected = F.normalize(model.encoder[0](x_test), dim=1)
    assert seen["queries"].dtype == seen["memory"].dtype == torch.float16  # stored compactly
    torch.testing.assert_close(seen["queries"].float(), expected, rtol=1e-3, atol=1e-3)
    assert len(metrics) == 1 and [m for m in metrics[0] if "knn" in m] == ["val/knn_top1"]
    # three colour classes: even a random convnet separates them almost perfectly
    assert metrics[0]["val/knn_top1"] > 80.0


def test_validation_without_a_knn_memory_is_a_clear_error(tiny_folder):
    with pytest.raises(ValueError, match="knn_memory: true"):
        trainer(limit_val_batches=1.0).validate(
            tiny_moco(), tiny_data(tiny_folder, knn_memory=False), verbose=False
        )


def test_shuffled_keys_come_back_in_batch_order():
    model = tiny_moco(bn_splits=4)
    model.momentum_encoder.eval()  # no batch statistics: shuffling must change nothing
    x = torch.randn(8, 3, 32, 32)
    expected = F.normalize(model.momentum_encoder(x), dim=1)
    torch.testing.assert_close(model.encode_keys(x), expected, rtol=1e-5, atol=1e-6)


def test_keys_are_normalised_in_shuffled_split_batches_in_training():
    """Train mode: the keys are those of the shuffled batch put back in order, so a key's BN
    statistics come from other images than its query's; fails if no shuffle happens."""
    torch.manual_seed(0)
    model = tiny_moco(bn_splits=4, seed=5)
    x = torch.randn(16, 3, 32, 32)
    keys = model.encode_keys(x)
    perm = key_permutation(16, 4, seed=derive_seed(5, KEY_SHUFFLE, 0, 0))  # step 0, draw 0
    with torch.no_grad():
        shuffled = model.momentum_encoder(x[perm])[torch.argsort(perm)]
        unshuffled = F.normalize(model.momentum_encoder(x), dim=1)
    torch.testing.assert_close(keys, F.normalize(shuffled, dim=1), rtol=1e-5, atol=1e-6)
    assert (keys - unshuffled).abs().amax(dim=1).min() > 1e-4  # every key changed


def test_first_step_with_an_empty_queue_uses_in_batch_negatives_then_the_queue():
    model = tiny_moco(bn_splits=1)
    # (training-mode BatchNorm over one fixed batch: the same features in every call)
    x1, x2 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    logged = {}
    model.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    q = model.encoder(x1)
    loss, keys = contrast(model, x1, x2)
    assert keys.shape == (8, 128)
    torch.testing.assert_close(loss, info_nce(q, keys, None, temperature=0.1))
    queued = model.encode_keys(torch.randn(8, 3, 32, 32))  # (8, 128)
    model.queue.enqueue(queued)
    loss, _ = contrast(model, x1, x2)
    torch.testing.assert_close(loss, info_nce(q, keys, queued, temperature=0.1))
    q = F.normalize(q)
    logits = torch.cat([(q * keys).sum(1, keepdim=True), q @ queued.T], 1) / 0.1  # (8, 1 + 8)
    assert logged["train/acc"] == (logits.argmax(dim=1) == 0).float().mean().item()
    assert logged["train/pos_logit"] == pytest.approx(logits[:, 0].mean().item(), rel=1e-5)
    assert logged["train/neg_logit"] == pytest.approx(logits[:, 1:].mean().item(), rel=1e-5)


def test_checkpoint_carries_queue_pointer_momentum_encoder_and_rng(tiny_folder, tmp_path):
    model = tiny_moco()
    t = trainer(max_steps=3, default_root_dir=tmp_path)
    t.fit(model, tiny_data(tiny_folder))
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    state = ckpt["state_dict"]
    assert torch.equal(state["queue.queue"], model.queue.queue)
    assert int(state["queue.ptr"]) == 24 and int(state["queue.filled"]) == 24
    assert any(k.startswith("momentum_encoder.") for k in state)
    assert set(ckpt["rng_states"]) >= {"python", "numpy", "torch"}
    restored = MoCo.load_from_checkpoint(path)
    assert torch.equal(restored.queue.queue, model.queue.queue)


def test_learning_rate_warms_up_then_decays_on_a_cosine(tiny_folder):
    model = tiny_moco(lr=0.1, warmup_epochs=1.0)
    t = trainer(max_epochs=2)
    t.fit(model, tiny_data(tiny_folder))  # 3 steps per epoch, 6 in all
    factors = [model.lr_factor(s) for s in range(6)]
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert factors[3:] == pytest.approx([0.5 * (1 + math.cos(math.pi * p / 3)) for p in (0, 1, 2)])
    assert model.optimizers().param_groups[0]["lr"] == pytest.approx(0.1 * factors[5])


def test_cosine_momentum_schedule_reaches_one_at_the_end(tiny_folder):
    model = tiny_moco(momentum=0.9, momentum_schedule="cosine")
    trainer(max_epochs=1).fit(model, tiny_data(tiny_folder))
    assert model.current_momentum() == pytest.approx(1.0)  # after all 3 steps


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("temperature", 0.0, "temperature must be a positive finite number, got 0.0"),
        ("knn_temperature", -1.0, "knn_temperature must be a positive finite number"),
        ("momentum", 1.5, r"momentum must be a number in \[0, 1\], got 1.5"),
        ("queue_size", 0, "queue_size must be an integer >= 1, got 0"),
        ("diagnostics_images", -1, "diagnostics_images must be an integer >= 0, got -1"),
        ("head", "deep", "head must be 'linear' or 'mlp', got 'deep'"),
        ("backbone", "vgg", "vgg"),
        ("lr", 0.0, "lr must be > 0, got 0.0"),
    ],
)
def test_bad_hyperparameters_are_value_errors(name, value, match):
    with pytest.raises(ValueError, match=match):
        tiny_moco(**{name: value})


def test_compile_flag_keeps_checkpoint_keys_and_channels_last_keeps_values():
    plain = tiny_moco(channels_last=False)
    compiled = tiny_moco(compile=True)  # nn.Module.compile: compiled lazily, in place
    assert list(compiled.state_dict()) == list(plain.state_dict())
    conv = compiled.encoder[0].layers[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    fast = tiny_moco()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(8, 3, 32, 32)
    plain.eval(), fast.eval()
    torch.testing.assert_close(
        fast.encoder(x.contiguous(memory_format=torch.channels_last)), plain.encoder(x),
        rtol=1e-4, atol=1e-5,
    )  # fmt: skip


@pytest.mark.slow
def test_compiled_encoders_run_through_torch_compile_with_the_eager_loss():
    """compile=True really runs inductor on the CPU (tens of seconds to compile)."""
    import torch._dynamo

    torch._dynamo.reset()
    eager = tiny_moco()
    compiled = tiny_moco(compile=True)
    compiled.load_state_dict(eager.state_dict())
    for model in (eager, compiled):
        model.log = lambda *args, **kwargs: None
    x1, x2 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    loss_eager, _ = contrast(eager, x1, x2)
    loss_compiled, _ = contrast(compiled, x1, x2)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # it compiled
    torch.testing.assert_close(loss_compiled, loss_eager, rtol=1e-4, atol=1e-4)
    loss_compiled.backward()
    assert compiled.encoder[0].layers[0].weight.grad is not None


def with_nan_loss_on_calls(monkeypatch, calls: set[int]) -> None:
    """Make MoCo.queue_loss return a NaN loss on the given (1-based) calls."""
    original, seen = MoCo.queue_loss, []

    def queue_loss(self, *args):
        loss = original(self, *args)
        seen.append(1)
        return loss * torch.nan if len(seen) in calls else loss

    monkeypatch.setattr(MoCo, "queue_loss", queue_loss)


def test_a_nonfinite_loss_stops_before_the_step_changes_anything(tiny_folder, monkeypatch):
    model = tiny_moco()
    trainer(max_steps=2).fit(model, tiny_data(tiny_folder))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with_nan_loss_on_calls(monkeypatch, {1})
    with pytest.raises(
        NonFiniteLossError, match=r"train/loss is nan at step 0 \(epoch 0, batch 0\)"
    ):
        trainer(max_steps=4).fit(model, tiny_data(tiny_folder))  # a new trainer counts from 0
    after = model.state_dict()
    for key in before:  # weights, queue, momentum encoder (not this forward's BN statistics)
        assert "running_" in key or "num_batches" in key or torch.equal(before[key], after[key])


def test_nonfinite_loss_skip_skips_only_those_steps(tiny_folder, monkeypatch):
    model = tiny_moco(nonfinite_loss="skip")
    with_nan_loss_on_calls(monkeypatch, {2})
    with pytest.warns(UserWarning, match=r"train/loss is nan at step 1 .*: step skipped"):
        trainer(max_steps=3).fit(model, tiny_data(tiny_folder))
    assert model.global_step == 3
    assert int(model.queue.filled) == 2 * 8  # the skipped step enqueued nothing
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_skipped_step_leaves_no_batchnorm_statistics_behind(tiny_folder, monkeypatch):
    model = tiny_moco(nonfinite_loss="skip")
    trainer(max_steps=1).fit(model, tiny_data(tiny_folder))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with_nan_loss_on_calls(monkeypatch, {1})
    with pytest.warns(UserWarning, match="step skipped"):
        trainer(max_steps=1).fit(model, tiny_data(tiny_folder))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resuming_with_another_queue_size_is_refused_naming_both_values(tiny_folder, tmp_path):
    t = trainer(max_steps=1, default_root_dir=tmp_path)
    t.fit(tiny_moco(), tiny_data(tiny_folder))
    t.save_checkpoint(tmp_path / "a.ckpt")
    with pytest.raises(ResumeConflictError, match=r"queue_size=32 \(checkpoint: 64\)"):
        trainer(max_steps=2).fit(
            tiny_moco(queue_size=32), tiny_data(tiny_folder), ckpt_path=tmp_path / "a.ckpt"
        )


def test_a_validation_that_sees_no_queries_logs_no_knn_figure(tiny_folder):
    """Lightning's sanity check runs 2 batches: with the memory first, they hold no query."""
    model = tiny_moco()
    with pytest.warns(UserWarning, match="limit_val_batches=2 cuts the test images first"):
        metrics = trainer(limit_val_batches=2).validate(
            model, tiny_data(tiny_folder, eval_batch_size=4), verbose=False
        )
    assert len(metrics) == 1 and "val/knn_top1" not in metrics[0]


def test_random_queue_init_fills_the_queue_with_seeded_unit_vectors():
    model = tiny_moco(queue_init="random", seed=3)
    assert int(model.queue.filled) == 64 and int(model.queue.ptr) == 0
    torch.testing.assert_close(model.queue.queue.norm(dim=1), torch.ones(64))
    assert torch.equal(model.queue.queue, tiny_moco(queue_init="random", seed=3).queue.queue)
    assert not torch.equal(model.queue.queue, tiny_moco(queue_init="random", seed=4).queue.queue)


def test_the_demos_per_epoch_cosine_is_constant_in_an_epoch_and_zero_in_the_last(tiny_folder):
    model = tiny_moco(lr=0.1, lr_schedule="cosine_per_epoch")
    trainer(max_epochs=4).fit(model, tiny_data(tiny_folder))  # 3 steps an epoch
    factors = [model.lr_factor(s) for s in range(12)]
    expected = [0.5 * (1 + math.cos(math.pi * e / 4)) for e in (1, 2, 3, 4) for _ in range(3)]
    assert factors == pytest.approx(expected)  # the demo: epochs 1..E, the last at lr 0
    assert factors[-1] == pytest.approx(0.0, abs=1e-12)


def test_knn_feature_head_compares_the_encoders_output(tiny_folder, monkeypatch):
    seen = {}
    original = infonce.trainer.base.sharded_knn_accuracy

    def spy(queries, *args, **kwargs):
        seen["dim"] = queries.shape[1]
        return original(queries, *args, **kwargs)

    monkeypatch.setattr(infonce.trainer.base, "sharded_knn_accuracy", spy)
    model = tiny_moco(knn_feature="head", feature_dim=32)
    trainer(limit_val_batches=1.0).validate(model, tiny_data(tiny_folder), verbose=False)
    assert seen["dim"] == 32  # not the backbone's 128


def test_no_batchnorm_guard_warns_loudly(tiny_folder):
    with pytest.warns(UserWarning, match="WITHOUT A BATCHNORM GUARD"):
        trainer(max_steps=1).fit(tiny_moco(bn_splits=1), tiny_data(tiny_folder))


def test_sync_bn_guard_needs_one_split():
    with pytest.raises(ValueError, match="bn_guard: sync .* bn_splits must be 1, got 4"):
        tiny_moco(bn_guard="sync")
    with pytest.raises(ValueError, match="bn_guard must be one of"):
        tiny_moco(bn_guard="global")


def test_the_per_epoch_cosine_follows_max_steps_when_no_max_epochs_is_set(tiny_folder):
    model = tiny_moco(lr=0.1, lr_schedule="cosine_per_epoch")
    trainer(max_epochs=-1, max_steps=6).fit(model, tiny_data(tiny_folder))  # 2 epochs of 3
    factors = [model.lr_factor(s) for s in range(6)]
    assert factors == pytest.approx([0.5, 0.5, 0.5, 0.0, 0.0, 0.0])  # (1 + cos(pi e / 2)) / 2


def test_diagnostics_are_logged_each_validation_from_fixed_views(tiny_folder):
    model, data = tiny_moco(diagnostics_images=12), tiny_data(tiny_folder)
    t = trainer(max_steps=6, limit_val_batches=1.0)
    t.fit(model, data)  # 6 steps of 8: 48 keys in the queue of 64
    metrics = t.validate(model, data, verbose=False)[0]
    x1, x2 = data.fixed_views(12)
    assert x1.shape == (12, 3, 32, 32) and not torch.equal(x1, x2)
    torch.testing.assert_close(data.fixed_views(12), (x1, x2), rtol=0, atol=0)  # fixed
    model.eval()
    with torch.no_grad():
        q = F.normalize(model.encoder(x1), dim=1)
        k = F.normalize(model.momentum_encoder(x2), dim=1)
        n = model.queue.negatives()
        expected = {
            "val/alignment": (q - k).norm(dim=1).pow(2).mean(),
            "val/uniformity": torch.pdist(q).pow(2).mul(-2).exp().mean().log(),
            "val/hardest_negative": (q @ n.T).max(dim=1).values.mean(),
        }
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ n.T], dim=1) / 0.1
        p = logits.softmax(dim=1)
        expected["val/entropy"] = -(p * p.log()).sum(dim=1).mean()
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value.item(), rel=1e-4, abs=1e-6), name


def test_diagnostics_images_zero_turns_them_off(tiny_folder):
    metrics = trainer(limit_val_batches=1.0).validate(
        tiny_moco(diagnostics_images=0), tiny_data(tiny_folder), verbose=False
    )
    assert sorted(metrics[0]) == ["val/knn_top1", "val/linear_top1"]  # the online probe's


def test_learnable_temperature_trains_without_weight_decay_and_is_logged(tiny_folder, tmp_path):
    model = tiny_moco(learnable_temperature=True, temperature=0.1, lr=0.5, weight_decay=0.1)
    assert model.temperature().item() == pytest.approx(0.1)
    logged = {}
    model.log = lambda name, value, **kw: logged.setdefault(name, []).append(
        float(value.detach() if torch.is_tensor(value) else value)
    )
    t = trainer(max_steps=4, default_root_dir=tmp_path)
    t.fit(model, tiny_data(tiny_folder))
    groups = {g["name"]: g for g in t.optimizers[0].param_groups}
    assert groups["temperature"]["weight_decay"] == 0.0 and groups["encoder"]["weight_decay"] == 0.1
    assert groups["temperature"]["params"] == [model.temperature.log_scale]
    T = model.temperature().item()
    assert T != pytest.approx(0.1) and 0.01 <= T <= 1.0  # it moved, within range
    assert len(logged["train/temperature"]) == 4 and logged["train/temperature"][
        0
    ] == pytest.approx(0.1)
    t.save_checkpoint(tmp_path / "t.ckpt")
    state = torch.load(tmp_path / "t.ckpt", weights_only=False)["state_dict"]
    assert state["temperature.log_scale"].item() == pytest.approx(math.log(1 / T))
    with pytest.raises(ResumeConflictError, match="learnable_temperature=False"):
        trainer(max_steps=5).fit(tiny_moco(), tiny_data(tiny_folder), ckpt_path=tmp_path / "t.ckpt")


def test_a_learned_temperature_has_its_own_scheduled_learning_rate_when_given(
    tiny_folder, tmp_path
):
    model = tiny_moco(learnable_temperature=True, temperature_lr=1e-3, lr=0.5)
    t = trainer(max_steps=3, default_root_dir=tmp_path)
    t.fit(model, tiny_data(tiny_folder))
    groups = {g["name"]: g for g in t.optimizers[0].param_groups}
    factor = groups["encoder"]["lr"] / 0.5  # the schedule's factor at the last step, < 1
    assert 0 < factor < 1
    assert groups["temperature"]["lr"] == pytest.approx(1e-3 * factor, rel=1e-12)
    assert groups["temperature"]["params"] == [model.temperature.log_scale]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature_lr=1e-3), "temperature_lr .*needs learnable_temperature: true"),
        (dict(learnable_temperature=True, temperature_lr=0.0), "temperature_lr must be > 0, got 0"),
        (dict(learnable_temperature=True, temperature_lr=math.nan), "temperature_lr must be > 0"),
    ],
)
def test_a_bad_temperature_lr_is_a_value_error_naming_it(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_moco(**kwargs)


def test_a_learnable_temperature_must_start_in_its_range():
    with pytest.raises(
        ValueError,
        match=r"temperature to be learned: init must be within \[min, max\] = \[0.01, 1.0\]",
    ):
        tiny_moco(learnable_temperature=True, temperature=2.0)


def test_learned_temperature_gets_the_gradient_of_the_training_loss(tiny_folder):
    model = tiny_moco(learnable_temperature=True, temperature=0.2)
    x = torch.rand(8, 3, 32, 32)
    model.queue.enqueue(F.normalize(torch.randn(16, 128), dim=1))
    model.log = lambda *args, **kwargs: None  # no trainer to log to
    loss, _ = contrast(model, x, x.flip(3))
    (grad,) = torch.autograd.grad(loss, model.temperature.log_scale)
    assert torch.isfinite(grad) and grad.item() != 0.0


def test_diagnostics_skip_a_datamodule_with_one_view_per_image(tiny_folder):
    data = tiny_data(tiny_folder, augmentation="crop_flip")
    metrics = trainer(limit_val_batches=1.0).validate(tiny_moco(), data, verbose=False)
    assert sorted(metrics[0]) == ["val/knn_top1", "val/linear_top1"]


def test_a_checkpoint_from_before_learnable_temperature_counts_as_a_fixed_t(tiny_folder, tmp_path):
    t = trainer(max_steps=1, default_root_dir=tmp_path)
    t.fit(tiny_moco(), tiny_data(tiny_folder))
    t.save_checkpoint(tmp_path / "a.ckpt")
    old = torch.load(tmp_path / "a.ckpt", weights_only=False)
    del old["hyper_parameters"]["learnable_temperature"]  # as written by earlier versions
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(
        ResumeConflictError, match=r"learnable_temperature=True \(checkpoint: False\)"
    ):
        trainer(max_steps=2).fit(
            tiny_moco(learnable_temperature=True), tiny_data(tiny_folder),
            ckpt_path=tmp_path / "old.ckpt",
        )  # fmt: skip


@pytest.mark.parametrize("knn_feature", ["head", "backbone"])
def test_a_rank_without_validation_batches_still_joins_the_knn_collective(knn_feature):
    """Under DDP a tiny limit_val_batches can leave a rank with no batch (or no query batch);
    it must still call the kNN's collectives, with no rows, and log the same top-1."""
    from fake_world import run_ranks

    torch.manual_seed(0)
    x = torch.randn(24, 3, 16, 16)
    y = torch.arange(24) % 3
    is_query = torch.arange(24) >= 12
    models = [tiny_moco(knn_feature=knn_feature, diagnostics_images=0) for _ in range(3)]
    for model in models[1:]:
        model.load_state_dict(models[0].state_dict())
    for model in models:
        model.eval()

    def validate(model, all_gather, batches):
        logged = {}
        model.all_gather, model.world = all_gather, lambda: 2
        model.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
        model.on_validation_epoch_start()
        with torch.no_grad():
            for batch in batches:
                model.validation_step(batch, 0)
        model.on_validation_epoch_end()
        return logged["val/knn_top1"]

    memory_only = [(x[:12], y[:12], is_query[:12])]
    everything = [(x, y, is_query)]
    for first, second in (([], everything), (memory_only, [(x[12:], y[12:], is_query[12:])])):
        batches = (first, second)
        top1 = run_ranks(2, lambda rank, ag, b=batches: validate(models[rank], ag, b[rank]))
        alone = validate(models[2], lambda t: t[None], everything)
        assert top1 == [alone, alone]


@pytest.mark.parametrize("bar", [False, True])
def test_step_numbers_go_to_the_progress_bar_only_when_one_is_shown(tiny_folder, bar):
    """Lightning reads every prog_bar value back to the host after each step (on a GPU, a wait
    for the device), so without a bar nothing is marked for it."""
    model = tiny_moco()
    fit = trainer(max_steps=3, enable_progress_bar=bar)
    fit.fit(model, tiny_data(tiny_folder))
    shown = set(fit.progress_bar_metrics)
    assert shown == ({"train/loss", "train/acc", "train/images_per_s"} if bar else set())
    assert {"train/loss", "train/acc", "train/images_per_s"} <= set(fit.callback_metrics)


def test_a_checkpoint_of_the_earlier_seed_scheme_resumes_with_a_warning():
    model = tiny_moco()
    saved = {"hyper_parameters": dict(model.hparams), "global_step": 5}
    with pytest.warns(UserWarning, match="earlier infonce whose key shuffle drew from other"):
        model.on_load_checkpoint(saved)
    checkpoint = {}
    model.on_save_checkpoint(checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.on_load_checkpoint({**checkpoint, **saved})  # the current scheme: no warning
