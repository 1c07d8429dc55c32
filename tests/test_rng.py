import io
import random

import numpy as np
import torch

from infonce.trainer.rng import restore_rng_states, rng_states


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_restoring_rng_states_replays_the_same_draws_in_every_generator():
    np.random.randn()  # leave numpy with a cached gaussian, part of its state
    states = rng_states()
    first = draws()
    draws()
    restore_rng_states(states)
    assert draws() == first


def test_rng_states_survive_a_weights_only_torch_load():
    buffer = io.BytesIO()
    torch.save(rng_states(), buffer)
    buffer.seek(0)
    states = torch.load(buffer, weights_only=True)
    first = draws()
    restore_rng_states(states)
    assert draws() == first
