"""Ray Data ingest through a real local Ray cluster: every schema, img2dataset shards, bad samples."""
import numpy as np
import pytest

from contrastlab.platform.data.codecs import encode_jpeg
from contrastlab.platform.data.reader import build_dataset, get_or_create_run_state
from contrastlab.platform.data.shards import write_shards
from test_shards import schema_samples


def _describe(sample, rng):
    """A generic per-sample fn: which members arrived decoded, and a random draw (seeded per key)."""
    members = sorted(k for k in sample if k not in ("__key__", "index"))
    return {"n_members": np.int64(len(members)), "draw": np.float64(rng.random())}


@pytest.mark.parametrize("schema", list(schema_samples()))
def test_schema_through_ray_data(ray_cluster, tmp_path, schema):
    make = schema_samples()[schema]
    paths = write_shards(((f"{i:05d}", make(i)) for i in range(6)), tmp_path, maxcount=4)
    rows = build_dataset(paths, _describe, cpus=0.25).take_all()
    assert sorted(int(r["index"]) for r in rows) == list(range(6))
    assert {int(r["n_members"]) for r in rows} == {len(make(0))}


def test_bad_samples_raise_names_shard_and_key(ray_cluster, tmp_path):
    good = {"jpg": encode_jpeg(np.zeros((8, 8, 3), np.uint8)), "json": {"index": 0}}
    paths = write_shards([("00000", good), ("00001", {"jpg": b"garbage", "json": {"index": 1}})], tmp_path)
    fn = lambda s, rng: {"h": np.int64(s["jpg"].shape[0])}  # noqa: E731
    with pytest.raises(Exception) as err:
        build_dataset(paths, fn, required=("jpg",), cpus=0.25).take_all()
    assert "shard-00000.tar, key 00001" in str(err.value) and "not a decodable JPEG" in str(err.value)


def test_bad_samples_skip_are_counted(ray_cluster, tmp_path):
    good = {"jpg": encode_jpeg(np.zeros((8, 8, 3), np.uint8)), "json": {"index": 0}}
    paths = write_shards([("00000", good), ("00001", {"jpg": b"garbage", "json": {"index": 1}})], tmp_path)
    data = open(paths[0], "rb").read()
    trunc = tmp_path / "trunc.tar"
    cut = data.find(b"00001.jpg") + 512 + 3  # 3 bytes into the second sample's JPEG member
    trunc.write_bytes(data[:cut])
    state = get_or_create_run_state("test-skip-state")
    fn = lambda s, rng: {"h": np.int64(s["jpg"].shape[0])}  # noqa: E731
    rows = build_dataset(paths + [str(trunc)], fn, required=("jpg",), policy="skip", run_state_name="test-skip-state", cpus=0.25).take_all()
    assert len(rows) == 2  # the good sample from each shard
    skipped = ray_cluster.get(state.skipped_in_epoch.remote(0))
    reasons = " ".join(r for _, _, r in skipped)
    assert len(skipped) == 2 and "not a decodable JPEG" in reasons and "truncated" in reasons


def test_one_operator_and_batch_sized_blocks(ray_cluster, tmp_path):
    """Read and preprocess run in one task per shard, and every preprocessed batch leaves its task
    as its own block (not one block per shard): the first batch of an epoch waits for one batch."""
    from contrastlab.platform.data.reader import estimate_row_bytes

    img = encode_jpeg(np.zeros((16, 16, 3), np.uint8))
    paths = write_shards(((f"{i:05d}", {"jpg": img, "json": {"index": i}}) for i in range(100)), tmp_path, maxcount=50)
    fn = lambda s, rng: {"pixels": np.ascontiguousarray(s["jpg"].transpose(2, 0, 1))}  # noqa: E731
    assert estimate_row_bytes(paths, fn, ("jpg",), 0, "train") == 3 * 16 * 16 + 8  # pixels + the int64 index
    ds = build_dataset(paths, fn, required=("jpg",), batch_size=16, cpus=0.25)
    assert ds.context.target_max_block_size == max(1 << 16, int(0.9 * 16 * (3 * 16 * 16 + 8)))
    assert ds.context._max_num_blocks_in_streaming_gen_buffer == 64  # 64 MiB of 12 KiB blocks, capped
    ds = build_dataset(paths, fn, required=("jpg",), batch_size=16, cpus=0.25, task_output_buffer_mb=0.1)
    assert ds.context._max_num_blocks_in_streaming_gen_buffer == 8  # 0.1 MiB // 12,416 bytes
    ds = build_dataset(paths, fn, required=("jpg",), batch_size=256, cpus=0.25)  # 256 rows = 198 KiB blocks
    mat = ds.materialize()
    assert sorted(int(r["index"]) for r in mat.take_all()) == list(range(100))
    assert mat.num_blocks() == 2  # a 50-row shard is smaller than one batch: one block per shard
    ops = [line for line in mat.stats().splitlines() if line.startswith("Operator")]
    assert len(ops) == 1 and "ReadShard" in ops[0], ops


