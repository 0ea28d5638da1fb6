"""The Train worker's local shuffle: batches drawn at random from a buffer of preprocessed rows.

`data.shuffle_buffer` rows are held as the blocks Ray Data hands over (zero-copy views of the object
store), and each batch gathers its rows out of them: every row is copied once into its batch (1.3
times on average, counting the compaction below). Ray's own
`iter_torch_batches(local_shuffle_buffer_size=)` concatenates the buffered blocks into one table and
then takes each batch out of that, carrying unread rows into the next concatenation, so a row was
copied two or more times. Measured on 2 CPUs, 224 px MoCo-v2 view pairs, 1,000-row buffer, batch 128
(`benchmarks/shuffle_buffer.py`, three runs, session 16): the Train worker spent 140-155 us of CPU per
image with Ray's shuffle and 69-85 with this one (59-70 with no shuffle at all), and the pipeline ran
1.07-1.08x as fast.

Semantics are those of webdataset's shuffle buffer: a batch takes `batch_size` of the held rows
uniformly at random, without replacement; the rows of several blocks, hence of several shards and
sources, mix in a batch. Like webdataset (and unlike Ray's buffer, which waits for all of its rows),
the first batch of an epoch is drawn early and the buffer grows to its size as batches are drawn:
with Ray's rule an epoch shorter than the buffer was read whole before its first batch (FAME's 384
embedded videos under a 1,000-row buffer), so the step never overlapped the reading.

When the first batch is drawn (`start`): webdataset draws once a tenth of its buffer is held
("tenth"), but its buffer holds raw samples, which cost only their reading, and a DataLoader
worker's first 100 are one shard's. Here rows are decoded and augmented, and they come a read task's
whole block at a time, so with blocks of fewer rows than that tenth (FAME's 48-video shards, each one
block) the first batch waited for a second wave of read tasks: 0.36-0.47 s of a 0.65 s epoch where
webdataset's came at 0.16-0.21 s (benchmarks/media_ingest.py, session 17). "first_block" (the
default) draws once the tenth or the epoch's first block is held, whichever is fewer rows (at least a
batch): a first batch from one shard's rows, as webdataset's. With blocks of a tenth or more (every
image set of 64-375x500 px: 222-1,024 rows) the two rules are the same. With 48-row blocks of 224 px
view pairs the first batch came at 0.27 s instead of 0.37 and the epoch ran 1.06x as fast
(benchmarks/iterator_latency.py --shuffle-start, same cluster, alternated, session 18).

The draw is a function of `seed` and the order in which blocks arrive (fixed under
`data.deterministic`).
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator

import numpy as np

ROW_BYTES_COPIED_ONE_BY_ONE = 16 * 1024  # larger rows: one copy each, straight into the batch; smaller: gathered per block
COMPACT_BELOW = 0.25  # a held block with fewer of its rows still in the pool gives them up to a compact block
INITIAL_SHARE = 0.1  # of the buffer, held before the first batch (webdataset's shuffle: 100 of 1,000)
DEFAULT_START = "first_block"
START_RULES = (DEFAULT_START, "tenth")  # when the first batch is drawn: see the module docstring
STORE_SHARE_FOR_SHUFFLE = 0.25  # of a node's object store, split between its Train workers: blocks the buffer may pin


class _Held:
    """The rows in the buffer: the blocks they live in, and a pool of (block, row) pairs not yet drawn.

    Blocks as they arrive are views of Ray's object store, pinned there while held. A block stays
    alive while any of its rows is in the pool, and with uniform draws a few rows of a block linger
    long after the rest are gone: left alone, a 1,000-row buffer of 222-row blocks held ~25 blocks. So
    a block's rows are copied into a compact block of their own (in this process's memory) and the
    block is let go when (a) fewer than `COMPACT_BELOW` of its rows are left: at most 1/4 + 1/16 + ...
    = 1/3 extra copies a row; or (b) the store-backed blocks held exceed `store_budget` bytes, the
    sparsest first: without (b) a 256 MiB store, pinned by a 1,000-row buffer of 224 px view pairs
    (~550 MiB held), spilled 4 GiB to disk and an epoch took 51 s instead of 4.9 (benchmarks/ingest.py's
    memory phase, session 16). Under a tight budget each row is copied about twice, as Ray's own
    buffer does."""

    def __init__(self, store_budget: float | None = None):
        self.store_budget = store_budget  # bytes; None = no limit
        self.blocks: dict[int, dict[str, np.ndarray]] = {}
        self.size: dict[int, int] = {}  # rows of each held block
        self.left: dict[int, int] = {}  # of which still in the pool
        self.in_store: dict[int, int] = {}  # bytes of each held block that still lives in the object store
        self.pool_block = np.empty(0, np.int64)
        self.pool_row = np.empty(0, np.int64)
        self.row_shape: dict[str, tuple] = {}
        self.dtype: dict[str, np.dtype] = {}
        self.next_id = 0
        self.rows_copied = 0  # into batches and compact blocks (tests and benchmarks read it)

    def __len__(self) -> int:
        return len(self.pool_block)

    def held_rows(self) -> int:
        return sum(self.size.values())

    def store_bytes(self) -> int:
        return sum(self.in_store.values())

    def add(self, block: dict[str, np.ndarray]) -> int:
        """Holds a block's rows; returns how many."""
        block = {name: np.asarray(column) for name, column in block.items()}
        rows = {len(column) for column in block.values()}
        if len(rows) != 1:
            raise ValueError(f"a block's columns have different lengths: { {n: len(c) for n, c in block.items()} }")
        n = rows.pop()
        if n == 0:
            return 0
        if not self.row_shape:
            self.row_shape = {name: column.shape[1:] for name, column in block.items()}
            self.dtype = {name: column.dtype for name, column in block.items()}
        elif block.keys() != self.row_shape.keys():
            raise ValueError(f"a block has columns {sorted(block)} where the earlier ones had {sorted(self.row_shape)}")
        for name, column in block.items():
            if column.shape[1:] != self.row_shape[name]:
                raise ValueError(f"column {name!r}: rows of shape {column.shape[1:]} after rows of {self.row_shape[name]}; "
                                 f"a method's preprocessing must give every sample's {name!r} one shape")
            self.dtype[name] = np.result_type(self.dtype[name], column.dtype)  # e.g. a longer string
        b = self._keep(block, n)
        self.in_store[b] = sum(column.nbytes for column in block.values())
        self._compact()
        return n

    def _register(self, block: dict[str, np.ndarray], n: int) -> int:
        b = self.next_id
        self.next_id += 1
        self.blocks[b], self.size[b], self.left[b] = block, n, n
        return b

    def _keep(self, block: dict[str, np.ndarray], n: int) -> int:
        b = self._register(block, n)
        self.pool_block = np.concatenate([self.pool_block, np.full(n, b, np.int64)])
        self.pool_row = np.concatenate([self.pool_row, np.arange(n, dtype=np.int64)])
        return b

    def _gather(self, blocks: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The given (block, row) pairs, in order, copied into new arrays."""
        k = len(blocks)
        self.rows_copied += k
        out = {}
        for name, shape in self.row_shape.items():
            column = np.empty((k,) + shape, self.dtype[name])
            if column[:1].nbytes >= ROW_BYTES_COPIED_ONE_BY_ONE:
                for i, (b, r) in enumerate(zip(blocks.tolist(), rows.tolist())):
                    column[i] = self.blocks[b][name][r]
            else:
                for b in np.unique(blocks).tolist():
                    at = blocks == b
                    column[at] = self.blocks[b][name][rows[at]]
            out[name] = column
        return out

    def draw(self, k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """k rows drawn at random, in the drawn order, copied into a new batch; spent blocks are let go."""
        picked = rng.choice(len(self.pool_block), size=k, replace=False)
        blocks, rows = self.pool_block[picked], self.pool_row[picked]
        keep = np.ones(len(self.pool_block), bool)
        keep[picked] = False
        self.pool_block, self.pool_row = self.pool_block[keep], self.pool_row[keep]
        batch = self._gather(blocks, rows)
        for b, n in zip(*np.unique(blocks, return_counts=True)):
            self.left[int(b)] -= int(n)
            if self.left[int(b)] == 0:
                self._drop(int(b))
        self._compact()
        return batch

    def _drop(self, b: int) -> None:
        del self.blocks[b], self.size[b], self.left[b]
        self.in_store.pop(b, None)

    def _compact(self) -> None:
        chosen = {b for b, n in self.left.items() if n < COMPACT_BELOW * self.size[b]}
        if self.store_budget is not None:
            over = self.store_bytes() - self.store_budget
            for b in sorted(self.in_store, key=lambda b: self.left[b]):  # the sparsest first: fewest rows to copy
                if over <= 0:
                    break
                if b not in chosen:
                    chosen.add(b)
                    over -= self.in_store[b]
        if not chosen:
            return
        at = np.isin(self.pool_block, list(chosen))
        compact = self._gather(self.pool_block[at], self.pool_row[at])
        for b in chosen:
            self._drop(b)
        n = int(at.sum())
        if n:  # the rows keep their places in the pool, now pointing into the compact block
            self.pool_block[at] = self._register(compact, n)
            self.pool_row[at] = np.arange(n, dtype=np.int64)


def shuffled_batches(blocks: Iterable[dict[str, np.ndarray]], batch_size: int, buffer_rows: int, seed: int,
                     drop_last: bool = False, store_budget: float | None = None,
                     start: str = DEFAULT_START) -> Iterator[dict[str, np.ndarray]]:
    """Blocks (column name -> array, rows first) -> batches of `batch_size` rows drawn at random from a
    buffer of `buffer_rows` rows (every row exactly once; the last batch short unless `drop_last`).
    The first batch is drawn once `INITIAL_SHARE` of the buffer is held, or with `start="first_block"`
    the epoch's first block if that is fewer rows (at least a batch either way), and the buffer then
    grows by a row per row drawn until it is full. `store_budget`: bytes of the incoming blocks the
    buffer may keep as they came (object-store views); beyond it, rows are copied out (`_Held`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if start not in START_RULES:
        raise ValueError(f"start must be one of {START_RULES}, got {start!r}")
    rng = np.random.default_rng(seed)
    held = _Held(store_budget)
    first = max(batch_size, int(INITIAL_SHARE * buffer_rows))
    drawn, started = 0, False
    for block in blocks:
        rows = held.add(block)
        if start == "first_block" and rows and not started:  # the epoch's first non-empty block
            first, started = max(batch_size, min(first, rows)), True
        # the first draw once `first` rows are held; then the buffer grows by a row per row drawn
        while len(held) >= max(batch_size, min(buffer_rows, first + drawn)):
            yield held.draw(batch_size, rng)
            drawn += batch_size
    while len(held) >= batch_size:
        yield held.draw(batch_size, rng)
    if len(held) and not drop_last:
        yield held.draw(len(held), rng)


def node_store_budget(share: float = STORE_SHARE_FOR_SHUFFLE) -> float | None:
    """Bytes of object store one Train worker's buffer may pin: `share` of its node's store, split
    between the node's Train workers. None outside a Ray worker."""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()
        store = next(float(n["Resources"].get("object_store_memory", 0)) for n in ray.nodes() if n.get("NodeID") == node)
    except Exception:  # noqa: BLE001 - no Ray, or no such node: no limit
        return None
    try:
        import ray.train

        workers_here = max(1, int(ray.train.get_context().get_local_world_size()))
    except Exception:  # noqa: BLE001 - not in a Train worker
        workers_here = 1
    return share * store / workers_here if store > 0 else None


def to_torch(batch: dict[str, np.ndarray], device) -> dict:
    """numpy columns -> torch tensors on `device` (as `iter_torch_batches` gives them); columns torch has
    no dtype for (strings, objects) stay numpy arrays."""
    import torch

    out = {}
    for name, column in batch.items():
        if column.dtype.kind in "biufc":
            out[name] = torch.as_tensor(column).to(device)
        else:
            out[name] = column
    return out


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


def in_background(make_items: Callable[[], Iterable], depth: int) -> Iterator:
    """Runs `make_items()` in a thread, `depth` items ahead of the consumer, so that gathering a
    batch (numpy copies, which release the GIL) and moving it to the device overlap the step, as Ray's
    `iter_torch_batches` does in its own threads. The thread's exceptions are raised here; when the
    consumer stops early (closes or drops this generator), the thread stops too."""
    if depth <= 0:
        yield from make_items()
        return
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in make_items():
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(_Raised(exc))

    thread = threading.Thread(target=work, name="contrastlab-shuffled-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


def iter_shuffled_torch_batches(shard, batch_size: int, buffer_rows: int, seed: int, *, drop_last: bool, device,
                                prefetch_batches: int, start: str = DEFAULT_START) -> Iterator[dict]:
    """A Ray Data iterator (a Train worker's dataset shard) -> shuffled torch batches on `device`:
    whole blocks from Ray (`batch_size=None`, numpy views of the object store, `prefetch_batches`
    blocks ahead) through `shuffled_batches`, pinning at most `node_store_budget()` bytes of them.
    Ray's iterator yields a block only once `prefetch_batches` more are in, so 0 (allowed) takes each
    block as it is made; side by side it changed neither the first batch nor the rate at 224 px or with
    48-row blocks (benchmarks/iterator_latency.py, session 17), so `data.prefetch_batches` stays 1.

    On a GPU the batches are made in a background thread, `prefetch_batches` ahead (at least 1), so that
    gathering the next batch and copying it to the device overlap the step, which the loop waits for
    (it reads the step's losses). On a CPU they are made inline: the step has the CPU anyway, and
    measured on 2 CPUs (224 px view pairs, batch 128) the thread cost the Train worker 101 us of CPU
    per image against 59 inline, and the pipeline 10% of its rate (benchmarks/README.md, session 16)."""
    import torch

    store_budget = node_store_budget()

    def make_items():
        blocks = shard.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=prefetch_batches)
        for batch in shuffled_batches(blocks, batch_size, buffer_rows, seed, drop_last=drop_last, store_budget=store_budget,
                                      start=start):
            yield to_torch(batch, device)

    on_cpu = torch.device(device).type == "cpu"
    return in_background(make_items, 0 if on_cpu else max(1, prefetch_batches))
