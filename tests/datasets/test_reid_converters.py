"""Re-id converters on tiny fixtures laid out exactly like Market-1501, DukeMTMC-reID and MSMT17."""
import json

import numpy as np
import pytest
from PIL import Image

from contrastlab.platform.datasets.reid_converters import convert_reid, read_dukemtmc, read_market1501, read_msmt17


def _jpg(path, colour=(200, 30, 30), size=(64, 128)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), colour, np.uint8)).save(path)


@pytest.fixture
def market(tmp_path):
    root = tmp_path / "downloads" / "Market-1501-v15.09.15"
    for name in ("0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s3_077419_02.jpg"):
        _jpg(root / "bounding_box_train" / name)
    for name in ("0001_c1s1_001051_00.jpg",):
        _jpg(root / "query" / name)
    for name in ("0001_c2s1_000301_01.jpg", "0000_c1s1_000000_00.jpg", "-1_c1s1_000401_03.jpg"):
        _jpg(root / "bounding_box_test" / name)
    return root.parent  # parent folder: the converter finds the dataset folder inside


@pytest.fixture
def duke(tmp_path):
    root = tmp_path / "DukeMTMC-reID"
    for name in ("0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg"):
        _jpg(root / "bounding_box_train" / name)
    _jpg(root / "query" / "0005_c2_f0046985.jpg")
    _jpg(root / "bounding_box_test" / "0005_c5_f0051781.jpg")
    return root


@pytest.fixture
def msmt(tmp_path):
    root = tmp_path / "MSMT17_V1"
    train = ["0000/0000_000_01_0303morning_0015_0.jpg", "0000/0000_001_05_0303morning_0036_1.jpg"]
    val = ["0001/0001_000_07_0303noon_0001_0.jpg"]
    query = ["0000/0000_000_12_0303afternoon_0012_0.jpg"]
    gallery = ["0000/0000_003_03_0303afternoon_0040_0.jpg"]
    for rel in train + val:
        _jpg(root / "train" / rel)
    for rel in query + gallery:
        _jpg(root / "test" / rel)
    (root / "list_train.txt").write_text("".join(f"{r} 0\n" for r in train))
    (root / "list_val.txt").write_text("".join(f"{r} 1\n" for r in val))
    (root / "list_query.txt").write_text("".join(f"{r} 0\n" for r in query))
    (root / "list_gallery.txt").write_text("".join(f"{r} 0\n" for r in gallery))
    return root


def test_market_names_parse(market):
    recs = read_market1501(market)
    got = sorted((r["split"], r["pid"], r["camera"]) for r in recs)
    assert got == sorted([("train", 2, 0), ("train", 2, 1), ("train", 7, 2), ("query", 1, 0), ("gallery", 1, 1), ("gallery", 0, 0)])
    assert all(r["pid"] != -1 for r in recs)  # junk dropped, distractors (0000) kept


def test_duke_and_msmt_parse(duke, msmt):
    assert sorted((r["split"], r["pid"], r["camera"]) for r in read_dukemtmc(duke)) == [
        ("gallery", 5, 4), ("query", 5, 1), ("train", 1, 1), ("train", 1, 4)]
    recs = read_msmt17(msmt)
    assert sorted((r["split"], r["pid"], r["camera"]) for r in recs) == [
        ("gallery", 0, 2), ("query", 0, 11), ("train", 0, 0), ("train", 0, 4), ("train", 1, 6)]
    assert len([r for r in read_msmt17(msmt, include_val=False) if r["split"] == "train"]) == 2


def test_bad_market_name_is_refused(market):
    _jpg(market / "Market-1501-v15.09.15" / "query" / "not_a_reid_name.jpg")
    with pytest.raises(ValueError, match="file name"):
        read_market1501(market)


def test_convert_multi_domain(market, duke, msmt, tmp_path, shards):
    out = tmp_path / "out"
    paths = convert_reid([("market1501", market, "market", "seen"), ("dukemtmc", duke, "duke", "seen"),
                          ("msmt17", msmt, "msmt", "unseen")], out, image_size=(32, 16))
    meta = paths.meta
    assert meta["domain_names"] == ["market", "duke", "msmt"] and meta["unseen_domains"] == ["msmt"]
    assert meta["counts"] == {"train": 3 + 2, "test": 3 + 2 + 2}
    train = shards.jsons(paths.splits["train"])
    test = shards.jsons(paths.splits["test"])
    assert {j["domain"] for j in train} == {"market", "duke"}  # unseen domains add no training images
    assert {j["split"] for j in test} == {"query", "gallery"}
    idx = [j["index"] for j in train + test]
    assert sorted(idx) == list(range(len(idx)))
    sample = next(iter(shards.read(paths.splits["test"]).values()))
    from contrastlab.platform.data.codecs import decode_jpeg

    assert decode_jpeg(sample["jpg"]).shape == (32, 16, 3)
    assert json.loads((out / "meta.json").read_text())["name"] == "reid"
    with pytest.raises(FileExistsError):
        convert_reid([("market1501", market, "market")], out)
    with pytest.raises(ValueError, match="layout"):
        convert_reid([("cuhk", market, "x")], tmp_path / "o2")


def test_bad_msmt_pid_names_the_list_file(msmt):
    (msmt / "list_train.txt").write_text("0000/0000_000_01_0303morning_0015_0.jpg zero\n")
    with pytest.raises(ValueError, match=r"list_train\.txt:1: pid 'zero'"):
        read_msmt17(msmt)