def test_large_rows_give_one_block_per_batch(ray_cluster, tmp_path):
    img = encode_jpeg(np.zeros((64, 64, 3), np.uint8))
    paths = write_shards(((f"{i:05d}", {"jpg": img, "json": {"index": i}}) for i in range(100)), tmp_path, maxcount=50)
    fn = lambda s, rng: {"pixels": np.zeros((3, 96, 96), np.float32)}  # noqa: E731  110 KiB per row
    mat = build_dataset(paths, fn, required=("jpg",), batch_size=10, cpus=0.25).materialize()
    assert mat.num_blocks() == 10  # 2 shards x 5 batches of 10 rows, each its own block
    assert mat.count() == 100


def test_blocks_are_sized_in_bytes_up_to_a_row_cap(ray_cluster, tmp_path):
    """A block holds `block_mb` MiB of preprocessed rows, at most `batch_size` rows: Ray's fixed cost
    per block made 128-row blocks of 64 px images 13-20% slower than 16 MiB ones, and 16 MiB blocks
    of 224 px images 25% slower than 64 MiB ones."""
    img = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    paths = write_shards(((f"{i:05d}", {"jpg": img, "json": {"index": i}}) for i in range(100)), tmp_path, maxcount=50)
    fn = lambda s, rng: {"pixels": np.zeros((3, 96, 96), np.float32)}  # noqa: E731  110,600 bytes a row with its index
    mat = build_dataset(paths, fn, required=("jpg",), batch_size=1024, block_mb=20 * 110_600 / 2**20, cpus=0.25).materialize()
    assert mat.num_blocks() == 6  # 50-row shards cut by bytes: 20 + 20 + 10 rows each
    assert sorted(int(r["index"]) for r in mat.take_all()) == list(range(100))
    mat = build_dataset(paths, fn, required=("jpg",), batch_size=25, cpus=0.25).materialize()
    assert mat.num_blocks() == 4  # 64 MiB would be 606 rows: the row cap cuts each shard in two


def test_block_rows():
    from contrastlab.platform.data.reader import UNSIZED_BLOCK_ROWS, block_rows

    two_views_64px = 2 * 3 * 64 * 64 + 8
    assert block_rows(two_views_64px, 16, 1024) == 682  # 16 MiB // 24,584 bytes
    assert block_rows(2 * 3 * 224 * 224 + 8, 16, 1024) == 55
    assert block_rows(2 * 3 * 224 * 224 + 8, 64, 1024) == 222  # the default: 64 MiB
    assert block_rows(two_views_64px, 64, 1024) == 1024  # ... capped at the row limit
    assert block_rows(100, 16, 1024) == 1024  # tiny rows: the row cap
    assert block_rows(64 * 2**20, 16, 1024) == 1  # a row bigger than a block: one row per block
    assert block_rows(None, 16, 1024) == block_rows(two_views_64px, 0, 1024) == UNSIZED_BLOCK_ROWS
    assert block_rows(None, 16, 32) == 32


