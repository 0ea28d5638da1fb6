"""The ingest benchmarks' measurement machinery (no Ray): rounds alternate AB, BA, ...; the headline
ratio is the median over rounds of same-round rates with warm-up epochs left out; the DataLoader
helper process runs real epochs over real shards; CPU accounting reads /proc correctly."""
import importlib.util
import os
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    spec = importlib.util.spec_from_file_location("ingest", os.path.join(REPO, "benchmarks", "ingest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def epoch(samples, seconds, t0=0.0):
    return {"t0": t0, "t_first": t0 + 0.1 * seconds, "t1": t0 + seconds, "samples": samples, "first_batch": 1}


def test_rounds_alternate_so_that_drift_weighs_on_both_sides(bench):
    calls = []

    def block(side):
        def run(i):
            calls.append((side, i))
            return {"a": [epoch(100, 1.0), epoch(100, 1.0)]}
        return run

    blocks = bench.alternated_rounds(3, block("ray"), block("webdataset"), ["a"])
    assert [c[0] for c in calls] == ["webdataset", "ray", "ray", "webdataset", "webdataset", "ray"]
    assert [c[1] for c in calls] == [0, 0, 1, 1, 2, 2]
    assert len(blocks) == 3 and all(set(b) == {"ray", "webdataset"} for b in blocks)


def test_summary_is_the_median_of_same_round_ratios_without_warm_up(bench):
    warm = epoch(100, 50.0)  # a slow first epoch (imports, worker start) must not count
    # round rates (img/s): ray 100, 90, 200; webdataset 100, 100, 100 -> ratios 1.0, 0.9, 2.0, median 1.0
    blocks = [{"ray": {"a": [warm, epoch(100, 1.0)]}, "webdataset": {"a": [warm, epoch(100, 1.0)]}},
              {"ray": {"a": [warm, epoch(90, 1.0)]}, "webdataset": {"a": [warm, epoch(100, 1.0)]}},
              {"ray": {"a": [warm, epoch(200, 1.0)]}, "webdataset": {"a": [warm, epoch(100, 1.0)]}}]
    r = {"work_ceiling_images_per_s": 400.0, "decode_ceiling_images_per_s": 1000.0}
    bench.summarize(r, blocks, "a")
    assert r["ratio_rounds"] == pytest.approx([1.0, 0.9, 2.0])
    assert r["ratio_vs_webdataset"] == pytest.approx(1.0)
    assert r["ray_images_per_s_median"] == pytest.approx(100.0)
    assert r["ratio_vs_work_ceiling"] == pytest.approx(0.25) and r["ratio_vs_decode_ceiling"] == pytest.approx(0.1)
    # with several timed epochs per block, each block counts with its median epoch
    blocks[0]["ray"]["a"] += [epoch(300, 1.0), epoch(120, 1.0)]  # timed 100, 300, 120 -> 120
    bench.summarize(r, blocks, "a")
    assert r["ratio_rounds"][0] == pytest.approx(1.2)


def test_webdataset_helper_runs_epochs_of_real_shards(bench):
    from _common import write_photo_shards

    with tempfile.TemporaryDirectory() as d:
        paths = write_photo_shards(d, 24, 32, per_shard=12)
        side = bench.WebDatasetSide({"tiny": (paths, ["ingest", "make_sample_fn", ["crop", 32]])}, batch=8, procs=2)
        try:
            epochs = [side.epoch("tiny") for _ in range(2)]
        finally:
            side.close()
    assert [e["samples"] for e in epochs] == [24, 24]
    assert all(e["t0"] <= e["t_first"] <= e["t1"] for e in epochs)


def test_cpu_seconds_counts_this_process_busy_time(bench):
    from _common import cpu_seconds

    before, t0 = cpu_seconds([os.getpid()]), time.process_time()
    while time.process_time() - t0 < 0.3:
        pass
    used = cpu_seconds([os.getpid()]) - before
    assert 0.2 <= used <= 0.6  # /proc counts in clock ticks (10 ms)
    assert cpu_seconds([2**22 + 12345]) == 0  # a pid that does not exist counts nothing


def test_variants_alternate_and_leave_the_warm_up_out(monkeypatch):
    """shuffle_buffer.py's and iterator_latency.py's harness: a, b, c, then c, b, a; each run a warm-up
    epoch and the timed ones, whose rates and first-batch times make the table."""
    import shuffle_buffer

    monkeypatch.setattr(shuffle_buffer, "cpu_by_process", dict)  # no cluster here: no Ray processes to count

    class Side:  # answers epochs as RaySide.epoch does: name -> timings of one epoch
        def __init__(self):
            self.asked = []

        def epoch(self, name):
            self.asked.append(name)
            warm_up = len(self.asked) % 3 == 1  # every run: one warm-up, then two timed
            return epoch(100, 10.0 if warm_up else {"a": 1.0, "b": 2.0, "c": 4.0}[name])

    side = Side()
    runs = shuffle_buffer.alternate_variants(side, ["a", "b", "c"], rounds=2, epochs=2)
    assert side.asked == list("aaabbbccc" + "cccbbbaaa")
    assert [r["images_per_s"] for r in runs["b"]] == [[50.0, 50.0], [50.0, 50.0]]
    assert runs["c"][0]["first_batch_s"] == [0.4, 0.4]
    table = shuffle_buffer.variant_table(runs, "variant")
    assert [(row["variant"], row["img/s median"], row["first batch s"]) for row in table] == [("a", 100.0, 0.1), ("b", 50.0, 0.2), ("c", 25.0, 0.4)]
