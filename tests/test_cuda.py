"""What only a GPU shows: bf16 autocast numerics there, data made on the device, and a training
step whose only wait for the GPU is the finite-loss check. CUDA tests skip without one (CI has
none); the autocast test also runs on the CPU."""

import traceback
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from train_helpers import tiny_data, tiny_moco, trainer

from infonce import chunked_info_nce, info_nce
from infonce.trainer.data.datamodule import ImageDataModule
from infonce.trainer.moco import MoCo

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
TORCH = Path(torch.__file__).parent
WARNINGS = Path(warnings.__file__)


def reference_loss(q, k, negatives, temperature):
    """MoCo's loss in float64 from the normalised rows, one query at a time."""
    q, k, negatives = (F.normalize(t.double(), dim=1) for t in (q, k, negatives))
    losses = []
    for i in range(len(q)):
        logits = torch.cat([(q[i] @ k[i])[None], negatives @ q[i]]) / temperature  # (1 + K,)
        losses.append(torch.logsumexp(logits, 0) - logits[0])
    return torch.stack(losses).mean()


def relative_error(x, reference):
    return float((x.double() - reference).norm() / reference.norm())


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_queue_loss_at_T_0_07_is_float32_and_close_to_float64(device):
    """The CIFAR recipe's shapes (N=512, D=128, K=4,096) at MoCo's T=0.07 under bf16 autocast:
    the chunked and the whole-batch loss compute their logits in float32 (bf16 logits would be
    ~1e-2 off), so loss and gradients match a float64 loop to float32 rounding."""
    g = torch.Generator().manual_seed(0)
    q, k, negatives = (torch.randn(n, 128, generator=g) for n in (512, 512, 4096))
    k = q + 2.0 * k  # positives closer than the negatives: a loss of about 2, as in training
    q64, k64 = q.double().requires_grad_(), k.double().requires_grad_()
    expected = reference_loss(q64, k64, negatives, 0.07)
    expected_grads = torch.autograd.grad(expected, (q64, k64))
    for loss_fn in (chunked_info_nce, info_nce):
        qd, kd = (t.to(device).requires_grad_() for t in (q, k))
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = loss_fn(qd, kd, negatives.to(device), 0.07)
        assert loss.dtype == torch.float32, loss_fn.__name__
        grads = torch.autograd.grad(loss, (qd, kd))
        assert abs(float(loss) - float(expected)) / float(expected) < 1e-4, loss_fn.__name__
        for grad, reference in zip(grads, expected_grads, strict=True):
            assert grad.dtype == torch.float32 and torch.isfinite(grad).all()
            assert relative_error(grad.cpu(), reference) < 1e-4, loss_fn.__name__


def tiny_run(root, **trainer_args) -> tuple[MoCo, ImageDataModule, L.Trainer]:
    """test_moco's tiny MoCo and resident data module, on one CUDA device."""
    data = tiny_data(root, resident=True)
    return tiny_moco(), data, trainer(accelerator="cuda", devices=1, **trainer_args)


@needs_cuda
def test_resident_data_lives_and_is_augmented_on_the_gpu(tiny_folder):
    seen = []

    class Batches(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            (x1, x2), y = batch
            seen.append((x1.device.type, x2.device.type, y.device.type, x1.dtype))

    model, data, trainer = tiny_run(tiny_folder, max_steps=3, callbacks=[Batches()])
    trainer.fit(model, data)
    images, labels = data._tensors[True]
    assert images.is_cuda and labels.is_cuda and images.dtype == torch.uint8
    assert seen == [("cuda", "cuda", "cuda", torch.float32)] * 3


class SyncRecorder(L.Callback):
    """From the start of step ``warmup`` on, records where every synchronising CUDA call came
    from: the innermost frame outside torch, as (folder/file, function)."""

    def __init__(self, warmup: int):
        self.warmup, self.sites, self._saved = warmup, [], None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self._saved = warnings.showwarning
            warnings.showwarning = self._record
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_end(self, trainer, module):
        torch.cuda.set_sync_debug_mode("default")

    def _record(self, message, category, filename, lineno, file=None, line=None):
        if "synchronizing" not in str(message).lower():
            return self._saved(message, category, filename, lineno, file, line)
        for frame in reversed(traceback.extract_stack()):
            path = Path(frame.filename)
            if not path.is_relative_to(TORCH) and path not in (Path(__file__), WARNINGS):
                self.sites.append((f"{path.parent.name}/{path.name}", frame.name))
                return None
        self.sites.append(("?", "?"))


@needs_cuda
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_training_step_syncs_the_host_only_to_check_the_loss_is_finite(tiny_folder, precision):
    """Data, augmentation, both encoders, the shuffled keys, the queue loss, the logging, the
    SGD step, the EMA update and the enqueue all queue work without waiting for the GPU. The
    one wait per step is the deliberate check that the loss is finite before the optimizer
    step. (A wait in a backward pass would show as Lightning's ``backward``, where autograd
    replays its warnings.)"""
    recorder = SyncRecorder(warmup=2)
    model, data, trainer = tiny_run(
        tiny_folder, max_steps=6, precision=precision, callbacks=[recorder]
    )
    try:
        with warnings.catch_warnings():
            trainer.fit(model, data)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert recorder.sites == [("trainer/base.py", "checked")] * 4, recorder.sites
