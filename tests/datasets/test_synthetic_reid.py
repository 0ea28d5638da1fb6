"""synthetic-reid generator: splits, schema, query/gallery protocol, determinism."""
from collections import Counter, defaultdict

import numpy as np
import pytest

from contrastlab.platform.data.codecs import decode_jpeg
from contrastlab.platform.datasets import ensure_dataset

PARAMS = dict(n_source_domains=1, n_seen_domains=2, n_unseen_domains=1, n_train_ids=4, images_per_train_id=6,
              n_test_ids=3, images_per_test_id=5, n_cameras=3, height=32, width=16)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ensure_dataset("synthetic-reid", cache_dir=str(tmp_path_factory.mktemp("c")), **PARAMS)


def test_meta_and_counts(tiny):
    m = tiny.meta
    assert m["domain_names"] == ["d0", "d1", "d2", "u1"]
    assert (m["source_domains"], m["seen_domains"], m["unseen_domains"]) == (["d0"], ["d1", "d2"], ["u1"])
    assert m["counts"] == {"train": 3 * 4 * 6, "test": 4 * 3 * 5}


def test_samples_schema_and_protocol(tiny, shards):
    train = shards.read(tiny.splits["train"])
    test = shards.read(tiny.splits["test"])
    import json

    tj = [json.loads(s["json"]) for s in train.values()]
    ej = [json.loads(s["json"]) for s in test.values()]
    assert {j["domain"] for j in tj} == {"d0", "d1", "d2"}  # unseen domains have no training images
    assert {j["split"] for j in tj} == {"train"} and {j["split"] for j in ej} == {"query", "gallery"}
    assert sorted(j["index"] for j in tj + ej) == list(range(len(tj) + len(ej)))
    assert not {j["pid"] for j in tj} & {j["pid"] for j in ej}  # train and test identities are disjoint
    assert Counter(j["domain"] for j in tj[:24]).most_common(1)[0][1] < 24  # domains interleaved
    per_id_cam = defaultdict(Counter)
    for j in ej:
        assert 0 <= j["camera"] < 3 and j["camid"] == j["camera"]
        per_id_cam[j["pid"]][(j["camera"], j["split"])] += 1
    for counts in per_id_cam.values():
        cams = {c for c, _ in counts}
        assert cams == {0, 1, 2}  # every camera sees every test identity
        assert all(counts[(c, "query")] == 1 for c in cams)  # one query per camera, rest gallery
    img = decode_jpeg(next(iter(train.values()))["jpg"])
    assert img.shape == (32, 16, 3)


def test_deterministic(tiny, tmp_path, shards):
    again = ensure_dataset("synthetic-reid", cache_dir=str(tmp_path), **PARAMS)
    assert shards.tree(again.root) == shards.tree(tiny.root)


def test_identity_is_more_similar_than_other_identities(tiny, shards):
    """Same person, same domain: mean pixel distance smaller than between people (the task is learnable)."""
    import json

    by_id = defaultdict(list)
    for s in shards.read(tiny.splits["train"]).values():
        j = json.loads(s["json"])
        if j["domain"] == "d1":
            by_id[j["pid"]].append(decode_jpeg(s["jpg"]).astype(np.float32).mean(axis=(0, 1)))  # mean colour
    ids = sorted(by_id)
    within = np.mean([np.linalg.norm(a - b) for i in ids for a in by_id[i] for b in by_id[i]])
    between = np.mean([np.linalg.norm(a - b) for i in ids for k in ids if k != i for a in by_id[i] for b in by_id[k]])
    assert within < between


def test_bad_params(tmp_path):
    with pytest.raises(ValueError, match="n_cameras"):
        ensure_dataset("synthetic-reid", cache_dir=str(tmp_path), n_cameras=1)


def test_too_few_test_images_per_identity_are_refused(tmp_path):
    """images_per_test_id <= n_cameras left identities with no gallery image at all."""
    with pytest.raises(ValueError, match=r"images_per_test_id.*n_cameras"):
        ensure_dataset("synthetic-reid", cache_dir=str(tmp_path), images_per_test_id=3, n_cameras=3)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("images", [4, 5, 7])
def test_every_query_has_a_gallery_image_in_another_camera(tmp_path, shards, images):
    """With 4 images over 3 cameras the only gallery image sat in one query's own camera: that query
    (one in three) could never be matched under the standard same-camera exclusion."""
    import json

    params = dict(PARAMS, n_train_ids=1, images_per_train_id=1, n_test_ids=6, images_per_test_id=images)
    paths = ensure_dataset("synthetic-reid", cache_dir=str(tmp_path), **params)
    infos = [json.loads(s["json"]) for s in shards.read(paths.splits["test"]).values()]
    gallery = {(j["pid"], j["camera"]) for j in infos if j["split"] == "gallery"}
    queries = [j for j in infos if j["split"] == "query"]
    assert len(queries) >= 4 * 6 * (3 - 1)  # at least two queries per identity (4 domains x 6 ids)
    for q in queries:
        assert any((q["pid"], c) in gallery for c in range(3) if c != q["camera"]), q
    for pid in {j["pid"] for j in infos}:
        assert {j["camera"] for j in infos if j["pid"] == pid} == {0, 1, 2}  # every camera still sees the person
