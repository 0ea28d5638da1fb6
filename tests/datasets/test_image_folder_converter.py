import json

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from contrastlab.platform.datasets import convert_image_folder


def _image(path, value, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _metas(shards, paths):
    return {split: [json.loads(f["json"]) for f in shards.read(p).values()] for split, p in paths.splits.items()}


def test_class_per_folder_with_stratified_test_split(tmp_path, shards):
    src = tmp_path / "src"
    for cls, value in (("zebra", 30), ("ant", 200)):
        for i in range(5):
            _image(src / cls / f"{i}.png", value)
    (src / "ant" / "notes.txt").write_text("not an image")
    paths = convert_image_folder(src, tmp_path / "out", test_fraction=0.4, seed=0, image_size=8, resize="square")
    assert paths.meta["classes"] == ["ant", "zebra"]  # sorted
    metas = _metas(shards, paths)
    assert {s: len(m) for s, m in metas.items()} == {"train": 6, "test": 4}
    assert sorted(m["index"] for ms in metas.values() for m in ms) == list(range(10))
    for split, ms in metas.items():
        assert sorted(m["label"] for m in ms) == ([0, 0, 1, 1] if split == "test" else [0, 0, 0, 1, 1, 1])
        for m in ms:
            assert m["class"] == paths.meta["classes"][m["label"]] and m["path"].startswith(m["class"] + "/")
    fields = next(iter(shards.read(paths.splits["train"]).values()))
    image = simplejpeg.decode_jpeg(fields["jpg"])
    assert image.shape == (8, 8, 3)
    assert abs(int(image.mean()) - (200 if json.loads(fields["json"])["class"] == "ant" else 30)) < 5


def test_split_folders_and_split_files(tmp_path, shards):
    src = tmp_path / "src"
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                _image(src / split / cls / f"{i}.jpg", 100)
    paths = convert_image_folder(src, tmp_path / "out")
    assert paths.meta["counts"] == {"train": 6, "val": 4} and paths.meta["classes"] == ["cat", "dog"]

    (src / "a.txt").write_text("train/cat/0.jpg\ntrain/dog/1.jpg\n")
    (src / "b.txt").write_text("val/dog/0.jpg\n")
    paths = convert_image_folder(src, tmp_path / "out2", split_files={"train": "a.txt", "test": "b.txt"})
    metas = _metas(shards, paths)
    assert [m["label"] for m in metas["test"]] == [1] and len(metas["train"]) == 2
    (src / "c.txt").write_text("val/dog/missing.jpg\n")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        convert_image_folder(src, tmp_path / "out3", split_files={"test": "c.txt"})


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(ValueError, match="class sub-folders"):
        convert_image_folder(tmp_path / "src", tmp_path / "out")


def test_samples_are_written_in_a_seeded_random_order_not_by_class(tmp_path, shards):
    src = tmp_path / "src"
    for ci, cls in enumerate(("ant", "bee", "cat")):
        for i in range(8):
            _image(src / cls / f"{i}.png", 40 * ci, size=(4, 4))
    runs = [_metas(shards, convert_image_folder(src, tmp_path / f"out{i}", seed=s))["train"] for i, s in enumerate((0, 0, 1))]
    labels = [m["label"] for m in runs[0]]
    assert labels != sorted(labels) and sum(x != y for x, y in zip(labels, labels[1:])) > 6  # classes mixed
    index_of = {p: i for i, p in enumerate(sorted(m["path"] for m in runs[0]))}
    assert all(m["index"] == index_of[m["path"]] for m in runs[0])  # index unchanged: position of the sorted path
    assert runs[0] == runs[1] and runs[0] != runs[2]  # the order follows seed


def test_flat_split_folder_is_refused_not_dropped(tmp_path):
    """ImageNet-style val/ with the images directly inside used to vanish from the output silently."""
    src = tmp_path / "src"
    for cls in ("cat", "dog"):
        _image(src / "train" / cls / "0.jpg", 100)
    _image(src / "val" / "ILSVRC2012_val_00000001.jpg", 100)
    with pytest.raises(ValueError, match=r"val.*<split>/<class>/<image>"):
        convert_image_folder(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_split_file_paths_are_normalised_and_an_image_in_two_splits_is_refused(tmp_path, shards):
    src = tmp_path / "src"
    for cls in ("cat", "dog"):
        for i in range(2):
            _image(src / cls / f"{i}.jpg", 100)
    (src / "a.txt").write_text("cat/0.jpg\n./dog/0.jpg\n")
    (src / "b.txt").write_text("./cat/1.jpg\ndog/1.jpg\n")
    paths = convert_image_folder(src, tmp_path / "ok", split_files={"train": "a.txt", "test": "b.txt"})
    metas = _metas(shards, paths)
    assert sorted(m["path"] for m in metas["train"]) == ["cat/0.jpg", "dog/0.jpg"]
    assert sorted(m["index"] for ms in metas.values() for m in ms) == [0, 1, 2, 3]
    (src / "c.txt").write_text("./cat/0.jpg\n")  # the same image as a.txt's "cat/0.jpg"
    with pytest.raises(ValueError, match=r"cat/0\.jpg.*already listed"):
        convert_image_folder(src, tmp_path / "bad", split_files={"train": "a.txt", "test": "c.txt"})
