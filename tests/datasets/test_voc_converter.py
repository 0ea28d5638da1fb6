"""convert_voc on a tiny fixture laid out exactly like VOCdevkit/VOC2012 (+ SegmentationClassAug)."""
import json

import numpy as np
import pytest
from PIL import Image

from contrastlab.platform.data.codecs import decode_jpeg, decode_png
from contrastlab.platform.datasets import load_dataset_paths
from contrastlab.platform.datasets.voc import VOC_CLASSES, convert_voc, split_ids

# id -> (w, h, rectangles [(class, x0, y0, x1, y1)])
IMAGES = {
    "2007_000032": (40, 30, [(1, 2, 2, 20, 15), (15, 25, 10, 38, 28)]),  # aeroplane, person
    "2007_000039": (32, 32, [(20, 5, 5, 25, 25)]),  # tvmonitor
    "2007_000063": (36, 28, [(8, 0, 0, 10, 10), (12, 12, 12, 30, 26)]),  # chair, dog
    "2008_000002": (30, 40, [(7, 5, 5, 25, 35)]),  # car (only in SBD)
    "2008_000003": (24, 24, [(3, 3, 3, 20, 20)]),  # bird (only in SBD)
}
TRAIN, VAL = ["2007_000032", "2007_000039"], ["2007_000063"]
AUG_ONLY = ["2008_000002", "2008_000003"]


def _voc_palette():
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def mask_of(image_id):
    w, h, rects = IMAGES[image_id]
    mask = np.zeros((h, w), np.uint8)
    for cls, x0, y0, x1, y1 in rects:
        mask[y0:y1, x0:x1] = cls
        mask[y0, x0:x1] = 255  # a boundary row, as VOC draws object outlines
    return mask


def make_voc(base, with_aug=True):
    root = base / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "Annotations"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id, (w, h, _) in IMAGES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg", quality=90)
    for image_id in TRAIN + VAL:
        im = Image.fromarray(mask_of(image_id), mode="P")
        im.putpalette(_voc_palette())
        im.save(root / "SegmentationClass" / f"{image_id}.png")
    if with_aug:
        (root / "SegmentationClassAug").mkdir()
        for image_id in IMAGES:
            Image.fromarray(mask_of(image_id), mode="L").save(root / "SegmentationClassAug" / f"{image_id}.png")
    sets = root / "ImageSets" / "Segmentation"
    (sets / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (sets / "val.txt").write_text("\n".join(VAL) + "\n")
    (sets / "trainval.txt").write_text("\n".join(TRAIN + VAL) + "\n")
    return base


@pytest.fixture
def voc(tmp_path):
    return make_voc(tmp_path / "data")


def _by_split(shards, paths):
    return {split: {k: f for k, f in shards.read(p).items()} for split, p in paths.splits.items()}


def test_split_lists_and_train_aug_derivation(voc):
    ids = split_ids(voc / "VOCdevkit" / "VOC2012")
    assert ids["train"] == TRAIN and ids["val"] == VAL
    assert ids["train_aug"] == sorted(TRAIN + AUG_ONLY)  # SBD ids + train, minus val


def test_convert(voc, tmp_path, shards):
    paths = convert_voc(voc, tmp_path / "out")  # the folder holding VOCdevkit is accepted
    assert paths.meta["counts"] == {"train_aug": 4, "train": 2, "val": 1}
    assert paths.meta["classes"] == VOC_CLASSES and paths.meta["num_classes"] == 21
    assert load_dataset_paths(tmp_path / "out").splits == paths.splits
    samples = _by_split(shards, paths)
    indices = []
    for split, items in samples.items():
        for key, fields in items.items():
            info = json.loads(fields["json"])
            indices.append(info["index"])
            w, h, rects = IMAGES[key]
            assert info["image_id"] == key and info["split"] == split and (info["width"], info["height"]) == (w, h)
            assert info["labels"] == sorted({r[0] for r in rects})
            assert decode_jpeg(fields["jpg"]).shape == (h, w, 3)
            if split == "train_aug":
                assert "png" not in fields  # masks are for evaluation only
            else:
                np.testing.assert_array_equal(decode_png(fields["png"]), mask_of(key))
    assert sorted(indices) == list(range(7))
    # the original JPEG bytes are kept when not resizing
    root = voc / "VOCdevkit" / "VOC2012"
    assert samples["val"]["2007_000063"]["jpg"] == (root / "JPEGImages" / "2007_000063.jpg").read_bytes()


def test_resize_keeps_mask_aligned(voc, tmp_path, shards):
    paths = convert_voc(voc / "VOCdevkit" / "VOC2012", tmp_path / "out", splits=("val",), max_side=18)
    (fields,) = shards.read(paths.splits["val"]).values()
    info = json.loads(fields["json"])
    assert (info["width"], info["height"]) == (18, 14)  # 36x28 -> longer side 18
    mask = decode_png(fields["png"])
    assert mask.shape == (14, 18) and set(np.unique(mask)) <= {0, 8, 12, 255}


def test_without_aug_and_xml_labels(tmp_path, shards):
    base = make_voc(tmp_path / "plain", with_aug=False)
    root = base / "VOCdevkit" / "VOC2012"
    assert "train_aug" not in split_ids(root)
    with pytest.raises(FileNotFoundError, match="train_aug"):
        convert_voc(base, tmp_path / "x", splits=("train_aug",))
    # an image without a mask takes its labels from the XML annotation
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("2008_000002\n")
    (root / "Annotations" / "2008_000002.xml").write_text(
        "<annotation><object><name>car</name></object><object><name>person</name></object></annotation>")
    paths = convert_voc(base, tmp_path / "out", splits=("train_aug",))
    (fields,) = shards.read(paths.splits["train_aug"]).values()
    assert json.loads(fields["json"])["labels"] == [7, 15]


def test_errors_name_the_problem(voc, tmp_path):
    root = voc / "VOCdevkit" / "VOC2012"
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        convert_voc(tmp_path / "nowhere", tmp_path / "out")
    (root / "JPEGImages" / "2007_000039.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="2007_000039"):
        convert_voc(voc, tmp_path / "out", splits=("train",))
    assert not (tmp_path / "out").exists()
    Image.fromarray(np.full((4, 4), 30, np.uint8), mode="L").save(root / "SegmentationClass" / "2007_000063.png")
    with pytest.raises(ValueError, match="30"):
        convert_voc(voc, tmp_path / "out2", splits=("val",))


def test_deeplab_format_list_lines_are_read(voc):
    """DeepLab's train_aug.txt lines are "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png"."""
    root = voc / "VOCdevkit" / "VOC2012"
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text(
        "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in AUG_ONLY + TRAIN))
    assert split_ids(root)["train_aug"] == sorted(AUG_ONLY + TRAIN)
