"""Ray Data ingest: webdataset shards -> per-sample decode + the method's CPU preprocessing.

Reading uses a `FileBasedDatasource` over the tar stream (the same streaming read as
`ray.data.read_webdataset`), written here so that a truncated or corrupt tar is attributed to its
shard and last good key, and handled by the run's bad-sample policy instead of failing a read task
with a bare `tarfile` error. Each row carries the raw member bytes; decoding and augmentation run
in `map_batches` on CPU tasks, one sample at a time so a failure names its shard and key.

Augmentation randomness is a function of (run seed, epoch, sample key): reproducible whatever the
batching or task placement, fresh every epoch. The epoch comes from the run's `RunState` actor,
which the training loop advances; the same actor counts skipped samples for the end-of-epoch report.
"""
from __future__ import annotations

import gzip
import json
import logging
import tarfile
import zlib
from typing import Any, Callable, Iterator

import numpy as np

from ..config import DataConfig
from .augment import PHOTOMETRIC_SUFFIX, DeferredView, photometric_place
from .codecs import DecodeError, decode_jpeg, decode_json, decode_npy, decode_png, decode_text
from .executor_poll import set_executor_poll
from .tar_stream import TAR_READ_BUFFER, iter_tar_members

log = logging.getLogger(__name__)

SampleFn = Callable[[dict, np.random.Generator], dict]

UNSIZED_BLOCK_ROWS = 128  # rows per preprocessed block when a row's size could not be measured


class BadSampleError(RuntimeError):
    """A sample (or a whole shard) could not be read under the `raise` policy."""


def bad_sample_message(shard: str, key: str | None, reason: str) -> str:
    where = f"shard {shard}" + (f", key {key}" if key else "")
    return (
        f"bad sample in {where}: {reason}. Fix or remove it, or run with --set data.bad_samples=skip "
        f"to skip such samples (they are counted and reported each epoch)."
    )


# --------------------------------------------------------------------------- run state actor
class RunState:
    """A tiny actor per run: the current epoch (for augmentation seeds) and the skipped-sample log."""

    def __init__(self):
        self.epoch = 0
        self.selection: dict | None = None  # the method's DataSelection for this epoch (selection.py)
        self.skipped: list[tuple[int, str, str, str]] = []

    def set_epoch(self, epoch: int, selection: dict | None = None) -> None:
        self.epoch, self.selection = epoch, selection

    def get_epoch(self) -> int:
        return self.epoch

    def get_epoch_and_selection(self) -> tuple[int, dict | None]:
        return self.epoch, self.selection

    def report_skip(self, shard: str, key: str, reason: str) -> None:
        self.skipped.append((self.epoch, shard, key, reason))

    def skipped_in_epoch(self, epoch: int) -> list[tuple[str, str, str]]:
        return [(s, k, r) for e, s, k, r in self.skipped if e == epoch]


def get_or_create_run_state(name: str):
    import ray

    actor_cls = ray.remote(num_cpus=0, max_restarts=-1)(RunState)
    return actor_cls.options(name=name, get_if_exists=True, lifetime=None).remote()


_ACTOR_CACHE: dict[str, Any] = {}


def _run_state(name: str | None):
    if not name:
        return None
    if name not in _ACTOR_CACHE:
        import ray

        try:
            _ACTOR_CACHE[name] = ray.get_actor(name)
        except ValueError:
            _ACTOR_CACHE[name] = None
    return _ACTOR_CACHE[name]


def _ask_run_state(name: str | None, method: str, *args):
    """`ray.get(actor.<method>.remote(*args))` on the run's RunState; None when there is none.

    Handles are cached per process, and worker processes outlive a Tune trial: after a trial restart
    with the same run name, the cached handle is the dead actor of the previous attempt (a new one has
    the name now). So on RayActorError (ActorDiedError is one) drop the entry, look the name up once
    more and retry; if nothing has the name, behave as a run without a RunState."""
    import ray
    from ray.exceptions import RayActorError

    for attempt in (0, 1):
        actor = _run_state(name)
        if actor is None:
            return None
        try:
            return ray.get(getattr(actor, method).remote(*args))
        except RayActorError:
            _ACTOR_CACHE.pop(name, None)
            if attempt:
                raise
    return None