def test_task_output_buffer_is_sized_in_bytes():
    """How many finished blocks a read task may hold for its consumer: the byte budget over the block
    size, never below Ray's own default of 2 (a 0 budget gives Ray's behaviour) nor above the cap."""
    from types import SimpleNamespace

    from contrastlab.platform.data.reader import MAX_BUFFERED_BLOCKS, set_task_output_buffer

    ctx = SimpleNamespace(_max_num_blocks_in_streaming_gen_buffer=2)
    assert set_task_output_buffer(ctx, 64, 3 * 2**20) == 21 == ctx._max_num_blocks_in_streaming_gen_buffer
    assert set_task_output_buffer(ctx, 64, 38 * 2**20) == 2  # one 224 px batch of 128 rows is 38 MiB
    assert set_task_output_buffer(ctx, 0, 3 * 2**20) == 2
    assert set_task_output_buffer(ctx, 64, 1000) == MAX_BUFFERED_BLOCKS
    assert set_task_output_buffer(SimpleNamespace(), 64, 1000) == 0  # a Ray without the field: left alone


def test_datasets_carry_a_context_without_progress_bars(ray_cluster, tmp_path):
    """A sweep builds its datasets inside the trial's actor, whose DataContext starts with Ray's tqdm
    bars on; the Train workers then printed a bar line per second into the driver's log. Whatever the
    building process's setting, the datasets must come out quiet."""
    import ray.data

    from contrastlab.platform.config import build_experiment
    from contrastlab.platform.runner import DataPlan, build_datasets

    img = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    paths = write_shards(((f"{i:05d}", {"jpg": img, "txt": "a red circle", "json": {"index": i}}) for i in range(4)), tmp_path)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = True  # Ray's default in a fresh process
    try:
        datasets = build_datasets(build_experiment("clip"), DataPlan(train=paths, eval=paths), None)
    finally:
        context.enable_progress_bars = False
    assert sorted(datasets) == ["eval", "train"]
    assert not any(ds.context.enable_progress_bars for ds in datasets.values())


def test_blocks_fit_the_object_store():
    """A read task holds ~3 blocks; on a small store they shrink instead of spilling to disk."""
    from contrastlab.platform.data.reader import fit_blocks_to_store, read_task_store_budget_mb

    mib = 2**20
    # 2-core box, Ray's default 7.3 GB store, 0.5 CPU per task, 8 shards: 4 tasks, ~870 MiB each
    big = read_task_store_budget_mb([(2, 7300 * mib)], 0.5, 8)
    assert big == pytest.approx(912.5) and fit_blocks_to_store(64, 64, big) == (64, 64)  # unchanged
    # the benchmark's memory phase: 3 CPUs, 1 CPU per task, 256 MiB store -> 42.7 MiB per task
    small = read_task_store_budget_mb([(3, 256 * mib)], 1.0, 4)
    block, buffer = fit_blocks_to_store(64, 64, small)
    assert block == pytest.approx(small / 3) and buffer == pytest.approx(2 * small / 3)
    assert block + buffer <= small and buffer >= 2 * block - 1e-9
    # the tightest node rules; one task per shard at most; nodes without CPUs or store are skipped
    assert read_task_store_budget_mb([(16, 64000 * mib), (2, 400 * mib), (0, 9e12)], 0.5, 100) == pytest.approx(50)
    assert read_task_store_budget_mb([(16, 800 * mib)], 0.5, 2) == pytest.approx(200)
    assert read_task_store_budget_mb([], 0.5, 4) is None


def test_build_dataset_reads_the_cluster_store(ray_cluster):
    from contrastlab.platform.data.reader import _ray_nodes

    nodes = _ray_nodes()
    assert nodes and all(cpus >= 1 and store > 0 for cpus, store in nodes)


