"""Every public function and class, given what a user could get wrong: a ValueError whose
message names the argument as the user wrote it, and the bad value, type or shape.

Never an AttributeError, IndexError or RuntimeError from inside torch, and never silent
broadcasting. Each row of the table: the callable, the arguments that differ from a valid
call, and a regular expression the message must match.
"""

import math

import pytest
import torch
from torch import nn

import infonce
from infonce import (
    InfoNCE,
    LearnableTemperature,
    MemoryQueue,
    TemperatureScaler,
    alignment,
    chunked_info_nce,
    chunked_info_nce_stats,
    clip_loss,
    contrastive_entropy,
    cosine_momentum,
    distillation_loss,
    embedding_diagnostics,
    encode_shuffled,
    encode_shuffled_across_ranks,
    expected_calibration_error,
    gather_rows,
    gather_with_grad,
    hardest_negative_similarity,
    info_nce,
    info_nce_logits,
    info_nce_stats,
    key_permutation,
    knn_accuracy,
    knn_neighbours,
    knn_predict,
    momentum_update,
    nt_xent,
    rank_and_world_size,
    reliability_bins,
    sample_with_temperature,
    separated_loss,
    sharded_knn_accuracy,
    single_process_gather,
    softmax_with_temperature,
    supcon,
    temperature_gradient,
    uniformity,
)

g = torch.Generator().manual_seed(0)
Q, KEY, NEG = (torch.randn(rows, 8, generator=g) for rows in (4, 4, 6))
META = torch.empty(4, 8, device="meta")  # a tensor on another device, without a GPU
PROBS = torch.softmax(torch.randn(4, 3, generator=g), dim=1)
LOGITS = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [0.0, 2.0, 0.0]])
LABELS4 = torch.tensor([0, 1, 2, 0])
MEMORY = torch.nn.functional.normalize(torch.randn(10, 8, generator=g), dim=1)
MEMORY_LABELS = torch.arange(10) % 3
NAN, INF = math.nan, math.inf


def _fit(logits=LOGITS, labels=LABELS4, max_temperature=100.0):
    return TemperatureScaler().fit(logits, labels, max_temperature)


def _scale(logits=LOGITS):
    return TemperatureScaler()(logits)


def _infonce_call(query=Q, key=KEY, negatives=NEG, temperature=0.1):
    return InfoNCE(temperature)(query, key, negatives)


def _enqueue(keys=KEY, size=16, dim=8):
    MemoryQueue(size, dim).enqueue(keys)


def _pair():
    return nn.Linear(8, 3), nn.Linear(8, 3)