def _handle_bad(policy: str, run_state_name: str | None, shard: str, key: str | None, reason: str) -> None:
    if policy == "raise":
        raise BadSampleError(bad_sample_message(shard, key, reason))
    log.warning("skipping %s", bad_sample_message(shard, key, reason).split(". Fix")[0])
    # waited for (bad samples are rare): a fire-and-forget call to a stale cached handle (a restarted
    # trial's previous RunState) would lose the count without an error
    _ask_run_state(run_state_name, "report_skip", shard, key or "", reason)


# --------------------------------------------------------------------------- reading tars
def _split_member(name: str) -> tuple[str, str] | None:
    """'dir/00001.seg.png' -> ('dir/00001', 'seg.png'); None for names without an extension or hidden."""
    base = name.rsplit("/", 1)[-1]
    if "." not in base or base.startswith("."):
        return None
    stem, ext = base.split(".", 1)
    return name[: len(name) - len(base)] + stem, ext


def iter_tar_samples(stream, shard: str, policy: str, run_state_name: str | None = None) -> Iterator[dict]:
    """Group contiguous `key.ext` members into samples {"__key__", "__url__", ext: bytes}."""
    current: dict | None = None
    reading: str | None = None  # key of the member being read when the stream broke
    try:
        for name, data in iter_tar_members(stream):
            member = _split_member(name)
            if member is None:
                continue
            reading = key = member[0]
            ext = member[1]
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key, "__url__": shard}
            current[ext.lower()] = data
    # Only corruption: tar_stream raises tarfile.ReadError for cut or bad data, and tarfile wraps the
    # decompressors' errors in it too. Any other OSError (a pyarrow S3/GCS network failure, a disk I/O
    # error) says nothing about the shard: it propagates, so Ray Data's read retry
    # (DataContext.retried_io_errors) sees it instead of the rest of the shard being skipped as bad.
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        broken = _split_member(getattr(exc, "member", None) or "")  # the member whose data was cut short, when known
        if broken is not None:
            reading = broken[0]
        if current is not None and reading is not None and reading != current["__key__"]:
            yield current  # complete: the break happened in the next sample
            current = None
        bad = reading or (current["__key__"] if current else None)
        # The sample being read when the stream broke may be incomplete: never pass it on.
        _handle_bad(policy, run_state_name, shard, bad, f"truncated or corrupt tar ({type(exc).__name__}: {exc}); "
                    f"{'the rest of this shard is unreadable' if bad else 'no sample could be read'}")
        return
    if current is not None:
        yield current


def epoch_rows(sample: dict, shard: str, seed: int, epoch: int, mix=None, selection=None) -> list[dict]:
    """A raw sample -> its copies in this epoch's training stream: the mix plan's draw for its source
    (mixing.py) times the method's selection (selection.py; only the json is decoded for it). Copies
    carry `__repeat__` (their augmentation differs) and, with a mix, `__source__`."""
    key = sample["__key__"]
    source = mix.source_of(shard) if mix is not None else None
    tag = {} if source is None else {"__source__": source}
    n = mix.copies(source, key, seed, epoch) if mix is not None else 1
    if selection is not None and n:
        try:
            meta = decode_json(sample["json"]) if sample.get("json") is not None else None
        except DecodeError:
            # One copy, tagged like the others: untagged, it left None in the batch's __repeat__ column
            # and failed with a TypeError from int(None) instead of the JSON error preprocessing reports.
            return [{**sample, **tag, "__repeat__": 0}]
        n *= selection.copies(meta if isinstance(meta, dict) else None, sample_index(key, meta if isinstance(meta, dict) else None, shard),
                              key, seed, epoch)
    return [{**sample, **tag, "__repeat__": r} for r in range(n)]


