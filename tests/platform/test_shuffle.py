"""The Train worker's shuffle buffer (data/shuffle.py): every row once, mixed across blocks, seeded,
each batch a fresh array; and its background thread."""
import contextlib
import threading
import time

import numpy as np
import pytest
import torch

from contrastlab.platform.data.shuffle import in_background, shuffled_batches, to_torch


def _blocks(sizes, big=False):
    start = 0
    for n in sizes:
        ids = np.arange(start, start + n)
        block = {"index": ids, "w": ids.astype(np.float32) / 2}
        if big:  # rows of 3x48x48 uint8 = 6.9 KiB ... 27 KiB: copied one by one above 16 KiB
            block["view"] = np.broadcast_to((ids % 251).astype(np.uint8)[:, None, None, None], (n, 3, 96, 96)).copy()
        yield block
        start += n


@contextlib.contextmanager
def _watching_draws(before=None, after=None):
    """Calls before(held) / after(held) around every draw of the buffer (`shuffle._Held`)."""
    from contrastlab.platform.data import shuffle

    original = shuffle._Held.draw

    def spy(self, k, rng):
        if before is not None:
            before(self)
        out = original(self, k, rng)
        if after is not None:
            after(self)
        return out

    shuffle._Held.draw = spy
    try:
        yield
    finally:
        shuffle._Held.draw = original


@pytest.mark.parametrize("big", [False, True])
def test_every_row_exactly_once_and_columns_stay_together(big):
    batches = list(shuffled_batches(_blocks([30, 7, 50, 13], big), batch_size=16, buffer_rows=40, seed=3))
    seen = np.concatenate([b["index"] for b in batches])
    assert sorted(seen.tolist()) == list(range(100))
    assert [len(b["index"]) for b in batches] == [16] * 6 + [4]
    for b in batches:
        np.testing.assert_array_equal(b["w"], b["index"].astype(np.float32) / 2)
        if big:
            assert b["view"].shape[1:] == (3, 96, 96)
            np.testing.assert_array_equal(b["view"][:, 1, 5, 7], (b["index"] % 251).astype(np.uint8))
    assert all(b["index"].flags.writeable and b["index"].flags.c_contiguous for b in batches)


def test_drop_last_and_small_inputs():
    assert [len(b["index"]) for b in shuffled_batches(_blocks([10, 10, 5]), 8, 100, seed=0, drop_last=True)] == [8, 8, 8]
    assert [len(b["index"]) for b in shuffled_batches(_blocks([5]), 8, 100, seed=0)] == [5]
    assert list(shuffled_batches(_blocks([5]), 8, 100, seed=0, drop_last=True)) == []
    assert list(shuffled_batches(iter(()), 8, 100, seed=0)) == []
    assert [len(b["index"]) for b in shuffled_batches(_blocks([0, 4, 0]), 2, 0, seed=0)] == [2, 2]