VALID = {
    info_nce: dict(query=Q, key=KEY, negatives=NEG, temperature=0.1),
    info_nce_logits: dict(query=Q, key=KEY, negatives=NEG, temperature=0.1),
    info_nce_stats: dict(query=Q, key=KEY, negatives=NEG, temperature=0.1),
    contrastive_entropy: dict(query=Q, key=KEY, negatives=NEG, temperature=0.1),
    temperature_gradient: dict(query=Q, key=KEY, negatives=NEG, temperature=0.1),
    chunked_info_nce: dict(query=Q, key=KEY, negatives=NEG, temperature=0.1),
    chunked_info_nce_stats: dict(query=Q, key=KEY, negatives=NEG, temperature=0.1),
    InfoNCE: dict(temperature=0.1),
    _infonce_call: {},
    separated_loss: dict(num_negatives=3, temperature=0.1),
    nt_xent: dict(z1=Q, z2=KEY, temperature=0.5),
    supcon: dict(features=torch.stack([Q, KEY], dim=1), labels=LABELS4, temperature=0.1),
    clip_loss: dict(image=Q, text=KEY, temperature=0.1),
    distillation_loss: dict(student_logits=Q, teacher_logits=KEY, temperature=2.0),
    softmax_with_temperature: dict(logits=Q, temperature=0.5),
    sample_with_temperature: dict(logits=Q, temperature=0.5),
    LearnableTemperature: {},
    _fit: {},
    _scale: {},
    expected_calibration_error: dict(probs=PROBS, labels=LABELS4),
    reliability_bins: dict(probs=PROBS, labels=LABELS4),
    alignment: dict(x=Q, y=KEY),
    uniformity: dict(x=Q),
    hardest_negative_similarity: dict(query=Q, negatives=NEG),
    embedding_diagnostics: dict(query=Q, key=KEY, negatives=NEG),
    MemoryQueue: dict(size=16, dim=8),
    _enqueue: {},
    momentum_update: dict(online=nn.Linear(8, 3), target=nn.Linear(8, 3), m=0.9),
    cosine_momentum: dict(base=0.99, step=0, total_steps=10),
    knn_predict: dict(
        features=Q, memory_features=MEMORY, memory_labels=MEMORY_LABELS, num_classes=3
    ),
    knn_neighbours: dict(features=Q, memory_features=MEMORY, memory_labels=MEMORY_LABELS),
    knn_accuracy: dict(
        features=Q,
        labels=LABELS4,
        memory_features=MEMORY,
        memory_labels=MEMORY_LABELS,
        num_classes=3,
    ),
    sharded_knn_accuracy: dict(
        queries=Q, labels=LABELS4, memory=MEMORY, memory_labels=MEMORY_LABELS
    ),
    single_process_gather: dict(x=Q),
    gather_rows: dict(x=Q, all_gather=single_process_gather),
    gather_with_grad: dict(x=Q),
    rank_and_world_size: {},
    key_permutation: dict(n=8, groups=2, seed=0),
    encode_shuffled: dict(encoder=nn.Identity(), x=Q, perm=torch.tensor([2, 0, 3, 1])),
    encode_shuffled_across_ranks: dict(
        encoder=nn.Identity(),
        x=Q,
        perm=torch.tensor([2, 0, 3, 1]),
        rank=0,
        all_gather=single_process_gather,
    ),
}

