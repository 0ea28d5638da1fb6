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
