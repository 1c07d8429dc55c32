"""Seeds derived from the run's seed, and the states of every random-number generator.

- :func:`derive_seed`: the one way the trainer turns its seed into the seed of one random
  draw (an image's augmentation, a step's key shuffle, the queue's initialisation, the fixed
  diagnostic views): a splitmix64 hash of the seed and the draw's coordinates, the same in
  every process and Python run, unrelated for neighbouring coordinates. Draws of different
  kinds use different streams (:data:`KEY_SHUFFLE`, ...).
- :func:`rng_states` / :func:`restore_rng_states`: the generators' states, plain Python values
  and tensors, so checkpoints holding them still load with ``torch.load(weights_only=True)``.
"""

import hashlib
import random

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def splitmix64(z: int) -> int:
    """One step of Steele et al.'s splitmix64 finaliser on a 64-bit integer."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_seed(seed: int, *keys: int) -> int:
    """The seed of the draw at ``keys`` under the run's ``seed``: a 63-bit splitmix64 chain.

    ``derive_seed(seed, epoch, index)`` seeds an image's augmentation (the data stream,
    untagged); every other kind of draw starts its keys with its stream, e.g.
    ``derive_seed(seed, KEY_SHUFFLE, step, draw)``. Streams lie in [2**62, 2**63), which no
    epoch reaches, so two kinds of draw share a seed only by a 64-bit hash collision.

    Returns:
        An int in [0, 2**63), a valid ``torch.Generator.manual_seed``.
    """
    z = splitmix64(seed & _MASK64)
    for key in keys:
        z = splitmix64(z ^ (key & _MASK64))
    return z >> 1


def _stream(name: str) -> int:
    return 2**62 + int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") % 2**62


SEED_SCHEME = 2  # recorded in checkpoints: 1, before the streams, seeded the key shuffle otherwise
KEY_SHUFFLE = _stream("key_shuffle")  # keys: (step, draw): the permutation of a step's keys
QUEUE_INIT = _stream("queue_init")  # no keys: the random unit vectors a queue starts with
PROBE_INIT = _stream("probe_init")  # no keys: the online linear probe's initial weights
FIXED_VIEWS = _stream("fixed_views")  # keys: (image,): the diagnostics' fixed augmentations


def rng_states() -> dict:
    """The states of Python's, NumPy's, torch's CPU and (if present) every CUDA generator."""
    states = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    """Inverse of :func:`rng_states`; CUDA states are restored only when CUDA is in use."""
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _numpy_state() -> tuple:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)
