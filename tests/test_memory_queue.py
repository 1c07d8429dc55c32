import copy

import pytest
import torch

from infonce import MemoryQueue, info_nce


def rows(start, stop, dim=2):
    """Keys whose first coordinate is their sequence number, so order is visible."""
    return torch.arange(start, stop, dtype=torch.float32)[:, None].repeat(1, dim)


def ids(queue):
    return queue.queue[:, 0].tolist()


def test_fifo_order_fills_rows_in_sequence():
    queue = MemoryQueue(size=6, dim=2)
    queue.enqueue(rows(0, 2))
    queue.enqueue(rows(2, 5))
    assert ids(queue) == [0, 1, 2, 3, 4, 0]
    assert int(queue.ptr) == 5 and int(queue.filled) == 5
    assert queue.negatives()[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_queue_wraps_around_when_batch_does_not_divide_size():
    queue = MemoryQueue(size=10, dim=2)
    for b in range(4):
        queue.enqueue(rows(4 * b, 4 * b + 4))  # 16 keys in batches of 4
    # rows 0..9 were written with 0..9, then 10..15 overwrote rows 0..5: every key written
    assert ids(queue) == [10, 11, 12, 13, 14, 15, 6, 7, 8, 9]
    assert int(queue.ptr) == 6 and int(queue.filled) == 10
    queue.enqueue(rows(16, 20))
    assert ids(queue) == [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    assert int(queue.ptr) == 0


def test_batch_larger_than_queue_keeps_newest_keys():
    queue = MemoryQueue(size=4, dim=2)
    queue.enqueue(rows(0, 1))
    queue.enqueue(rows(1, 8))
    assert sorted(ids(queue)) == [4, 5, 6, 7]
    assert int(queue.filled) == 4
    queue.enqueue(rows(8, 9))  # the oldest of the newest four goes first
    assert sorted(ids(queue)) == [5, 6, 7, 8]


def test_state_dict_round_trip_mid_wrap_restores_identical_next_enqueue():
    queue = MemoryQueue(size=10, dim=3)
    for _ in range(3):
        queue.enqueue(torch.randn(4, 3))
    state = queue.state_dict()
    assert set(state) == {"queue", "ptr", "filled"}
    restored = MemoryQueue(size=10, dim=3)
    restored.load_state_dict(state)
    nxt = torch.randn(4, 3)
    queue.enqueue(nxt)
    restored.enqueue(nxt)
    assert torch.equal(queue.queue, restored.queue)
    assert torch.equal(queue.ptr, restored.ptr) and torch.equal(queue.filled, restored.filled)


def test_negatives_is_a_copy_safe_for_backward_after_the_next_enqueue():
    queue = MemoryQueue(size=8, dim=4)
    queue.enqueue(torch.randn(8, 4))
    q = torch.randn(2, 4, requires_grad=True)
    loss = info_nce(q, torch.randn(2, 4), queue.negatives())
    before = queue.negatives()
    queue.enqueue(torch.randn(3, 4))
    loss.backward()  # would raise if the saved negatives had been modified in place
    assert q.grad is not None
    assert not torch.equal(before, queue.negatives())


def test_enqueue_never_tracks_gradients():
    queue = MemoryQueue(size=4, dim=2)
    keys = torch.randn(3, 2, requires_grad=True)
    queue.enqueue(keys * 2)
    assert not queue.queue.requires_grad and queue.queue.grad_fn is None


def test_empty_queue_has_no_negatives_and_empty_batch_is_a_no_op():
    queue = MemoryQueue(size=4, dim=2)
    assert queue.negatives().shape == (0, 2)
    queue.enqueue(torch.zeros(0, 2))
    assert int(queue.filled) == 0 and int(queue.ptr) == 0


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_queue_size_below_one_is_rejected(size):
    with pytest.raises(ValueError, match=rf"size must be an integer >= 1, got {size!r}"):
        MemoryQueue(size=size, dim=8)


def test_enqueue_with_wrong_dim_is_rejected():
    queue = MemoryQueue(size=4, dim=8)
    with pytest.raises(ValueError, match=r"keys must have shape \(B, 8\).*got \(2, 7\)"):
        queue.enqueue(torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"keys must have 2 dimensions, got shape \(8,\)"):
        queue.enqueue(torch.randn(8))
    with pytest.raises(ValueError, match="keys must be a floating-point tensor"):
        queue.enqueue(torch.ones(2, 8, dtype=torch.long))


def test_num_keys_is_tracked_on_the_host_and_reread_after_any_other_write(monkeypatch):
    """enqueue keeps the host's count (no device read); a load, a direct write or a copy of the
    module makes the next read go to the buffer, so the count is never stale."""
    queue = MemoryQueue(10, 4)
    reads = []
    monkeypatch.setattr(torch.Tensor, "__int__", lambda t: reads.append(1) or t.item().__int__())
    for batch, expected in ((3, 3), (4, 7), (9, 10), (0, 10)):
        queue.enqueue(torch.randn(batch, 4))
        assert queue.num_keys == expected and len(queue.negatives()) == expected
    assert reads == []  # all from the host's count
    queue.filled.fill_(2)  # a direct write
    assert queue.num_keys == 2 and len(reads) == 1
    queue.load_state_dict(MemoryQueue(10, 4).state_dict())
    assert queue.num_keys == 0 and len(queue.negatives()) == 0 and len(reads) == 2
    source = MemoryQueue(10, 4)
    source.enqueue(torch.randn(7, 4))
    queue.load_state_dict(source.state_dict(), assign=True)  # the buffers replaced
    assert queue.num_keys == 7
    queue.load_state_dict(MemoryQueue(10, 4).state_dict())
    queue.enqueue(torch.randn(5, 4))
    copied = copy.deepcopy(queue)
    copied.enqueue(torch.randn(1, 4))
    assert copied.num_keys == 6 and queue.num_keys == 5
    with torch.inference_mode():  # no version counter there: always read from the buffer
        frozen = MemoryQueue(5, 4)
        frozen.enqueue(torch.randn(2, 4))
        frozen.filled.fill_(1)
        assert frozen.num_keys == 1


def test_a_labelled_queue_keeps_each_label_with_its_key_through_wraps_and_state_dicts():
    queue = MemoryQueue(5, 2, labelled=True)
    keys = torch.arange(14.0).view(7, 2)  # row i holds (2i, 2i + 1)
    queue.enqueue(keys[:3], torch.arange(3))
    queue.enqueue(keys[3:7], torch.arange(3, 7))  # wraps: rows 3, 4, 0, 1
    held, labels = queue.keys_and_labels()
    assert labels.tolist() == [5, 6, 2, 3, 4]
    assert torch.equal(held[:, 0] / 2, labels.float())  # every label beside its own key
    restored = MemoryQueue(5, 2, labelled=True)
    restored.load_state_dict(copy.deepcopy(queue.state_dict()))
    for q in (queue, restored):
        q.enqueue(keys[:6], torch.arange(10, 16))  # larger than K: the newest 5
    assert torch.equal(queue.labels, restored.labels)
    assert queue.keys_and_labels()[1].tolist() == [14, 15, 11, 12, 13]  # from row 2 on
    assert "labelled=True" in repr(queue)


@pytest.mark.parametrize(
    "labelled, labels, match",
    [
        (True, None, "labels are needed by a labelled queue"),
        (False, torch.zeros(2, dtype=torch.long), "labels given to a queue without labels"),
        (True, torch.zeros(3, dtype=torch.long), r"labels must be an int64 tensor of shape \(2,\)"),
        (True, torch.zeros(2, dtype=torch.int32), r"labels must be an int64 .*torch.int32"),
    ],
)
def test_labels_must_match_the_queue_and_the_keys(labelled, labels, match):
    queue = MemoryQueue(4, 3, labelled=labelled)
    with pytest.raises(ValueError, match=match):
        queue.enqueue(torch.zeros(2, 3), labels)
    assert queue.num_keys == 0


def test_keys_and_labels_needs_a_labelled_queue():
    with pytest.raises(ValueError, match="keys_and_labels needs a labelled queue"):
        MemoryQueue(4, 3).keys_and_labels()
    with pytest.raises(ValueError, match="labelled must be True or False, got 1"):
        MemoryQueue(4, 3, labelled=1)
