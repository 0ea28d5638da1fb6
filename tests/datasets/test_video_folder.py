"""Video folder converter on tiny fixtures laid out exactly like UCF101 (and HMDB51 / plain folders)."""
import json

import numpy as np
import pytest

from contrastlab.platform.data.media import decode_mp4, encode_mp4, probe_mp4
from contrastlab.platform.datasets.video_folder import convert_video_folder, detect_layout, even_resize_shape

from conftest import read_shards

CLASSES = ["ApplyEyeMakeup", "Archery"]


def _video(seed: int, frames: int = 10, h: int = 48, w: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, h // 8, w // 8, 3)).repeat(8, 1).repeat(8, 2)
    clip = np.repeat(base, frames, axis=0).astype(np.uint8)
    for t in range(frames):
        clip[t, 8:16, 2 + 3 * t:10 + 3 * t] = 255
    # UCF101 ships .avi files; these hold MP4 bytes (encode_mp4), which PyAV identifies by content
    return encode_mp4(clip, fps=25)


@pytest.fixture()
def ucf101(tmp_path):
    root = tmp_path / "UCF101"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    train, test = [], []
    for ci, cls in enumerate(CLASSES):
        (root / "UCF-101" / cls).mkdir(parents=True)
        for g in (1, 8, 9):
            rel = f"{cls}/v_{cls}_g{g:02d}_c01.avi"
            (root / "UCF-101" / rel).write_bytes(_video(10 * ci + g))
            (test if g == 1 else train).append(rel)
    (lists / "trainlist01.txt").write_text("".join(f"{r} {CLASSES.index(r.split('/')[0]) + 1}\n" for r in train))
    (lists / "testlist01.txt").write_text("".join(f"{r}\n" for r in test))
    return root


def test_ucf101_layout(ucf101, tmp_path):
    assert detect_layout(ucf101) == "ucf101"
    paths = convert_video_folder(ucf101, tmp_path / "out", short_side=32)
    assert paths.meta["counts"] == {"train": 4, "test": 2}
    assert paths.meta["classes"] == CLASSES and paths.meta["layout"] == "ucf101" and paths.meta["modality"] == "video"
    seen = set()
    for split in ("train", "test"):
        for key, members in read_shards(paths.splits[split]).items():
            info = json.loads(members["json"])
            assert info["split"] == split and info["fold"] == 1 and info["dataset"] == "ucf101"
            assert info["label"] == CLASSES.index(info["label_name"])  # classInd id - 1
            assert info["video_id"] == info["path"].split("/")[1][:-4] and key == f"{info['index']:08d}"
            assert ("_g01_" in info["path"]) == (split == "test")
            frames = decode_mp4(members["mp4"])
            assert frames.shape == (10, 32, 42, 3)  # short side 48 -> 32, 64 -> 42.67 -> 43 -> even 42
            assert info["num_frames"] == 10 and info["fps"] == 25.0 and probe_mp4(members["mp4"])["fps"] == 25.0
            seen.add(info["index"])
    assert seen == set(range(6))


def test_fame_sample_fn_reads_converted_shards(ucf101, tmp_path):
    from contrastlab.methods.fame.data import make_sample_fn
    from contrastlab.methods.fame.method import FAMEConfig

    paths = convert_video_folder(ucf101, tmp_path / "out", short_side=32)
    members = next(iter(read_shards(paths.splits["train"]).values()))
    sample = {"mp4": members["mp4"], "json": json.loads(members["json"]), "__key__": "k"}
    cfg = FAMEConfig(clip_len=4, frame_stride=2, crop_size=24, eval_clips=3)
    out = make_sample_fn(cfg, "train")(sample, np.random.default_rng(0))
    assert out["clip_q"].shape == out["clip_k"].shape == (3, 4, 24, 24) and out["clip_q"].dtype == np.uint8
    assert out["label"] == sample["json"]["label"] and out["bg_id"] == -1
    ev = make_sample_fn(cfg, "eval")(sample, np.random.default_rng(0))
    assert ev["clips"].shape == (3, 3, 4, 24, 24)


def test_corrupt_video_raise_or_skip(ucf101, tmp_path):
    (ucf101 / "UCF-101" / "Archery" / "v_Archery_g08_c01.avi").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="v_Archery_g08_c01.avi"):
        convert_video_folder(ucf101, tmp_path / "a", short_side=32)
    paths = convert_video_folder(ucf101, tmp_path / "b", short_side=32, on_error="skip")
    assert paths.meta["counts"] == {"train": 3, "test": 2} and paths.meta["skipped"] == ["Archery/v_Archery_g08_c01.avi"]


