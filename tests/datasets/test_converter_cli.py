"""`contrastlab data convert reid|hsi|voc` on the tiny public-layout fixtures of the converter tests."""
import scipy.io

from contrastlab.platform.datasets.cli import main
from test_hsi_converter import tiny_scene
from test_reid_converters import _jpg
from test_voc_converter import make_voc


def test_convert_reid_cli(tmp_path, capsys):
    root = tmp_path / "Market-1501-v15.09.15"
    for name in ("0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s3_077419_02.jpg"):
        _jpg(root / "bounding_box_train" / name)
    _jpg(root / "query" / "0001_c1s1_001051_00.jpg")
    _jpg(root / "bounding_box_test" / "0001_c2s1_000301_01.jpg")
    rc = main(["convert", "reid", str(tmp_path / "out"), "--source", f"market1501:{root}:market:seen", "--image-size", "32", "16"])
    assert rc == 0
    assert "train: 3 samples" in capsys.readouterr().out


def _pavia_u_files(folder) -> list[str]:
    """A tiny scene saved as PaviaU.mat + PaviaU_gt.mat: the converter's two positional inputs."""
    cube, gt = tiny_scene()
    scipy.io.savemat(folder / "PaviaU.mat", {"paviaU": cube})
    scipy.io.savemat(folder / "PaviaU_gt.mat", {"paviaU_gt": gt})
    return [str(folder / "PaviaU.mat"), str(folder / "PaviaU_gt.mat")]


def test_convert_hsi_cli(tmp_path, capsys):
    rc = main(["convert", "hsi", *_pavia_u_files(tmp_path), str(tmp_path / "out"), "--patch-size", "3", "--train-per-class", "2"])
    assert rc == 0 and "pixels:" in capsys.readouterr().out


def test_convert_voc_cli_and_bad_source(tmp_path, capsys):
    make_voc(tmp_path / "VOCdevkit" / "VOC2012")
    assert main(["convert", "voc", str(tmp_path / "VOCdevkit" / "VOC2012"), str(tmp_path / "out")]) == 0
    assert "val:" in capsys.readouterr().out
    assert main(["convert", "voc", str(tmp_path / "nowhere"), str(tmp_path / "out2")]) == 2
    assert "error:" in capsys.readouterr().err


def test_convert_video_cli(tmp_path, capsys):
    from test_video_folder import _video

    src = tmp_path / "videos"
    for cls in ("Walk", "Jump"):
        for i in range(2):
            (src / cls).mkdir(parents=True, exist_ok=True)
            (src / cls / f"v{i}.mp4").write_bytes(_video(i, frames=6, h=24, w=32))
    rc = main(["convert", "video", str(src), str(tmp_path / "out"), "--layout", "folders", "--test-fraction", "0.5", "--short-side", "24"])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "train:" in out and "test:" in out


def test_train_per_class_with_a_fraction_part_is_refused(tmp_path, capsys):
    """--train-per-class 10.5 used to be truncated to 10 silently."""
    rc = main(["convert", "hsi", *_pavia_u_files(tmp_path), str(tmp_path / "out"), "--patch-size", "3", "--train-per-class", "10.5"])
    assert rc == 2 and "--train-per-class 10.5" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_make_params_errors_name_the_key_and_bools_are_checked():
    import pytest

    from contrastlab.platform.datasets.cli import _parse_params

    with pytest.raises(ValueError, match="n_train='ten'.*integer"):
        _parse_params("fashion-scenes", ["n_train=ten"])
    with pytest.raises(ValueError, match="pair_prob='high'"):
        _parse_params("fashion-scenes", ["pair_prob=high"])
    with pytest.raises(ValueError, match="train_masks='maybe'.*true/false"):  # used to mean False silently
        _parse_params("fashion-scenes", ["train_masks=maybe"])
    flags = [_parse_params("fashion-scenes", [f"train_masks={t}"])["train_masks"] for t in ("TRUE", "1", "yes", "false", "0", "No")]
    assert flags == [True, True, True, False, False, False]


def test_hsi_mat_problems_are_one_line_errors_naming_the_file(tmp_path, capsys):
    cube, gt = tiny_scene()
    scipy.io.savemat(tmp_path / "scene.mat", {"a": cube, "b": cube[..., :2]})  # unknown scene, two 3-D variables
    scipy.io.savemat(tmp_path / "scene_gt.mat", {"labels": gt})
    args = ["convert", "hsi", str(tmp_path / "scene.mat"), str(tmp_path / "scene_gt.mat"), str(tmp_path / "out"), "--patch-size", "3"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "scene.mat" in err and "--cube-key" in err
    assert main(args + ["--cube-key", "a"]) == 0
    capsys.readouterr()
    # a MATLAB v7.3 file (HDF5 behind a 128-byte MAT header, version 0x0200): scipy.io raises NotImplementedError
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .".ljust(116)
    (tmp_path / "v73.mat").write_bytes(header + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 384)
    assert main(["convert", "hsi", str(tmp_path / "v73.mat"), str(tmp_path / "scene_gt.mat"), str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "v73.mat" in err and "v7.3" in err and "-v7" in err