# fmt: off
CASES = [
    # --- the InfoNCE family: query, key, negatives --------------------------------------
    *[(fn, kwargs, match) for fn in (info_nce, info_nce_logits, info_nce_stats,
                                       contrastive_entropy, temperature_gradient, _infonce_call)
      for kwargs, match in [
          ({"query": None}, "query must be a torch.Tensor, got NoneType"),
          ({"query": Q.tolist()}, "query must be a torch.Tensor, got list"),
          ({"query": Q.long()}, "query must be a floating-point tensor, got dtype torch.int64"),
          ({"query": Q.bool()}, "query must be a floating-point tensor, got dtype torch.bool"),
          ({"query": Q[0]}, r"query must have 2 dimensions, got shape \(8,\)"),
          ({"query": Q[:0], "key": KEY[:0]}, r"query must be a non-empty .*\(0, 8\)"),
          ({"key": KEY[:3]}, r"key must have the shape of query \(4, 8\), got \(3, 8\)"),
          ({"key": KEY[:1]}, r"key must have the shape of query \(4, 8\), got \(1, 8\)"),
          ({"key": META}, "key must be on the device of query"),
          ({"negatives": NEG.tolist()}, "negatives must be a torch.Tensor, got list"),
          ({"negatives": NEG[:, :5]}, r"negatives must have shape \(K, 8\) .*got \(6, 5\)"),
          ({"negatives": NEG[0]}, r"negatives must have shape .*got \(8,\)"),
          ({"negatives": torch.randn(3, 2, 8)}, r"negatives must have shape .*\(3, 2, 8\)"),
          ({"negatives": NEG.long()}, "negatives must be a floating-point tensor"),
          ({"negatives": META}, "negatives must be on the device of query"),
          ({"temperature": None}, "temperature must be a positive finite number or a 0-d"),
          ({"temperature": "0.1"}, "temperature must be a positive finite .*got '0.1'"),
          ({"temperature": True}, "temperature must be a positive finite .*got True"),
          ({"temperature": 0.0}, "temperature must be a positive finite number, got 0.0"),
          ({"temperature": -0.1}, "temperature must be a positive finite number, got -0.1"),
          ({"temperature": NAN}, "temperature must be a positive finite number, got nan"),
          ({"temperature": INF}, "temperature must be a positive finite number, got inf"),
          ({"temperature": 1e-45}, r"temperature must lie in \[1.175e-38, .*got 1e-45"),
          ({"temperature": torch.tensor([0.1])}, r"temperature must be a 0-d floating.*\(1,\)"),
          ({"temperature": torch.tensor(1)}, "temperature must be a 0-d floating-point"),
      ]],
    *[(fn, kwargs, match) for fn in (info_nce, info_nce_logits, info_nce_stats,
                                       contrastive_entropy, temperature_gradient,
                                       chunked_info_nce)
      for kwargs, match in [
          ({"normalize": "no"}, "normalize must be True or False, got 'no'"),
          ({"normalize": None}, "normalize must be True or False, got None"),
      ]],
    (info_nce, {"reduction": None}, "reduction must be one of .*got None"),
    (info_nce, {"reduction": "avg"}, "reduction must be one of .*got 'avg'"),
    (InfoNCE, {"temperature": 0.0}, "temperature must be a positive finite number, got 0.0"),
    (InfoNCE, {"temperature": "hot"}, "temperature must be a positive finite .*got 'hot'"),
    (InfoNCE, {"reduction": "avg"}, "reduction must be one of"),
    (InfoNCE, {"normalize": 1}, "normalize must be True or False, got 1"),
    (chunked_info_nce, {"negatives": None}, r"negatives must be a \(K, D\) tensor .*got None"),
    (chunked_info_nce, {"negatives": torch.randn(4, 2, 8)}, r"must have shape \(K, D\)"),
    (chunked_info_nce, {"query": META, "key": META}, "negatives must be on the device of query"),
    (chunked_info_nce, {"chunk_size": 0}, "chunk_size must be an integer >= 1, got 0"),
    (chunked_info_nce, {"chunk_size": 2.0}, "chunk_size must be an integer >= 1, got 2.0"),
    (chunked_info_nce, {"reduction": "avg"}, "reduction must be one of"),
    (chunked_info_nce, {"temperature": 1e-45}, "temperature must lie in"),
    (chunked_info_nce_stats, {"negatives": None}, r"negatives must be a \(K, D\) tensor"),
    (chunked_info_nce_stats, {"key": KEY.T}, r"key must have the shape of query"),
    (separated_loss, {"num_negatives": -1}, "num_negatives must be an integer >= 0, got -1"),
    (separated_loss, {"num_negatives": 2.0}, "num_negatives must be an integer >= 0, got 2.0"),
    (separated_loss, {"temperature": 0}, "temperature must be a positive finite number"),
    (separated_loss, {"temperature": 1e-320}, r"temperature must lie in \[2.225e-308"),
    (separated_loss, {"positive_similarity": None}, "positive_similarity must be a finite"),
    (separated_loss, {"negative_similarity": INF}, "negative_similarity must be a finite"),
    # --- NT-Xent and SupCon ---------------------------------------------------------------
    (nt_xent, {"z1": None}, "z1 must be a torch.Tensor, got NoneType"),
    (nt_xent, {"z2": KEY[:3]}, r"z1 and z2 must be .*\(4, 8\) and \(3, 8\)"),
    (nt_xent, {"z1": Q[:, :0], "z2": KEY[:, :0]}, r"z1 and z2 must be non-empty .*\(4, 0\)"),
    (nt_xent, {"z2": META}, "z2 must be on the device of z1"),
    (nt_xent, {"z1": Q.long()}, "z1 must be a floating-point tensor"),
    (nt_xent, {"temperature": -1.0}, "temperature must be a positive finite number"),
    (nt_xent, {"normalize": "yes"}, "normalize must be True or False"),
    (nt_xent, {"chunk_size": 0}, "chunk_size must be an integer >= 1, got 0"),
    (nt_xent, {"reduction": "avg"}, "reduction must be one of"),
    (supcon, {"features": Q}, r"features must have 3 dimensions, got shape \(4, 8\)"),
    (supcon, {"features": torch.zeros(0, 2, 8)}, r"features must be .* \(0, 2, 8\)"),
    (supcon, {"labels": LABELS4[:3]}, r"labels must be an integer tensor of shape \(4,\)"),
    (supcon, {"labels": LABELS4.float()}, r"labels must be an integer .*torch.float32"),
    (supcon, {"labels": LABELS4.bool()}, r"labels must be an integer .*torch.bool"),
    (supcon, {"labels": [0, 1, 2, 0]}, "labels must be an integer tensor .*got list"),
    (supcon, {"labels": torch.empty(4, dtype=torch.long, device="meta")},
     "labels must be on the device of features"),
    (supcon, {"temperature": NAN}, "temperature must be a positive finite number, got nan"),
    (supcon, {"gather_distributed": None}, "gather_distributed must be True or False, got None"),
    (nt_xent, {"decoupled": "yes"}, "decoupled must be True or False, got 'yes'"),
    (nt_xent, {"z1": Q[:1], "z2": KEY[:1], "decoupled": True}, "decoupled=True needs .*N = 1"),
    (nt_xent, {"gather_distributed": 1}, "gather_distributed must be True or False, got 1"),
    (info_nce, {"decoupled": 1}, "decoupled must be True or False, got 1"),
    (info_nce, {"negatives": NEG[:0], "decoupled": True}, "decoupled=True needs .*K = 0"),
    # --- CLIP ------------------------------------------------------------------------------
    (clip_loss, {"image": None}, "image must be a torch.Tensor, got NoneType"),
    (clip_loss, {"image": Q[0]}, r"image must have 2 dimensions, got shape \(8,\)"),
    (clip_loss, {"text": KEY.long()}, "text must be a floating-point tensor, got .*int64"),
    (clip_loss, {"text": KEY[:3]}, r"image and text must be .*\(4, 8\) and \(3, 8\)"),
    (clip_loss, {"text": META}, "text must be on the device of image"),
    (clip_loss, {"temperature": 0.0}, "temperature must be a positive finite number, got 0.0"),
    (clip_loss, {"temperature": 1e-45}, "temperature must lie in"),
    (clip_loss, {"reduction": "avg"}, "reduction must be one of"),
    (clip_loss, {"normalize": "no"}, "normalize must be True or False, got 'no'"),
    (clip_loss, {"gather_distributed": None}, "gather_distributed must be True or False"),
    # --- distillation ----------------------------------------------------------------------
    (distillation_loss, {"student_logits": None}, "student_logits must be a torch.Tensor"),
    (distillation_loss, {"teacher_logits": KEY.long()}, "teacher_logits must be a floating"),
    (distillation_loss, {"teacher_logits": KEY[:3]}, r"one shape, got \(4, 8\) and \(3, 8\)"),
    (distillation_loss, {"teacher_logits": KEY[:1]}, r"one shape, got \(4, 8\) and \(1, 8\)"),
    (distillation_loss, {"student_logits": Q[:, :0], "teacher_logits": KEY[:, :0]},
     r"class dimension C >= 1, got shape \(4, 0\)"),
    (distillation_loss, {"student_logits": torch.tensor(1.0), "teacher_logits": torch.tensor(1.0)},
     r"class dimension C >= 1, got shape \(\)"),
    (distillation_loss, {"teacher_logits": META}, "teacher_logits must be on the device of"),
    (distillation_loss, {"temperature": 0.0}, "temperature must be a positive finite"),
    (distillation_loss, {"temperature": 1e-45}, "temperature must lie in"),
    (distillation_loss, {"reduction": "mean"}, r"reduction must be one of \('batchmean'"),
    (distillation_loss, {"reduction": ["sum"]}, r"reduction must be one of .*\['sum'\]"),
    # --- softmax and sampling --------------------------------------------------------------
    (softmax_with_temperature, {"logits": [1.0, 2.0]}, "logits must be a torch.Tensor"),
    (softmax_with_temperature, {"logits": Q.long()}, "logits must be a floating-point"),
    (softmax_with_temperature, {"temperature": 0.0}, "temperature must be a positive finite"),
    (softmax_with_temperature, {"temperature": 1e-45}, "temperature must lie in .*got 1e-45"),
    (softmax_with_temperature, {"dim": 2}, r"dim must be in \[-2, 2\), got 2"),
    (softmax_with_temperature, {"dim": None}, "dim must be an integer, got None"),
    (sample_with_temperature, {"logits": None}, "logits must be a torch.Tensor"),
    (sample_with_temperature, {"logits": torch.zeros(4, 0)}, r"logits must be \(\*, V\)"),
    (sample_with_temperature, {"temperature": -0.5}, "temperature must be a finite number >= 0"),
    (sample_with_temperature, {"temperature": INF}, "temperature must be a finite number >= 0"),
    (sample_with_temperature, {"temperature": 1e-45}, "temperature must lie in .*got 1e-45"),
    (sample_with_temperature, {"temperature": "1"}, "temperature must be a finite number >= 0"),
    (sample_with_temperature, {"top_k": 0}, "top_k must be an integer >= 1, got 0"),
    (sample_with_temperature, {"top_p": 0.0}, r"top_p must be a number in \(0, 1\], got 0.0"),
    (sample_with_temperature, {"top_p": "0.9"}, r"top_p must be a number in \(0, 1\]"),
    (sample_with_temperature, {"generator": 0}, "generator must be a torch.Generator or None"),
    (sample_with_temperature, {"logits": torch.tensor([[0.0, NAN]])}, "no nan and no"),
    # --- learnable temperature and calibration ---------------------------------------------
    (LearnableTemperature, {"init": 0.0}, "init must be a positive finite number, got 0.0"),
    (LearnableTemperature, {"init": None}, "init must be a positive finite number, got None"),
    (LearnableTemperature, {"init": torch.tensor(0.1)}, "init must be a Python number"),
    (LearnableTemperature, {"min": -1.0}, "min must be a positive finite number, got -1.0"),
    (LearnableTemperature, {"max": NAN}, "max must be a positive finite number, got nan"),
    (LearnableTemperature, {"min": 1e-45}, r"min must lie in \[1.175e-38"),
    (LearnableTemperature, {"min": 0.5, "max": 0.1}, "min must be <= max, got min=0.5"),
    (LearnableTemperature, {"init": 2.0}, r"init must be within \[min, max\]"),
    (_fit, {"logits": None}, "logits must be a torch.Tensor, got NoneType"),
    (_fit, {"logits": PROBS[0]}, r"logits must have 2 dimensions, got shape \(3,\)"),
    (_fit, {"logits": PROBS[:, :1]}, r"logits must be \(N, C\) with N >= 1 and C >= 2"),
    (_fit, {"logits": PROBS[:0]}, r"logits must be \(N, C\) with N >= 1"),
    (_fit, {"logits": torch.full((4, 3), INF)}, "logits must be finite"),
    (_fit, {"logits": torch.full((4, 3), 1e200, dtype=torch.float64)}, r"logits must lie "),
    (_fit, {"labels": LABELS4[:3]}, r"labels must be an int64 tensor of shape \(4,\)"),
    (_fit, {"labels": LABELS4.int()}, r"labels must be an int64 .*torch.int32"),
    (_fit, {"labels": torch.tensor([0, 1, 3, 0])}, r"labels must lie in \[0, 3\), got .* 3"),
    (_fit, {"labels": torch.tensor([0, -1, 2, 0])}, r"labels must lie in \[0, 3\), got .* -1"),
    (_fit, {"max_temperature": 1.0}, "max_temperature must be finite and > 1, got 1.0"),
    (_fit, {"max_temperature": "10"}, "max_temperature must be finite and > 1, got '10'"),
    (_scale, {"logits": None}, "logits must be a torch.Tensor"),
    (_scale, {"logits": LABELS4}, "logits must be a floating-point tensor"),
    *[(fn, kwargs, match) for fn in (expected_calibration_error, reliability_bins)
      for kwargs, match in [
          ({"probs": None}, "probs must be a torch.Tensor, got NoneType"),
          ({"probs": PROBS[0]}, r"probs must have 2 dimensions, got shape \(3,\)"),
          ({"probs": PROBS[:0], "labels": LABELS4[:0]}, r"probs must be \(N, C\) with N >= 1"),
          ({"probs": PROBS * 2}, "probs must be probabilities, each row summing to 1 .*row 0"),
          ({"probs": PROBS.log()}, "probs must be non-negative probabilities"),
          ({"probs": torch.full((4, 3), NAN)}, "probs must be finite probabilities, got row 0"),
          ({"labels": LABELS4[:3]}, r"labels must be .*\(4,\).*got shape \(3,\)"),
          ({"labels": torch.tensor([0, 1, 2, 0, 1])}, r"labels .*\(4,\).*got shape \(5,\)"),
          ({"labels": torch.tensor([0, 1, 5, 0])}, r"labels must lie in \[0, 3\)"),
          ({"labels": LABELS4.float()}, "labels must be an int64 tensor.*torch.float32"),
          ({"n_bins": 0}, "n_bins must be an integer >= 1, got 0"),
          ({"n_bins": 10.0}, "n_bins must be an integer >= 1, got 10.0"),
          ({"n_bins": True}, "n_bins must be an integer >= 1, got True"),
      ]],
    # --- diagnostics -------------------------------------------------------------------------
    (alignment, {"x": None}, "x must be a torch.Tensor, got NoneType"),
    (alignment, {"y": KEY[:3]}, r"x and y must be one \(N, D\) shape.*\(4, 8\) and \(3, 8\)"),
    (alignment, {"y": META}, "y must be on the device of x"),
    (alignment, {"alpha": 0}, "alpha must be a positive finite number, got 0"),
    (alignment, {"alpha": None}, "alpha must be a positive finite number, got None"),
    (uniformity, {"x": Q[:1]}, r"x needs N >= 2 rows .*\(1, 8\)"),
    (uniformity, {"x": Q.long()}, "x must be a floating-point tensor"),
    (uniformity, {"t": NAN}, "t must be a positive finite number, got nan"),
    (hardest_negative_similarity, {"negatives": None}, "negatives must be a .*got None"),
    (hardest_negative_similarity, {"negatives": NEG.tolist()}, "negatives must be a torch.Tensor"),
    (hardest_negative_similarity, {"query": None}, "query must be a torch.Tensor"),
    (hardest_negative_similarity, {"negatives": NEG[:, :3]}, r"negatives must have shape"),
    (hardest_negative_similarity, {"negatives": NEG[:0]}, r"top_k must be <= 0, .*\(0, 8\)"),
    (hardest_negative_similarity, {"top_k": 0}, "top_k must be an integer >= 1, got 0"),
    (hardest_negative_similarity, {"top_k": 7}, r"top_k must be <= 6, .*got 7"),
    (hardest_negative_similarity, {"normalize": "no"}, "normalize must be True or False"),
    (embedding_diagnostics, {"query": None}, "query must be a torch.Tensor"),
    (embedding_diagnostics, {"key": KEY[:3]}, r"key must have the shape of query"),
    (embedding_diagnostics, {"negatives": "queue"}, "negatives must be a torch.Tensor, got str"),
    (embedding_diagnostics, {"negatives": NEG[:, :3]}, r"negatives must have shape"),
    (embedding_diagnostics, {"temperature": 0.0}, "temperature must be a positive finite"),
    # --- queue and momentum --------------------------------------------------------------------
    (MemoryQueue, {"size": 0}, "size must be an integer >= 1, got 0"),
    (MemoryQueue, {"size": 16.0}, "size must be an integer >= 1, got 16.0"),
    (MemoryQueue, {"dim": None}, "dim must be an integer >= 1, got None"),
    (_enqueue, {"keys": None}, "keys must be a torch.Tensor, got NoneType"),
    (_enqueue, {"keys": KEY[:, :5]}, r"keys must have shape \(B, 8\) .*got \(4, 5\)"),
    (_enqueue, {"keys": KEY[0]}, r"keys must have 2 dimensions, got shape \(8,\)"),
    (_enqueue, {"keys": KEY.long()}, "keys must be a floating-point tensor"),
    (_enqueue, {"keys": META}, r"keys must be on the device of the queue \(cpu\), got meta"),
    (momentum_update, {"online": None}, "online must be an nn.Module, got NoneType"),
    (momentum_update, {"target": [nn.Linear(8, 3)]}, "target must be an nn.Module, got list"),
    (momentum_update, {"m": 1.5}, r"m must be a number in \[0, 1\], got 1.5"),
    (momentum_update, {"m": None}, r"m must be a number in \[0, 1\], got None"),
    (momentum_update, {"target": nn.Linear(8, 4)}, r"differ in shape at 'weight': \(3, 8\)"),
    (momentum_update, {"target": nn.Linear(8, 3, bias=False)}, r"differ in names, .*'bias'"),
    (momentum_update, {"target": nn.Linear(8, 3, device="meta")}, "differ in device at 'weight'"),
    (cosine_momentum, {"base": 2.0}, r"base must be a number in \[0, 1\], got 2.0"),
    (cosine_momentum, {"step": -1}, "step must be an integer >= 0, got -1"),
    (cosine_momentum, {"step": 1.5}, "step must be an integer >= 0, got 1.5"),
    (cosine_momentum, {"step": True}, "step must be an integer >= 0, got True"),
    (cosine_momentum, {"total_steps": 0}, "total_steps must be an integer >= 1, got 0"),
    (cosine_momentum, {"total_steps": 10.0}, "total_steps must be an integer >= 1, got 10.0"),
    (cosine_momentum, {"total_steps": False}, "total_steps must be an integer >= 1, got False"),
    # --- kNN -------------------------------------------------------------------------------------
    *[(fn, kwargs, match) for fn in (knn_predict, knn_neighbours, knn_accuracy)
      for kwargs, match in [
          ({"features": None}, "features must be a torch.Tensor, got NoneType"),
          ({"features": Q[0]}, r"features must have 2 dimensions, got shape \(8,\)"),
          ({"memory_features": MEMORY[:, :5]}, r"same dimension D, got shapes \(4, 8\)"),
          ({"memory_features": MEMORY.long()}, "memory_features must be a floating-point"),
          ({"memory_features": torch.empty(10, 8, device="meta")},
           "memory_features must be on the device of features"),
          ({"memory_labels": MEMORY_LABELS[:9]}, r"memory_labels must be .*shape \(10,\)"),
          ({"memory_labels": MEMORY_LABELS.int()}, "memory_labels must be an int64 tensor"),
          ({"memory_labels": MEMORY_LABELS.tolist()}, "memory_labels must be an int64 .*list"),
          ({"k": 0}, "k must be an integer >= 1, got 0"),
      ]],
    (knn_predict, {"memory_labels": MEMORY_LABELS + 1}, r"memory_labels must lie in \[0, 3\)"),
    (knn_predict, {"num_classes": 0}, "num_classes must be an integer >= 1, got 0"),
    (knn_predict, {"temperature": 0.0}, "temperature must be a positive finite number"),
    (knn_predict, {"temperature": 1e-45}, "temperature must lie in"),
    (knn_predict, {"chunk_size": 0}, "chunk_size must be an integer >= 1, got 0"),
    (knn_predict, {"memory_features": MEMORY[:0], "memory_labels": MEMORY_LABELS[:0]},
     "memory_features must hold at least one row"),
    (knn_neighbours, {"memory_chunk_size": 0}, "memory_chunk_size must be an integer >= 1"),
    (knn_accuracy, {"labels": LABELS4[:3]}, r"labels must be .*\(4,\).*got shape \(3,\)"),
    (knn_accuracy, {"labels": torch.tensor([0, 1, 2, 7])}, r"labels must lie in \[0, 3\)"),
    (knn_accuracy, {"num_classes": None}, "num_classes must be an integer >= 1, got None"),
    (knn_accuracy, {"features": Q[:0], "labels": LABELS4[:0]}, "at least one query"),
    (sharded_knn_accuracy, {"queries": None}, "queries must be a torch.Tensor"),
    (sharded_knn_accuracy, {"memory": MEMORY[:, :3]}, "queries and memory must have the same"),
    (sharded_knn_accuracy, {"labels": LABELS4[:3]}, r"labels must be .*shape \(4,\)"),
    (sharded_knn_accuracy, {"labels": LABELS4 - 1}, "labels must be >= 0, got -1"),
    (sharded_knn_accuracy, {"memory_labels": MEMORY_LABELS.float()},
     "memory_labels must be an int64 tensor"),
    (sharded_knn_accuracy, {"all_gather": None}, "all_gather must be callable, got NoneType"),
    (sharded_knn_accuracy, {"k": -3}, "k must be an integer >= 1, got -3"),
    (sharded_knn_accuracy, {"temperature": -0.1}, "temperature must be a positive finite"),
    # --- distributed and shuffling BN ------------------------------------------------------
    (single_process_gather, {"x": [1, 2]}, "x must be a torch.Tensor, got list"),
    (gather_rows, {"x": torch.tensor(1.0)}, r"x must be a tensor of rows \(n, ...\), got shape"),
    (gather_rows, {"x": None}, r"x must be a tensor of rows .*NoneType"),
    (gather_rows, {"all_gather": "nccl"}, "all_gather must be callable, got str"),
    (gather_with_grad, {"x": [1, 2]}, "x must be a torch.Tensor, got list"),
    (key_permutation, {"n": 0}, "n must be an integer >= 1, got 0"),
    (key_permutation, {"n": 8.0}, "n must be an integer >= 1, got 8.0"),
    (key_permutation, {"groups": 0}, "groups must be an integer >= 1, got 0"),
    (key_permutation, {"groups": 3}, "n=8 keys must split into groups=3 equal BN groups"),
    (key_permutation, {"seed": None}, r"seed must be an integer in \[-2\*\*63, 2\*\*64\)"),
    (key_permutation, {"seed": 2**64}, r"seed must be an integer .*got 18446744073709551616"),
    (key_permutation, {"seed": 1.0}, r"seed must be an integer .*got 1.0"),
    *[(fn, kwargs, match) for fn in (encode_shuffled, encode_shuffled_across_ranks)
      for kwargs, match in [
          ({"encoder": None}, "encoder must be callable"),
          ({"x": None}, r"x must be a batch tensor \(B, ...\), got NoneType"),
          ({"perm": None}, r"perm must be an integer tensor of shape \(4,\), got NoneType"),
          ({"perm": torch.tensor([0.0, 1.0, 2.0, 3.0])}, "perm must be an integer tensor, got"),
          ({"perm": torch.tensor([True, False, True, False])}, "perm must be an integer tensor"),
          ({"perm": torch.tensor([0, 1, 2])}, r"perm must have shape \(4,\), got \(3,\)"),
          ({"perm": torch.tensor([0, 1, 1, 2])}, r"perm must be a permutation of range\(4\)"),
          ({"perm": torch.tensor([0, 1, 2, 4])}, r"perm must be a permutation of range\(4\)"),
      ]],
    (encode_shuffled_across_ranks, {"rank": 1}, r"rank must be in \[0, 1\) .*got 1"),
    (encode_shuffled_across_ranks, {"rank": -1}, "rank must be an integer >= 0, got -1"),
    (encode_shuffled_across_ranks, {"all_gather": None}, "all_gather must be callable"),
]
# fmt: on


def _case_id(case) -> str:
    fn, kwargs, _ = case
    name = getattr(fn, "__name__", repr(fn)).lstrip("_")
    return f"{name}-{'-'.join(kwargs)}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_a_value_error_naming_the_argument(case):
    fn, kwargs, match = case
    with pytest.raises(ValueError, match=match):
        fn(**{**VALID[fn], **kwargs})


@pytest.mark.parametrize("fn", list(VALID), ids=lambda fn: fn.__name__.lstrip("_"))
def test_every_valid_call_in_the_table_runs(fn):
    """The table's baseline calls are valid, so each case fails for its own argument only."""
    fn(**VALID[fn])


def test_the_table_covers_every_public_callable():
    covered = {fn.__name__ for fn in VALID} | {"TemperatureScaler"}  # _fit and _scale
    exported = {name for name in infonce.__all__ if callable(getattr(infonce, name))}
    missing = exported - covered - {"load_backbone", "InfoNCEStats"}  # a trainer bridge; a tuple
    assert not missing, sorted(missing)
