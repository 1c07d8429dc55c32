"""Capture and restore every random-number generator a training run draws from.

The states are plain Python values and tensors, so checkpoints holding them still load with
``torch.load(weights_only=True)``.
"""

import random

import numpy as np
import torch


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