def file_order_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's shard order (shuffle_files): a function of (run seed, epoch) only."""
    return int(np.random.SeedSequence([seed % (1 << 64), epoch]).generate_state(1)[0])


def rows_to_batch(rows: list[dict]) -> dict[str, np.ndarray]:
    """Raw samples -> the column batch `PreprocessBatches` takes (a member absent from a sample is None)."""
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    batch = {}
    for n in names:
        column = np.empty(len(rows), dtype=object)  # element-wise: np.array would split bytes/str
        column[:] = [r.get(n) for r in rows]
        batch[n] = column
    return batch


def make_datasource(paths: list[str], preprocess: "PreprocessBatches", policy: str, run_state_name: str | None, filesystem=None,
                    shuffle_files: bool = False, seed: int = 0, rows_per_block: int = UNSIZED_BLOCK_ROWS, mix=None,
                    executor_poll_s: float = DataConfig.executor_poll_s):
    """One read task per shard: stream its samples, preprocess every `rows_per_block` of them, and
    yield each preprocessed block as soon as it is ready. With a `MixPlan` (several weighted training
    sources), each sample is emitted as many times as the plan draws for this epoch (0, 1, 2, ...).
    `executor_poll_s` (data.executor_poll_s) is applied in every process that unpickles the
    datasource, the ones running Ray Data's executor for it among them (executor_poll.py)."""
    from ray.data.block import BlockAccessor
    from ray.data.datasource import FileBasedDatasource

    class ShardDatasource(FileBasedDatasource):
        _FILE_EXTENSIONS = ["tar"]

        def __init__(self):
            shuffle = None
            if shuffle_files:
                from ray.data import FileShuffleConfig

                shuffle = FileShuffleConfig(seed=seed)
            super().__init__(paths, filesystem=filesystem, shuffle=shuffle)
            self.executor_poll_s = executor_poll_s
            set_executor_poll(executor_poll_s)  # the driver's own executors (ds.iter_* there)

        def __setstate__(self, state):
            self.__dict__.update(state)
            set_executor_poll(self.executor_poll_s)  # a SplitCoordinator actor, a read task, ...

        def get_read_tasks(self, *args, **kwargs):
            # Ray reseeds FileShuffleConfig with DataContext._execution_idx, which counts executions
            # of this Dataset object: a resumed run (a new Dataset) restarts it at 0, so a resumed
            # epoch e read its files in epoch 0's order and the mid-epoch skip dropped the wrong
            # batches. Key the order by (run seed, the run's epoch clock) instead.
            if shuffle_files:
                from ray.data import FileShuffleConfig

                self._shuffle = FileShuffleConfig(seed=file_order_seed(seed, preprocess.current_state()[0]),
                                                  reseed_after_execution=False)
            return super().get_read_tasks(*args, **kwargs)

        def _read_stream(self, f, path: str):
            rows = []
            epoch, selection = preprocess.current_state()
            for sample in iter_tar_samples(f, path, policy, run_state_name):
                if mix is None and selection is None:
                    rows.append(sample)
                else:
                    rows.extend(epoch_rows(sample, path, seed, epoch, mix, selection))
                if len(rows) >= rows_per_block:
                    out = preprocess(rows_to_batch(rows), epoch)
                    rows = []
                    if out:
                        yield BlockAccessor.batch_to_block(out)
            out = preprocess(rows_to_batch(rows), epoch) if rows else {}
            if out:
                yield BlockAccessor.batch_to_block(out)

    return ShardDatasource()


# --------------------------------------------------------------------------- decoding
DECODERS: dict[str, Callable[[bytes], Any]] = {
    "jpg": decode_jpeg,
    "jpeg": decode_jpeg,
    "png": decode_png,
    "txt": decode_text,
    "json": decode_json,
    "npy": decode_npy,
}


