"""Weighted mixing of several training sources: the draw, the in-process loop, real Ray Data, config."""
import numpy as np
import pytest

from contrastlab.platform.config import ConfigError, build_experiment
from contrastlab.platform.data.codecs import encode_jpeg
from contrastlab.platform.data.mixing import MixError, MixPlan, parse_weights, split_sources
from contrastlab.platform.data.reader import build_dataset
from contrastlab.platform.data.shards import write_shards
from contrastlab.platform.local import iter_batches


def _draw(sample, rng):
    return {"draw": np.float64(rng.random())}


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """A big source (120 image-text samples, 3 shards) and a small one (20 text-only samples, 2 shards)."""
    root = tmp_path_factory.mktemp("mix")
    img = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    big = write_shards(((f"{i:05d}", {"jpg": img, "txt": "pair", "json": {"index": i}}) for i in range(120)), root / "pairs", maxcount=40)
    small = write_shards(((f"{i:05d}", {"txt": "text only", "json": {"index": 1000 + i}}) for i in range(20)), root / "text", maxcount=10)
    return big, small


def test_split_and_parse_weights():
    assert split_sources("a/*.tar; b/{0..3}.tar,c.tar ;") == ["a/*.tar", "b/{0..3}.tar,c.tar"]
    assert parse_weights("", 3) == [] and parse_weights("2:1:0", 3) == [2.0, 1.0, 0.0]
    for bad, n, words in (("1:1", 3, "one weight per source"), ("a:b", 2, "numbers separated by ':'"),
                          ("0:0", 2, "not all 0"), ("-1:2", 2, ">= 0")):
        with pytest.raises(MixError, match=words):
            parse_weights(bad, n)


def test_rates_follow_weights_not_sizes():
    plan = MixPlan.build([["a.tar"], ["b.tar"]], counts=[120, 20], weights=[1, 1])
    assert plan.epoch_size == 140
    assert plan.rates == pytest.approx([70 / 120, 70 / 20])  # big thinned, small repeated 3.5x
    with pytest.raises(MixError, match="no samples"):
        MixPlan.build([["a.tar"], ["b.tar"]], counts=[120, 0], weights=[1, 1])
    with pytest.raises(MixError, match="one source only"):
        MixPlan.build([["a.tar"], ["a.tar"]], counts=[1, 1], weights=[1, 1])


def test_copies_are_deterministic_unbiased_and_change_per_epoch():
    plan = MixPlan.build([["a.tar"], ["b.tar"]], counts=[1000, 1000], weights=[3, 1], epoch_size=1000)
    # rate 0.75 for source 0: each key appears 0 or 1 times; the expected total is 750 (sd ~14)
    epoch0 = [plan.copies(0, f"k{i}", seed=0, epoch=0) for i in range(1000)]
    assert set(epoch0) <= {0, 1} and abs(sum(epoch0) - 750) < 60
    assert epoch0 == [plan.copies(0, f"k{i}", seed=0, epoch=0) for i in range(1000)]
    assert epoch0 != [plan.copies(0, f"k{i}", seed=0, epoch=1) for i in range(1000)]
    up = MixPlan.build([["a.tar"]], counts=[10], weights=[1], epoch_size=25)  # rate 2.5: 2 or 3 copies
    copies = [up.copies(0, f"k{i}", 0, 0) for i in range(10)]
    assert set(copies) <= {2, 3}
    from contrastlab.platform.data.reader import epoch_rows

    tagged = epoch_rows({"__key__": "k0"}, "a.tar", 0, 0, mix=up)
    assert [t["__repeat__"] for t in tagged] == list(range(copies[0])) and {t["__source__"] for t in tagged} == {0}


def _local_counts(big, small, plan, epoch):
    rows = list(iter_batches(big + small, _draw, (), 1000, split="train", seed=0, epoch=epoch, mix=plan))
    source = np.concatenate([b["source"].numpy() for b in rows])
    index = np.concatenate([b["index"].numpy() for b in rows])
    draw = np.concatenate([b["draw"].numpy() for b in rows])
    return source, index, draw


def test_in_process_loop_mixes_by_weight(two_sources):
    big, small = two_sources
    plan = MixPlan.build([big, small], counts=[120, 20], weights=[1, 1])
    totals = np.zeros(2)
    for epoch in range(4):
        source, index, draw = _local_counts(big, small, plan, epoch)
        totals += np.bincount(source, minlength=2)
        assert set(index[source == 1]) <= set(range(1000, 1020)) and set(index[source == 0]) <= set(range(120))
        # repeats of a sample get their own augmentation draw
        for i in np.unique(index[source == 1]):
            assert len(np.unique(draw[index == i])) == int((index == i).sum())
    # 1:1 weights over 4 epochs of 140: 280 each in expectation (source 1: 3 or 4 copies per sample)
    assert abs(totals[0] - 280) < 40 and 260 <= totals[1] <= 300


def test_ray_data_draws_the_same_samples_as_the_local_loop(ray_cluster, two_sources):
    big, small = two_sources
    plan = MixPlan.build([big, small], counts=[120, 20], weights=[1, 3])
    rows = build_dataset(big + small, _draw, split="train", cpus=0.25, batch_size=16, mix=plan, shuffle_files=True).take_all()
    source_ray = np.array([int(r["source"]) for r in rows])
    pairs_ray = sorted((int(r["source"]), int(r["index"]), round(float(r["draw"]), 12)) for r in rows)
    source, index, draw = _local_counts(big, small, plan, epoch=0)
    assert pairs_ray == sorted(zip(source.tolist(), index.tolist(), np.round(draw, 12).tolist()))
    assert abs((source_ray == 1).mean() - 0.75) < 0.1
    # evaluation splits ignore the mix: every sample once, no source column
    eval_rows = build_dataset(big + small, _draw, split="eval", cpus=0.25, mix=plan).take_all()
    assert len(eval_rows) == 140 and "source" not in eval_rows[0]


def test_config_sources_and_errors(two_sources):
    from contrastlab.platform.runner import plan_data

    big, small = two_sources
    pattern = f"{big[0].rsplit('/', 1)[0]}/*.tar; {small[0].rsplit('/', 1)[0]}/*.tar"
    exp = build_experiment("clip", sets=[f"data.train={pattern}", "data.train_weights=1:3"])
    plan = plan_data(exp)
    assert plan.mix is not None and plan.samples_per_epoch == 140 and len(plan.train) == 5
    assert plan.mix.rates == pytest.approx([35 / 120, 105 / 20])
    exp = build_experiment("clip", sets=[f"data.train={pattern}", "data.train_weights=1:1:1"])
    with pytest.raises(ConfigError, match="3 weight"):
        plan_data(exp)
    single = build_experiment("clip", sets=[f"data.train={big[0]}"])
    assert plan_data(single).mix is None
