"""Shuffling BN: the permutation, and the keys it produces on one device and across ranks."""

import pytest
import torch
from fake_world import run_ranks
from torch import nn

from infonce.shuffle_bn import encode_shuffled, encode_shuffled_across_ranks, key_permutation
from infonce.trainer.backbones import ConvNet


@pytest.mark.parametrize(("n", "groups"), [(16, 4), (512, 8), (8, 8), (6, 1)])
def test_key_permutation_is_a_seeded_permutation(n, groups):
    perm = key_permutation(n, groups, seed=3)
    assert sorted(perm.tolist()) == list(range(n))
    assert torch.equal(perm, key_permutation(n, groups, seed=3))  # the same on every rank
    assert not torch.equal(perm, key_permutation(n, groups, seed=4)) or n <= 8


def test_no_bn_group_of_the_shuffled_batch_is_a_group_of_the_batch():
    """Over many seeds with 2 groups of 2, where a plain randperm often keeps a group whole."""
    plain_kept = 0
    for seed in range(200):
        blocks = key_permutation(4, 2, seed).view(2, 2) // 2  # original group of each image
        assert (blocks[:, 0] != blocks[:, 1]).all()
        plain = torch.randperm(4, generator=torch.Generator().manual_seed(seed)).view(2, 2) // 2
        plain_kept += bool((plain[:, 0] == plain[:, 1]).any())
    assert plain_kept > 0  # so the redraw is what guarantees it


def test_key_permutation_needs_equal_groups():
    with pytest.raises(ValueError, match="n=10 keys must split into groups=4 equal BN groups"):
        key_permutation(10, 4, seed=0)


def encoder(splits: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(ConvNet(widths=(8, 16), stem_width=8, bn_splits=splits), nn.Linear(16, 4))


def test_shuffled_keys_in_eval_mode_are_the_unshuffled_keys():
    net = encoder(4).eval()
    x = torch.randn(16, 3, 16, 16)
    with torch.no_grad():
        expected = net(x)
    keys = encode_shuffled(net, x, key_permutation(16, 4, seed=1))
    torch.testing.assert_close(keys, expected, rtol=1e-5, atol=1e-6)


def test_across_ranks_every_rank_gets_its_images_keys_back_in_order():
    """Eval mode (no batch statistics): the shuffle across 2 ranks must change nothing."""
    net = encoder(2).eval()
    x = torch.randn(2, 8, 3, 16, 16)  # (rank, B, ...)
    perm = key_permutation(16, 4, seed=2)
    with torch.no_grad():
        expected = [net(x[r]) for r in range(2)]
    keys = run_ranks(2, lambda r, gather: encode_shuffled_across_ranks(net, x[r], perm, r, gather))
    for r in range(2):
        torch.testing.assert_close(keys[r], expected[r], rtol=1e-5, atol=1e-6)


def test_across_ranks_in_training_a_key_is_normalised_with_other_images_than_its_query():
    """Train mode, 2 ranks x 8 images, 2 BN groups of 4 per rank: every key is the one its
    image gets in the BN group the global permutation put it into, and every such group mixes
    images of several groups of the unshuffled batch."""
    net = encoder(2).train()
    x = torch.randn(2, 8, 3, 16, 16)  # (rank, B, ...)
    perm = key_permutation(16, 4, seed=5)
    keys = run_ranks(2, lambda r, gather: encode_shuffled_across_ranks(net, x[r], perm, r, gather))
    for group in perm.view(4, 4):  # the images of each key BN group
        assert len(set((group // 4).tolist())) > 1  # never one query BN group's images
    keys = torch.cat(keys)  # (16, 4), global order
    images = x.flatten(0, 1)
    for rank in range(2):
        mine = perm[rank * 8 : (rank + 1) * 8]
        with torch.no_grad():
            expected = net(images[mine])  # rank's two BN groups of the shuffled batch
        torch.testing.assert_close(keys[mine], expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        unshuffled = torch.cat([net(x[r]) for r in range(2)])
    assert (keys - unshuffled).abs().amax(dim=1).min() > 1e-4  # every key saw other statistics
