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


def test_every_kind_of_draw_has_its_own_seed_stream():
    from infonce.trainer.data.samplers import sample_seed
    from infonce.trainer.rng import FIXED_VIEWS, KEY_SHUFFLE, QUEUE_INIT, derive_seed

    streams = (KEY_SHUFFLE, QUEUE_INIT, FIXED_VIEWS)
    assert len(set(streams)) == 3 and all(2**62 <= s < 2**63 for s in streams)
    for seed in (0, 1, 12345):
        queue = derive_seed(seed, QUEUE_INIT)
        shuffles = {derive_seed(seed, KEY_SHUFFLE, step, draw) for step in range(50)
                    for draw in (0, 1)}  # fmt: skip
        views = {derive_seed(seed, FIXED_VIEWS, i) for i in range(256)}
        samples = {sample_seed(seed, epoch, i) for epoch in range(3) for i in range(100)}
        assert queue not in shuffles  # the queue's noise is not step 0's key shuffle
        assert len(shuffles) == 100 and len(views) == 256
        assert not (shuffles & views) and not (shuffles & samples) and not (views & samples)
    assert sample_seed(3, 1, 7) == derive_seed(3, 1, 7)  # the data stream is the untagged one
    assert derive_seed(0, KEY_SHUFFLE, 0, 0) != derive_seed(1, KEY_SHUFFLE, 0, 0)