def test_seeded_and_mixes_blocks():
    def order(seed):
        return np.concatenate([b["index"] for b in shuffled_batches(_blocks([100] * 10), 32, 300, seed)])

    np.testing.assert_array_equal(order(1), order(1))
    assert not np.array_equal(order(1), order(2))
    # the buffer shuffles, so the order is far from the input's, and once full (300 rows = 3 blocks)
    # a batch mixes several blocks
    assert abs(np.corrcoef(order(0), np.arange(1000))[0, 1]) < 0.99
    batches = [b["index"] for b in shuffled_batches(_blocks([100] * 10), 32, 300, seed=0)]
    assert all(len(set((b // 100).tolist())) >= 2 for b in batches[10:20])


def _held_at_each_draw(blocks, batch, buffer_rows, **kwargs) -> list[int]:
    held_at_draw = []
    with _watching_draws(before=lambda held: held_at_draw.append(len(held))):
        list(shuffled_batches(_blocks(blocks), batch, buffer_rows, seed=0, **kwargs))
    return held_at_draw


def test_the_first_batch_comes_early_and_the_buffer_grows():
    """webdataset's start ("tenth"): the first batch once a tenth of the buffer is held (at least a
    batch), then a row more held per row drawn, up to the buffer; Ray's rule waited for the whole buffer."""
    held_at_draw = _held_at_each_draw([10] * 100, 10, 200, start="tenth")
    assert held_at_draw[0] == 20  # a tenth of 200
    assert held_at_draw[:5] == [20, 30, 40, 50, 60]  # each draw of 10 leaves room for 10 more held rows
    assert max(held_at_draw) == 200 and held_at_draw[30] == 200  # full after 18 draws, then steady


def test_by_default_the_first_block_is_enough_to_start():
    """The platform's start ("first_block"): blocks smaller than a tenth of the buffer (FAME's 48-video
    shards under 1,000 rows) no longer wait for a second wave of read tasks; the buffer then grows as before."""
    assert _held_at_each_draw([48] * 20, 32, 1000)[0] == 48  # "tenth" waits for 100: three blocks
    assert _held_at_each_draw([48] * 20, 32, 1000, start="tenth")[0] == 144
    small_blocks = _held_at_each_draw([10] * 100, 10, 200)
    assert small_blocks[:5] == [10, 20, 30, 40, 50]
    assert max(small_blocks) == 200
    # at least a batch: 8-row blocks under a batch of 32 start at 32 rows (four blocks)
    assert _held_at_each_draw([8] * 40, 32, 1000)[0] == 32
    # blocks of a tenth or more start where webdataset's rule does
    for blocks, batch in (([222] * 10, 128), ([1024] * 3, 64)):
        assert _held_at_each_draw(blocks, batch, 1000) == _held_at_each_draw(blocks, batch, 1000, start="tenth")
    # an empty first block does not set the start
    assert _held_at_each_draw([0, 48, 48, 48], 32, 1000)[0] == 48


def test_an_unknown_start_rule_is_named():
    with pytest.raises(ValueError, match="start must be one of"):
        list(shuffled_batches(_blocks([4]), 2, 10, seed=0, start="half"))


def test_draws_are_uniform_over_the_buffer():
    # the first row of the first batch is uniform over the rows held then (one block of 10)
    counts = np.bincount([next(iter(shuffled_batches(_blocks([10]), 1, 10, seed=s)))["index"][0] for s in range(2000)], minlength=10)
    assert counts.min() > 150 and counts.max() < 250  # 200 expected each; 5 sigma is ~+-65


@pytest.mark.parametrize("block_rows, buffer_rows, batch", [(10, 30, 10), (222, 1000, 128), (1024, 1000, 64)])
def test_holds_a_bounded_number_of_rows_and_copies_each_row_about_once(block_rows, buffer_rows, batch):
    held, states = [], []
    with _watching_draws(after=lambda h: (held.append(h.held_rows()), states.append(h))):
        n = sum(len(b["index"]) for b in shuffled_batches(_blocks([block_rows] * 40), batch, buffer_rows, seed=0))
    assert n == 40 * block_rows
    # without compaction a buffer of 1,000 rows in 222-row blocks kept ~25 blocks (5,500 rows) alive;
    # every held block is at least a quarter live, plus the block just added
    assert max(held) <= 4 * (max(buffer_rows, batch) + batch) + block_rows
    copies = states[-1].rows_copied / n
    assert 1.0 <= copies <= 1.34  # once into its batch, plus at most 1/4 + 1/16 + ... for lingering rows


def test_bad_blocks_are_named():
    with pytest.raises(ValueError, match=r"column 'v': rows of shape \(2,\) after rows of \(3,\)"):
        list(shuffled_batches(iter([{"v": np.zeros((4, 3))}, {"v": np.zeros((4, 2))}]), 2, 0, seed=0))
    with pytest.raises(ValueError, match="columns"):
        list(shuffled_batches(iter([{"a": np.zeros(4)}, {"b": np.zeros(4)}]), 2, 100, seed=0))
    with pytest.raises(ValueError, match="batch_size"):
        list(shuffled_batches(_blocks([4]), 0, 10, seed=0))


def test_strings_keep_their_longest_length_and_to_torch():
    blocks = iter([{"s": np.array(["ab", "cd"]), "n": np.array([1, 2], np.int32)}, {"s": np.array(["longer"]), "n": np.array([3], np.int64)}])
    (batch,) = list(shuffled_batches(blocks, 3, 10, seed=0))
    assert sorted(batch["s"].tolist()) == ["ab", "cd", "longer"] and batch["n"].dtype == np.int64
    tensors = to_torch(batch, "cpu")
    assert isinstance(tensors["n"], torch.Tensor) and tensors["n"].dtype == torch.int64
    assert isinstance(tensors["s"], np.ndarray)


def test_in_background_yields_in_order_and_raises_the_threads_error():
    assert list(in_background(lambda: iter(range(50)), depth=2)) == list(range(50))
    assert list(in_background(lambda: iter(range(5)), depth=0)) == list(range(5))

    def failing():
        yield 1
        raise KeyError("bad row")

    it = in_background(failing, depth=1)
    assert next(it) == 1
    with pytest.raises(KeyError, match="bad row"):
        next(it)


def test_in_background_stops_its_thread_when_the_consumer_stops_early():
    produced = []

    def endless():
        for i in range(10**9):
            produced.append(i)
            yield i

    before = threading.active_count()
    it = in_background(endless, depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # what dropping the iterator does (a loop's max_steps_per_epoch break)
    time.sleep(0.3)
    n = len(produced)
    time.sleep(0.3)
    assert len(produced) == n and n <= 3 + 2 + 2  # the thread stopped a queue's depth ahead
    assert threading.active_count() == before


@pytest.mark.parametrize("budget_blocks", [0, 1, 3])
def test_a_store_budget_caps_the_blocks_kept_as_they_came(budget_blocks):
    """Blocks arrive as object-store views; beyond the budget their rows are copied out (sparsest
    first), so a small store is not pinned by the buffer. Same rows, same randomness otherwise."""
    block_bytes = 20 * (8 + 4 + 3 * 96 * 96)  # index int64 + w float32 + the view
    stored, states = [], []
    with _watching_draws(after=lambda h: (stored.append(h.store_bytes()), states.append(h))):
        batches = list(shuffled_batches(_blocks([20] * 30, big=True), 8, 60, seed=0, store_budget=budget_blocks * block_bytes))
    assert sorted(np.concatenate([b["index"] for b in batches]).tolist()) == list(range(600))
    for b in batches:
        np.testing.assert_array_equal(b["view"][:, 2, 9, 9], (b["index"] % 251).astype(np.uint8))
    assert max(stored) <= budget_blocks * block_bytes
    copies = states[-1].rows_copied / 600
    assert copies <= 2.34  # once out of the store, once into the batch (+1/3 for lingering rows at most)
    if budget_blocks == 0:
        assert copies >= 2.0
