"""convert_cub on a tiny fixture laid out exactly like CUB_200_2011 (2 classes, 6 images)."""
import json

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from contrastlab.platform.datasets import convert_cub, load_dataset_paths

CLASS_DIRS = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
# id, class (1-based), is_train, size (w, h), bbox (x, y, w, h)
IMAGES = [
    (1, 1, 1, (40, 30), (5.0, 4.0, 20.0, 10.0)),
    (2, 1, 0, (36, 48), (0.0, 0.0, 36.0, 48.0)),
    (3, 1, 1, (50, 40), (10.0, 10.0, 30.0, 20.0)),
    (4, 2, 1, (40, 40), (8.0, 6.0, 12.0, 16.0)),
    (5, 2, 0, (64, 32), (32.0, 8.0, 24.0, 16.0)),
    (6, 2, 1, (30, 45), (2.5, 3.5, 10.0, 20.0)),
]


def make_cub(root):
    """Write the fixture: list files + images/<class>/<name>.jpg, the box painted white on grey."""
    (root / "images").mkdir(parents=True)
    images, labels, split, boxes = [], [], [], []
    for image_id, cls, is_train, (w, h), (x, y, bw, bh) in IMAGES:
        rel = f"{CLASS_DIRS[cls - 1]}/{CLASS_DIRS[cls - 1].split('.')[1]}_{image_id:04d}.jpg"
        (root / "images" / rel).parent.mkdir(exist_ok=True)
        pixels = np.full((h, w, 3), 60, np.uint8)
        pixels[int(y):int(y + bh), int(x):int(x + bw)] = 250
        Image.fromarray(pixels if image_id != 2 else pixels[:, :, 0]).save(root / "images" / rel, quality=95)  # id 2: greyscale
        images.append(f"{image_id} {rel}")
        labels.append(f"{image_id} {cls}")
        split.append(f"{image_id} {is_train}")
        boxes.append(f"{image_id} {x} {y} {bw} {bh}")
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels), ("train_test_split.txt", split),
                        ("bounding_boxes.txt", boxes), ("classes.txt", [f"{i + 1} {d}" for i, d in enumerate(CLASS_DIRS)])):
        (root / name).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def cub(tmp_path):
    return make_cub(tmp_path / "CUB_200_2011")


def _by_index(shards, paths):
    return {json.loads(f["json"])["index"]: f for split in paths.splits.values() for f in shards.read(split).values()}


def test_convert_plain(cub, tmp_path, shards):
    paths = convert_cub(cub, tmp_path / "out")
    assert paths.meta["classes"] == ["Black footed Albatross", "Laysan Albatross"]
    assert paths.meta["counts"] == {"train": 4, "test": 2}
    assert load_dataset_paths(tmp_path / "out").splits == paths.splits
    samples = _by_index(shards, paths)
    assert sorted(samples) == [0, 1, 2, 3, 4, 5]  # index = image id - 1
    for image_id, cls, is_train, (w, h), bbox in IMAGES:
        fields = samples[image_id - 1]
        meta = json.loads(fields["json"])
        assert meta["label"] == cls - 1 and meta["split"] == ("train" if is_train else "test")
        assert meta["bbox"] == list(bbox) and meta["path"].startswith(CLASS_DIRS[cls - 1] + "/")
        image = simplejpeg.decode_jpeg(fields["jpg"])
        assert image.shape == (h, w, 3)
    for split in ("train", "test"):
        manifest = json.loads((tmp_path / "out" / f"{split}.manifest.json").read_text())
        assert manifest["total"] == paths.meta["counts"][split]


def test_crop_to_bbox(cub, tmp_path, shards):
    samples = _by_index(shards, convert_cub(cub, tmp_path / "out", crop_to_bbox=True))
    for image_id, _, _, _, (x, y, bw, bh) in IMAGES:
        fields = samples[image_id - 1]
        image = simplejpeg.decode_jpeg(fields["jpg"])
        if image_id == 6:  # fractional box 2.5..12.5 x 3.5..23.5 -> pixels 2..13 x 3..24
            assert image.shape[:2] == (21, 11)
        else:
            assert image.shape[:2] == (bh, bw)
            assert image.mean() > 200  # the crop is the painted box
        meta = json.loads(fields["json"])
        assert meta["image_bbox"][2:] == [bw, bh]


def test_resize(cub, tmp_path, shards):
    samples = _by_index(shards, convert_cub(cub, tmp_path / "a", image_size=24))
    assert simplejpeg.decode_jpeg(samples[4]["jpg"]).shape == (24, 48, 3)  # 64x32 -> shorter side 24
    meta = json.loads(samples[4]["json"])
    assert meta["image_bbox"] == [24.0, 6.0, 18.0, 12.0] and meta["source_size"] == [64, 32]
    samples = _by_index(shards, convert_cub(cub, tmp_path / "b", crop_to_bbox=True, image_size=16, resize="square"))
    assert all(simplejpeg.decode_jpeg(f["jpg"]).shape == (16, 16, 3) for f in samples.values())


def test_parent_folder_is_accepted(cub, tmp_path):
    assert convert_cub(cub.parent, tmp_path / "out").meta["counts"]["train"] == 4


@pytest.mark.parametrize("missing", ["images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt"])
def test_missing_list_file_is_named(cub, tmp_path, missing):
    (cub / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        convert_cub(cub, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_image_and_bad_rows_are_named(cub, tmp_path):
    next((cub / "images" / CLASS_DIRS[1]).iterdir()).unlink()
    with pytest.raises(FileNotFoundError, match="Laysan_Albatross_000"):
        convert_cub(cub, tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["CUB_200_2011"]  # no partial output, no temp folder
    make_cub(tmp_path / "second")
    (tmp_path / "second" / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n4 1\n5 0\n")
    with pytest.raises(ValueError, match="train_test_split.txt.*image id 6"):
        convert_cub(tmp_path / "second", tmp_path / "out2")


def test_refuses_non_empty_output(cub, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_cub(cub, tmp_path / "out")
    paths = convert_cub(cub, tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "keep.txt").exists() and paths.meta["counts"]["test"] == 2


def test_samples_are_written_in_a_seeded_random_order_not_by_class(tmp_path, shards):
    """images.txt is class-sorted; training shuffles only shard files plus a small buffer, so class-sorted
    shards made batches of 1-3 classes. Each image keeps index = id - 1."""
    import test_cub_converter as this

    images = [(i + 1, i // 8 + 1, 1, (16, 16), (2.0, 2.0, 8.0, 8.0)) for i in range(24)]  # 3 classes x 8, all train
    (tmp_path / "big" / "classes.txt").parent.mkdir()
    old = this.IMAGES, this.CLASS_DIRS
    this.IMAGES, this.CLASS_DIRS = images, ["001.A", "002.B", "003.C"]
    try:
        root = make_cub(tmp_path / "big" / "CUB_200_2011")
    finally:
        this.IMAGES, this.CLASS_DIRS = old
    a = [json.loads(f["json"]) for f in shards.read(convert_cub(root, tmp_path / "a").splits["train"]).values()]
    b = [json.loads(f["json"]) for f in shards.read(convert_cub(root, tmp_path / "b").splits["train"]).values()]
    labels = [m["label"] for m in a]
    assert labels != sorted(labels) and sum(x != y for x, y in zip(labels, labels[1:])) > 6  # classes mixed
    assert sorted(m["index"] for m in a) == list(range(24)) and all(m["label"] == m["index"] // 8 for m in a)
    assert a == b  # fixed seed: the same order every time
