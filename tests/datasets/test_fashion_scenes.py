"""The fashion-scenes generator: determinism, exact masks, tags, co-occurring pairs."""
import json

import numpy as np
import pytest

from contrastlab.platform.data.codecs import decode_jpeg, decode_png
from contrastlab.platform.datasets import ensure_dataset
from contrastlab.platform.datasets import fashion_mnist as fm
from contrastlab.platform.datasets import fashion_scenes as fs

pytestmark = pytest.mark.skipif(
    not (fm.fashion_mnist_dir() / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)",
)

PARAMS = dict(n_train=40, n_val=30, train_masks=True)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return ensure_dataset("fashion-scenes", cache_dir=tmp_path_factory.mktemp("cache"), **PARAMS)


def _samples(shards, paths, split):
    return shards.read(paths.splits[split])


def test_splits_meta_and_members(scenes, shards):
    assert scenes.meta["counts"] == {"train": 40, "val": 30}
    assert scenes.meta["classes"] == ["T-shirt/top", "Trouser", "Sneaker", "Bag"]
    assert scenes.meta["num_classes"] == 5 and scenes.meta["pairs"] == [["T-shirt/top", "Trouser"], ["Sneaker", "Bag"]]
    indices = []
    for split in ("train", "val"):
        for key, fields in _samples(shards, scenes, split).items():
            info = json.loads(fields["json"])
            indices.append(info["index"])
            assert info["split"] == split and key == f"{info['index']:08d}"
            image, mask = decode_jpeg(fields["jpg"]), decode_png(fields["png"])
            assert image.shape == (64, 64, 3) and mask.shape == (64, 64) and mask.dtype == np.uint8
            assert 2 <= len(info["items"]) <= 4
            # tags = the classes with visible pixels in the mask (1-based ids), never empty
            present = sorted(int(v) for v in np.unique(mask) if 0 < v < 255)
            assert info["labels"] == present and present
            assert all(1 <= c <= 4 for c in info["labels"])
    assert len(set(indices)) == 70


def test_train_split_has_no_masks_by_default(tmp_path, shards):
    paths = ensure_dataset("fashion-scenes", cache_dir=tmp_path, n_train=5, n_val=3)
    assert all("png" not in f for f in _samples(shards, paths, "train").values())
    assert all("png" in f for f in _samples(shards, paths, "val").values())


def test_masks_are_exact_item_pixels():
    rng = np.random.default_rng(0)
    pools = fs._class_pools("test", 4)
    image, mask, labels, items = fs.compose_scene(rng, pools, image_size=64, n_classes=4, min_items=1, max_items=1,
                                                  pair_prob=0.0, item_min=28, item_max=28, mask_threshold=40, min_visible=1)
    (item,) = items
    x, y, w, h = item["bbox"]
    c = item["class"]
    src = pools[c - 1][0][pools[c - 1][1].tolist().index(item["source_index"])]
    from PIL import Image

    grey = np.asarray(Image.fromarray(src).resize((28, 28), Image.BILINEAR))
    expected = np.zeros((64, 64), np.uint8)
    expected[y:y + h, x:x + w][grey > 40] = c
    np.testing.assert_array_equal(mask, expected)
    assert labels == [c]


def test_pairs_co_occur():
    rng = np.random.default_rng(1)
    pools = fs._class_pools("test", 4)
    both = 0
    for _ in range(60):
        _, _, labels, items = fs.compose_scene(rng, pools, image_size=64, n_classes=4, min_items=2, max_items=2, pair_prob=1.0,
                                               item_min=20, item_max=24, mask_threshold=40, min_visible=1)
        classes = sorted(i["class"] for i in items)
        both += classes in ([1, 2], [3, 4])
    assert both == 60  # two items, pair_prob 1: always a pair


def test_deterministic(tmp_path, shards):
    a = ensure_dataset("fashion-scenes", cache_dir=tmp_path / "a", n_train=6, n_val=4)
    b = ensure_dataset("fashion-scenes", cache_dir=tmp_path / "b", n_train=6, n_val=4)
    assert shards.tree(a.root).keys() == shards.tree(b.root).keys()
    for name, data in shards.tree(a.root).items():
        if name.endswith(".tar"):
            assert _samples(shards, a, name.split("-")[0]) == _samples(shards, b, name.split("-")[0])
    c = ensure_dataset("fashion-scenes", cache_dir=tmp_path / "c", seed=1, n_train=6, n_val=4)
    assert _samples(shards, a, "val") != _samples(shards, c, "val")


def test_bad_params():
    with pytest.raises(ValueError, match="n_classes"):
        ensure_dataset("fashion-scenes", n_classes=3)
    with pytest.raises(ValueError, match="max_items"):
        fs.generate(None, seed=0, **{**fs.SPEC.defaults, "min_items": 3, "max_items": 2})


def test_unreachable_min_visible_fails_instead_of_looping_forever():
    """`while True` redrew scenes forever when no class could keep min_visible pixels; now bounded and named."""
    import signal

    def hang(signum, frame):
        raise TimeoutError("compose_scene kept redrawing (no retry cap)")

    pools = [(np.full((3, 28, 28), 30, np.uint8), np.arange(3))] * 4  # items all below mask_threshold: never visible
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        with pytest.raises(ValueError, match=r"min_visible=1.*mask_threshold=40"):
            fs.compose_scene(np.random.default_rng(0), pools, image_size=16, n_classes=4, min_items=1, max_items=1,
                             pair_prob=0.0, item_min=4, item_max=4, mask_threshold=40, min_visible=1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    with pytest.raises(ValueError, match="min_visible"):  # more pixels than max_items items of item_max^2 can show
        fs.generate(None, seed=0, **{**fs.SPEC.defaults, "max_items": 2, "item_max": 30, "item_min": 28, "min_visible": 2 * 30 * 30 + 1})