def test_missing_listed_video_is_named(ucf101, tmp_path):
    (ucf101 / "UCF-101" / "Archery" / "v_Archery_g09_c01.avi").unlink()
    with pytest.raises(FileNotFoundError, match="v_Archery_g09_c01.avi"):
        convert_video_folder(ucf101, tmp_path / "out")


def test_hmdb51_layout(tmp_path):
    root = tmp_path / "hmdb51"
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for ci, cls in enumerate(["brush_hair", "cartwheel"]):
        (root / "videos" / cls).mkdir(parents=True)
        lines = []
        for v, tag in enumerate((1, 2, 0)):
            name = f"{cls}_clip{v}.avi"
            (root / "videos" / cls / name).write_bytes(_video(ci * 3 + v, frames=4, h=32, w=32))
            lines.append(f"{name} {tag} ")
        (splits / f"{cls}_test_split1.txt").write_text("\n".join(lines) + "\n")
    assert detect_layout(root) == "hmdb51"
    paths = convert_video_folder(root, tmp_path / "out", short_side=0, max_frames=3)
    assert paths.meta["counts"] == {"train": 2, "test": 2}  # tag 0 videos are left out
    info = [json.loads(m["json"]) for m in read_shards(paths.splits["test"]).values()]
    assert sorted(i["label_name"] for i in info) == ["brush_hair", "cartwheel"] and all(i["num_frames"] == 3 for i in info)


def test_plain_folders_with_test_fraction(tmp_path):
    root = tmp_path / "clips"
    for ci, cls in enumerate(["a", "b"]):
        (root / cls).mkdir(parents=True)
        for v in range(4):
            (root / cls / f"{v}.mp4").write_bytes(_video(ci * 4 + v, frames=3, h=16, w=16))
    paths = convert_video_folder(root, tmp_path / "out", short_side=0, test_fraction=0.5)
    assert paths.meta["layout"] == "folders" and paths.meta["counts"] == {"train": 4, "test": 4}


def test_even_resize_shape():
    assert even_resize_shape(240, 320, 128) == (128, 170)
    assert even_resize_shape(33, 47, 0) == (32, 46)


def test_samples_are_written_in_a_seeded_random_order_not_by_class(tmp_path):
    root = tmp_path / "clips"
    for ci, cls in enumerate(["a", "b", "c"]):
        (root / cls).mkdir(parents=True)
        for v in range(5):
            (root / cls / f"{v}.mp4").write_bytes(_video(ci * 5 + v, frames=2, h=16, w=16))
    runs = [[json.loads(m["json"]) for m in read_shards(convert_video_folder(root, tmp_path / f"o{i}", short_side=0, seed=s)
                                                         .splits["train"]).values()] for i, s in enumerate((0, 0, 1))]
    labels = [m["label"] for m in runs[0]]
    assert labels != sorted(labels) and sum(x != y for x, y in zip(labels, labels[1:])) > 3  # classes mixed
    assert all(m["index"] == 5 * m["label"] + int(m["path"].split("/")[1][0]) for m in runs[0])  # index: sorted path position
    assert runs[0] == runs[1] and runs[0] != runs[2]