def decode_member(ext: str, data: bytes):
    """Decode a member by extension; `*.json` (e.g. `table.json`) as JSON; others stay bytes (mp4, wav)."""
    if ext in DECODERS:
        return DECODERS[ext](data)
    if ext.endswith(".json"):
        return decode_json(data)
    return data


def sample_index(key: str, meta: dict | None, shard: str) -> int:
    """The stable integer index: `index` from the json, else a numeric key (img2dataset keys are
    zero-padded numbers), else a 63-bit hash of shard basename + key (stable across runs).
    A numeric key counts only without a folder part: `cam1/0001` and `cam2/0001` are different
    samples, and their shared leaf would give both index 1 (a collision in feature extraction and
    memory banks), so keys in sub-folders are hashed."""
    if meta and isinstance(meta.get("index"), int):
        return int(meta["index"])
    if "/" not in key and key.isdigit():
        return int(key)
    import hashlib

    digest = hashlib.blake2b(f"{shard.rsplit('/', 1)[-1]}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def sample_rng(seed: int, epoch: int, key: str, repeat: int = 0) -> np.random.Generator:
    """A sample's augmentation RNG; `repeat` > 0 for the extra copies of an upsampled source."""
    entropy = [seed, epoch, zlib.crc32(key.encode())] + ([repeat] if repeat else [])
    return np.random.default_rng(entropy)


def preprocess_sample(members: dict, key: str, shard: str, sample_fn: SampleFn, required: tuple[str, ...], seed: int,
                      epoch: int, repeat: int = 0, source: int | None = None) -> dict:
    """One raw sample (member name -> bytes; None/NaN = absent) -> the method's output row plus `index`
    (and `source` when several training sources are mixed): decode the members by extension, check the
    required ones, then `sample_fn` with the sample's RNG.
    Raises DecodeError (or the fn's KeyError/ValueError/TypeError) for a bad sample."""
    sample = {"__key__": key}
    for name, value in members.items():
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        sample[name] = decode_member(name, value)
    missing = [m for m in required if m not in sample]
    if missing:
        raise DecodeError(f"missing member(s) {missing} that this method needs (present: {sorted(c for c in sample if c != '__key__')})")
    sample["index"] = sample_index(key, sample.get("json"), shard)
    out = sample_fn(sample, sample_rng(seed, epoch, key, repeat))
    for name in [k for k, v in out.items() if isinstance(v, DeferredView)]:  # data.photometric=device
        view = out[name]
        out[name], out[name + PHOTOMETRIC_SUFFIX] = view.pixels, view.params
    out["index"] = np.int64(sample["index"])
    if source is not None:
        out["source"] = np.int64(source)
    return out


class PreprocessBatches:
    """The `map_batches` function: decode each sample, run the method's per-sample function, stack.

    `sample_fn(sample, rng) -> dict[str, np.ndarray | number]` sees decoded members by extension
    (`sample["jpg"]` uint8 HxWx3, `sample["txt"]` str, `sample["json"]` dict, ...) plus `index` and
    `__key__`. It raises `DecodeError` (or KeyError/ValueError) for a bad sample.
    `photometric` ("reader" | "device", `data.photometric`): where views that support it make their
    colour jitter, greyscale and blur (augment.moco_v2_view, device_views.py).
    """

    def __init__(self, sample_fn: SampleFn, required: tuple[str, ...], policy: str, run_state_name: str | None, seed: int, split: str,
                 epoch: int | None = None, photometric: str = "reader"):
        self.sample_fn, self.required, self.policy = sample_fn, required, policy
        self.photometric = photometric
        self.run_state_name, self.seed, self.split = run_state_name, seed, split
        self.epoch = epoch  # fixed epoch for in-process use; None = ask the run's epoch clock

    def current_state(self):
        """(epoch, DataSelection or None): fixed in-process, else (training split of a Ray run) the
        run's epoch clock and the method's selection for the epoch."""
        from .selection import DataSelection

        epoch, selection = self.epoch or 0, None
        if self.split == "train" and self.epoch is None:
            state = _ask_run_state(self.run_state_name, "get_epoch_and_selection")
            if state is not None:
                epoch, chosen = state
                selection = DataSelection.from_dict(chosen)
        return epoch, selection

    def __call__(self, batch: dict[str, np.ndarray], epoch: int | None = None) -> dict[str, np.ndarray]:
        """`epoch`: the caller's epoch (a read task asks the run's clock once per shard), else asked here."""
        if epoch is None:
            epoch = self.current_state()[0]
        keys, urls = batch["__key__"], batch["__url__"]
        sources, repeats = batch.get("__source__"), batch.get("__repeat__")  # set when sources are mixed
        columns = [c for c in batch if not c.startswith("__")]
        outputs: list[dict] = []
        with photometric_place(self.photometric):
            for row in range(len(keys)):
                key, shard = str(keys[row]), str(urls[row])
                try:
                    members = {col: batch[col][row] for col in columns}
                    outputs.append(preprocess_sample(members, key, shard, self.sample_fn, self.required, self.seed, epoch,
                                                     repeat=int(repeats[row]) if repeats is not None else 0,
                                                     source=int(sources[row]) if sources is not None else None))
                except BadSampleError:
                    raise
                except (DecodeError, KeyError, ValueError, TypeError) as exc:
                    _handle_bad(self.policy, self.run_state_name, shard, key, f"{type(exc).__name__}: {exc}")
        if not outputs:
            return {}
        return {name: np.stack([o[name] for o in outputs]) for name in outputs[0]}


def build_dataset(
    paths: list[str],
    sample_fn: SampleFn,
    *,
    required: tuple[str, ...] = (),
    split: str = "train",
    policy: str = "raise",
    run_state_name: str | None = None,
    filesystem=None,
    seed: int = 0,
    shuffle_files: bool = False,
    cpus: float = 0.5,
    batch_size: int = DataConfig.preprocess_batch_size,
    block_mb: float = DataConfig.preprocess_block_mb,
    mix=None,
    task_output_buffer_mb: float = DataConfig.task_output_buffer_mb,
    photometric: str = DataConfig.photometric,
    executor_poll_s: float = DataConfig.executor_poll_s,
):
    """shards -> Ray Dataset of preprocessed numpy rows (lazy, streaming).

    One Ray Data operator: a task per shard reads it and preprocesses its samples a block at a time
    as they stream in, yielding each block as it is made. Measured on 2 cores (benchmarks/ingest.py,
    docs/design-notes.md): a separate `map_batches` over the read (the first design) sent every raw
    block through the object store to a second task and cannot be fused with the read while it sets
    a batch size; fused with batch_size=None, Ray buffers a whole shard into one block, so the first
    batch of an epoch waited for a whole shard. Here a task preprocesses `block_mb` MiB of rows at a
    time (at most `batch_size` rows; see `block_rows`) and Ray's block size is set per dataset to the
    measured size of that many rows, so each block leaves its task as soon as it is made.
    Preprocessing runs as many tasks at a time as there are shards (webdataset's DataLoader has the
    same limit): write several shards per split (converters write up to 1,000 samples per shard,
    embedded datasets cut small splits into ~8 shards). `mix` (a `mixing.MixPlan`, training only)
    samples several weighted sources in one operator (see mixing.py).
    """
    import ray.data

    fn = PreprocessBatches(sample_fn, required, policy, run_state_name, seed, split, photometric=photometric)
    row_bytes = estimate_row_bytes(paths, sample_fn, required, seed, split, filesystem, photometric=photometric)
    budget_mb = read_task_store_budget_mb(_ray_nodes(), cpus, len(paths))
    if budget_mb is not None and block_mb > 0:
        block_mb, task_output_buffer_mb = fit_blocks_to_store(block_mb, task_output_buffer_mb, budget_mb)
    rows = block_rows(row_bytes, block_mb, batch_size)
    ds = ray.data.read_datasource(
        make_datasource(paths, fn, policy, run_state_name, filesystem, shuffle_files and split == "train", seed, rows_per_block=rows,
                        mix=mix if split == "train" else None, executor_poll_s=executor_poll_s),
        num_cpus=cpus, override_num_blocks=max(1, len(paths)),
    )
    # Ray Data reserves a share of the cluster's CPUs per operator so that one stage of a multi-stage
    # pipeline cannot starve the next. Here each dataset is a single operator, and the reservation
    # only capped it: measured on 2-3 CPUs, read tasks ran one at a time (benchmarks/README.md).
    ds.context.op_resource_reservation_enabled = False
    if row_bytes:
        # Ray merges a task's outputs below this size and slices those above 1.5x it: just under one
        # preprocessed block, so each block goes out alone the moment it is made.
        block_bytes = rows * row_bytes
        ds.context.target_max_block_size = max(1 << 16, int(0.9 * block_bytes))
        set_task_output_buffer(ds.context, task_output_buffer_mb, block_bytes)
    return ds


def block_rows(row_bytes: float | None, block_mb: float, max_rows: int) -> int:
    """Rows a read task preprocesses into one block: `block_mb` MiB of output, at most `max_rows`.

    Ray pays a fixed cost per block (its object, the generator's report to the consumer, the
    executor's bookkeeping, the Train worker's fetch): about 10 ms of CPU, measured on 2 cores. With
    one 128-row block per training batch that was 13-20% of all the CPU at 64 px, where a row took
    0.6 ms to make. Measured on 2 cores, two MoCo-v2 views per image (benchmarks/README.md), with
    the PIL views: 64 px, 128-row blocks 2,350-2,800 img/s, 682 rows 2,900-3,200, 1,024 rows
    3,200-3,300. With the OpenCV views (rows 4-8x cheaper, so the per-block cost weighs more):
    64 px 682 rows 8,144, 1,024 rows 8,306; 224 px 55 rows (16 MiB) 1,508, 110 rows 1,695, 220 rows
    (63 MiB) 2,047-2,094, 330 rows 2,098, 440 rows (126 MiB) 1,937. Hence 64 MiB, at most 1,024 rows.
    The costs: an epoch's first batch waits for one block (0.34 s at 224 px, 220 rows, on 2 cores),
    and a read task holds up to ~3 blocks (one being made, two buffered): `build_dataset` shrinks
    blocks where the object store is too small for that (`fit_blocks_to_store`)."""
    if not row_bytes or block_mb <= 0:
        return max(1, min(max_rows, UNSIZED_BLOCK_ROWS))
    return max(1, min(max_rows, int(block_mb * 2**20 // row_bytes)))


STORE_SHARE_FOR_READ_TASKS = 0.5  # of a node's object store; the rest for the consumer's blocks and other objects
BLOCKS_HELD_PER_TASK = 3  # one being made and, at least, the two Ray buffers unread


def read_task_store_budget_mb(nodes: list[tuple[float, float]], task_cpus: float, n_shards: int) -> float | None:
    """MiB of object store each read task may fill, on the tightest node: `STORE_SHARE_FOR_READ_TASKS`
    of its store split between the read tasks it can run at once (its CPUs / `task_cpus`, at most one
    per shard). `nodes`: (CPUs, object store bytes) of each alive node; None when there is none."""
    budgets = []
    for node_cpus, store_bytes in nodes:
        if node_cpus <= 0 or store_bytes <= 0:
            continue
        tasks = max(1.0, min(node_cpus / max(task_cpus, 1e-3), max(1, n_shards)))
        budgets.append(STORE_SHARE_FOR_READ_TASKS * store_bytes / 2**20 / tasks)
    return min(budgets) if budgets else None


def fit_blocks_to_store(block_mb: float, buffer_mb: float, budget_mb: float) -> tuple[float, float]:
    """(block MiB, task output buffer MiB) within a read task's store budget: a task holds the block it
    is making plus its buffered ones, so a block gets at most a third of the budget and the buffer
    the rest (still >= 2 blocks). Without this, 64 MiB blocks spilled a 256 MiB store to disk at
    224 px (0.7-1.0 GiB per benchmark round, session 14); on Ray's default store (30% of RAM) a
    2-core machine's budget is ~900 MiB per task and nothing changes."""
    fitted_block = min(block_mb, budget_mb / BLOCKS_HELD_PER_TASK)
    fitted_buffer = min(buffer_mb, budget_mb - fitted_block)
    if fitted_block < block_mb:
        log.info("object store: %.0f MiB per read task, so preprocessed blocks of %.1f MiB (data.preprocess_block_mb %.0f) "
                 "and %.1f MiB buffered per task", budget_mb, fitted_block, block_mb, fitted_buffer)
    return fitted_block, fitted_buffer


def _ray_nodes() -> list[tuple[float, float]]:
    """(CPUs, object store bytes) of each alive node of the connected Ray cluster ([] if none)."""
    import ray

    if not ray.is_initialized():
        return []
    return [(float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("object_store_memory", 0)))
            for n in ray.nodes() if n.get("Alive")]


MAX_BUFFERED_BLOCKS = 64  # tiny blocks: the gain had levelled off by 16-32 blocks; no need for thousands of objects


def set_task_output_buffer(context, buffer_mb: float, block_bytes: float) -> int:
    """Let each read task run ahead by `buffer_mb` of finished blocks (at least Ray's default, 2).

    Ray pauses a task's output generator once 2 of its blocks wait unread by the executor, and the
    executor reads them only as its consumer drains its output queue. With cheap per-sample work the
    tasks then sat idle about half the time: measured on 2 CPUs, 64 px images, 128-row (3 MiB) blocks,
    data tasks busy 45% and 2,200 img/s with 2 blocks, 3,000 with 4, 3,400 with 8, 3,500-3,900 with
    16-32 (benchmarks/README.md). Sized in bytes, so big blocks (224 px) do not fill the object store, and
    capped at MAX_BUFFERED_BLOCKS.
    The field is private in Ray 2.60 (`DataContext._max_num_blocks_in_streaming_gen_buffer`); on a Ray
    without it this does nothing. Returns the number of blocks set (0 if not set)."""
    name = "_max_num_blocks_in_streaming_gen_buffer"
    if not hasattr(context, name) or block_bytes <= 0:
        return 0
    blocks = min(MAX_BUFFERED_BLOCKS, max(2, int(buffer_mb * 2**20 // block_bytes)))
    setattr(context, name, blocks)
    return blocks


def estimate_row_bytes(paths: list[str], sample_fn: SampleFn, required: tuple[str, ...], seed: int, split: str,
                       filesystem=None, n: int = 4, photometric: str = DataConfig.photometric) -> float | None:
    """Bytes of one preprocessed row, from the first `n` samples of the first shard (None if unreadable)."""
    if not paths:
        return None
    try:
        stream = filesystem.open_input_stream(paths[0], buffer_size=TAR_READ_BUFFER) if filesystem is not None else open(paths[0], "rb")
        with stream:
            rows = []
            for sample in iter_tar_samples(stream, paths[0], "raise"):
                rows.append(sample)
                if len(rows) >= n:
                    break
        out = PreprocessBatches(sample_fn, required, "raise", None, seed, split, epoch=0,
                                photometric=photometric)(rows_to_batch(rows)) if rows else {}
        if not out:
            return None
        count = len(next(iter(out.values())))
        return sum(np.asarray(v).nbytes for v in out.values()) / max(1, count)
    except Exception as exc:  # noqa: BLE001 - only a block-size hint; Ray's default applies without it
        log.debug("could not estimate preprocessed row size from %s: %s", paths[0], exc)
        return None


def to_json_safe(obj):
    return json.loads(json.dumps(obj, default=str))