def test_executor_poll_reaches_every_process_the_dataset_goes_to(ray_cluster, tmp_path):
    """data.executor_poll_s is set in the driver that builds the dataset and in any process the
    dataset is sent to, as a Train worker's SplitCoordinator receives it (executor_poll.py)."""
    from ray.data._internal.execution import streaming_executor_state as state

    paths = write_shards(((f"{i:05d}", {"json": {"index": i}}) for i in range(4)), tmp_path)
    before = state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S
    try:
        ds = build_dataset(paths, _describe, cpus=0.25, executor_poll_s=0.0234)
        assert state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == 0.0234

        @ray_cluster.remote(num_cpus=0.25)
        def poll_where_received(dataset):
            from ray.data._internal.execution import streaming_executor_state as there

            return there.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S, len(dataset.take_all())

        assert ray_cluster.get(poll_where_received.remote(ds)) == (0.0234, 4)
    finally:
        state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = before


def test_deferred_photometric_columns_travel_through_ray_data(ray_cluster, tmp_path):
    """data.photometric=device: read tasks emit the cropped view plus its drawn parameters; finished
    on the consumer, the rows match the views the read tasks make whole (same draws, same keys)."""
    import torch

    from contrastlab.platform.data.augment import moco_v2_view, to_chw
    from contrastlab.platform.data.device_views import finish_views

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(24)]
    paths = write_shards(((f"{i:05d}", {"jpg": encode_jpeg(imgs[i]), "json": {"index": i}}) for i in range(24)), tmp_path, maxcount=12)
    fn = lambda s, rng: {"view": to_chw(moco_v2_view(s["jpg"], 32, rng))}  # noqa: E731
    whole = {int(r["index"]): r["view"] for r in build_dataset(paths, fn, required=("jpg",), cpus=0.25).take_all()}
    ds = build_dataset(paths, fn, required=("jpg",), cpus=0.25, photometric="device")
    assert "view@photometric" in ds.schema().names
    n = 0
    for batch in ds.iter_torch_batches(batch_size=10):
        finished = finish_views(batch)
        assert "view@photometric" not in finished
        for index, view in zip(finished["index"].tolist(), finished["view"].numpy()):
            assert np.abs(view.astype(int) - whole[index]).mean() < 0.5
            n += 1
    assert n == 24


def test_shuffled_torch_batches_over_ray_blocks(ray_cluster, tmp_path):
    """The training loop's shuffle (data/shuffle.py) over a real dataset's blocks: every row once,
    views intact, rows of several blocks (and shards) in one batch, and the same order for the same
    seed when Ray keeps the block order."""
    import ray.data
    import torch

    from contrastlab.platform.data.shuffle import iter_shuffled_torch_batches

    imgs = [encode_jpeg(np.full((8, 8, 3), i, np.uint8), quality=100) for i in range(60)]
    paths = write_shards(((f"{i:05d}", {"jpg": imgs[i], "json": {"index": i}}) for i in range(60)), tmp_path, maxcount=20)
    fn = lambda s, rng: {"pixels": np.ascontiguousarray(s["jpg"].transpose(2, 0, 1))}  # noqa: E731
    ctx = ray.data.DataContext.get_current()  # a dataset takes the context as it is when built (as runner.build_datasets sets it)
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        ds = build_dataset(paths, fn, required=("jpg",), batch_size=10, cpus=0.25)

        def epoch(seed):
            return list(iter_shuffled_torch_batches(ds.iterator(), 16, 30, seed, drop_last=False, device="cpu", prefetch_batches=1))

        batches = epoch(5)
        again = [b["index"].tolist() for b in epoch(5)]
    finally:
        ctx.execution_options.preserve_order = before
    assert [len(b["index"]) for b in batches] == [16, 16, 16, 12]
    assert all(isinstance(b["pixels"], torch.Tensor) and b["pixels"].dtype == torch.uint8 for b in batches)
    index = torch.cat([b["index"] for b in batches])
    assert sorted(index.tolist()) == list(range(60))
    for b in batches:  # each row's pixels still belong to its index (JPEG of a flat image: exact at q100)
        assert torch.equal(b["pixels"][:, 0, 0, 0].long(), b["index"])
    assert len({i // 10 for i in batches[0]["index"].tolist()}) >= 2  # rows of several 10-row blocks
    assert again == [b["index"].tolist() for b in batches]
