"""Hyperspectral patch shards and the .mat converter (card cvp.md §h items 6-7), on tiny fixtures
written in the public Indian Pines / Pavia University layout with scipy.io.savemat."""
import io
import json

import numpy as np
import pytest
import scipy.io

from contrastlab.platform.datasets.hsi import (convert_hsi, draw_train_test, extract_patches, load_hsi_mat, per_class_count,
                                               preprocess_cube)

from conftest import read_shards


def tiny_scene(h=7, w=6, b=5, seed=0):
    rng = np.random.default_rng(seed)
    cube = rng.uniform(0.1, 1.0, (h, w, b)).astype(np.float32)
    gt = rng.integers(0, 4, (h, w)).astype(np.uint8)  # 0 = unlabelled, classes 1..3
    gt[0, 0], gt[0, 1], gt[0, 2] = 1, 2, 3
    return cube, gt


def test_patch_centre_shape_and_reflect_padding():  # §h.6
    cube, _ = tiny_scene()
    p = extract_patches(cube, [3, 0], [2, 5], 5)
    assert p.shape == (2, 5, 5, 5)
    assert np.array_equal(p[0, :, 2, 2], cube[3, 2])
    assert np.array_equal(p[1, :, 2, 2], cube[0, 5])
    # reflect (not edge) padding: row -1 mirrors row 1, column 6 mirrors column 4
    assert np.array_equal(p[1, :, 1, 2], cube[1, 5])
    assert np.array_equal(p[1, :, 2, 3], cube[0, 4])
    with pytest.raises(ValueError, match="odd"):
        extract_patches(cube, [0], [0], 4)


def test_draw_exact_counts_disjoint_cover():  # §h.7
    labels = np.array([0] * 30 + [1] * 12 + [2] * 5 + [3] * 3 + [-1] * 7)
    train, test = draw_train_test(labels, 4, seed=1)
    assert [int((labels[train] == c).sum()) for c in range(4)] == [4, 4, 4, 1]  # class 3 (3 px < 4): half of it
    assert len(np.intersect1d(train, test)) == 0
    assert sorted(np.concatenate([train, test]).tolist()) == np.flatnonzero(labels >= 0).tolist()
    assert np.array_equal(draw_train_test(labels, 4, seed=1)[0], train)
    frac_train, _ = draw_train_test(labels, 0.1, seed=0)
    assert [int((labels[frac_train] == c).sum()) for c in range(4)] == [3, 1, 1, 1]
    assert per_class_count(100, 10) == 10 and per_class_count(20, 20, cap_half=False) == 20 and per_class_count(19, 20) == 9


def test_only_classes_smaller_than_n_are_halved():
    """Card cvp.md §f: "for a class with < n pixels take half of it"; §h.7: exactly n otherwise. A class of
    n..2n-1 pixels used to be halved too (min(n, n_class // 2))."""
    gt = np.zeros((6, 8), np.int64)  # tiny synthetic ground truth: classes of 15, 12, 10, 7 and 3 pixels, 1 unlabelled
    flat = gt.reshape(-1)
    flat[:15], flat[15:27], flat[27:37], flat[37:44], flat[44:47] = 1, 2, 3, 4, 5
    labels = flat - 1
    train, test = draw_train_test(labels, 10, seed=0)
    counts = [int((labels[train] == c).sum()) for c in range(5)]
    assert counts == [10, 10, 10, 3, 1]  # 15, 12, 10 px: exactly 10 (was 7, 6, 5); 7 and 3 px (< 10): half
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 47
    assert [per_class_count(n, 10) for n in (9, 10, 19, 20, 21)] == [4, 10, 10, 10, 10]


def test_preprocess_brightness_and_zscore():
    cube, _ = tiny_scene()
    z, stats = preprocess_cube(cube * 3.0, brightness_norm=True)
    z1, _ = preprocess_cube(cube, brightness_norm=True)
    assert np.allclose(z, z1, atol=1e-5)  # illumination removed
    assert np.allclose(z.reshape(-1, 5).mean(0), 0, atol=1e-5) and np.allclose(z.reshape(-1, 5).std(0), 1, atol=1e-4)
    assert len(stats["band_mean"]) == 5


@pytest.mark.parametrize("scene,cube_key,gt_key", [("Indian_pines_corrected", "indian_pines_corrected", "indian_pines_gt"),
                                                   ("PaviaU", "paviaU", "paviaU_gt")])
def test_convert_mat_layout(tmp_path, scene, cube_key, gt_key):
    cube, gt = tiny_scene()
    scipy.io.savemat(tmp_path / f"{scene}.mat", {cube_key: cube})
    scipy.io.savemat(tmp_path / f"{scene.split('_corrected')[0]}_gt.mat", {gt_key: gt})
    c2, g2 = load_hsi_mat(tmp_path / f"{scene}.mat", tmp_path / f"{scene.split('_corrected')[0]}_gt.mat")
    assert np.array_equal(c2, cube) and np.array_equal(g2, gt)
    paths = convert_hsi(tmp_path / f"{scene}.mat", tmp_path / f"{scene.split('_corrected')[0]}_gt.mat", tmp_path / "out",
                        patch_size=3, bands=[0, 2, 4], train_per_class=2, seed=0, include_unlabelled=True)
    samples = read_shards(paths.splits["pixels"])
    assert len(samples) == gt.size  # every pixel once (unlabelled included)
    z, _ = preprocess_cube(cube[..., [0, 2, 4]], True)
    roles = {"train": [], "test": []}
    for key, members in samples.items():
        info = json.loads(members["json"])
        patch = np.load(io.BytesIO(members["npy"]))
        assert patch.dtype == np.float16 and patch.shape == (3, 3, 3)
        assert info["index"] == int(key) == info["row"] * gt.shape[1] + info["col"]
        assert info["label"] == int(gt[info["row"], info["col"]]) - 1 and info["labelled"] == (info["label"] >= 0)
        assert np.allclose(patch[:, 1, 1], z[info["row"], info["col"]], atol=1e-2)
        if info["labelled"]:
            roles[info["split"]].append(info["label"])
        else:
            assert info["split"] == "unlabelled"
    for c in range(3):
        n_c = int((gt == c + 1).sum())
        assert roles["train"].count(c) == min(2, n_c // 2)
        assert roles["train"].count(c) + roles["test"].count(c) == n_c
    scene_json = json.loads((tmp_path / "out" / "scene.json").read_text())
    assert scene_json["bands"] == 3 and scene_json["patch_size"] == 3 and len(scene_json["band_std"]) == 3
    assert paths.meta["num_classes"] == 3


def test_convert_refuses_unknown_variables(tmp_path):
    cube, gt = tiny_scene()
    scipy.io.savemat(tmp_path / "a.mat", {"x": cube, "y": cube})
    scipy.io.savemat(tmp_path / "b.mat", {"g": gt})
    with pytest.raises(KeyError, match="cube_key"):
        load_hsi_mat(tmp_path / "a.mat", tmp_path / "b.mat")
    c, g = load_hsi_mat(tmp_path / "a.mat", tmp_path / "b.mat", cube_key="y")
    assert c.shape == (7, 6, 5) and g.shape == (7, 6)


def test_guess_scene_tells_pavia_centre_from_pavia_university(tmp_path):
    """"Pavia.mat" is Pavia Centre (9 other classes, variables pavia / pavia_gt), not Pavia University."""
    from contrastlab.platform.datasets.hsi import KNOWN_SCENES, guess_scene

    assert [guess_scene(n) for n in ("PaviaU.mat", "paviaU_gt.mat", "Pavia_University.mat")] == ["pavia_university"] * 3
    assert [guess_scene(n) for n in ("Pavia.mat", "Pavia_gt.mat")] == ["pavia_centre"] * 2
    assert KNOWN_SCENES["pavia_centre"]["classes"] == ["Water", "Trees", "Asphalt", "Self-Blocking Bricks", "Bitumen", "Tiles",
                                                       "Shadows", "Meadows", "Bare Soil"]
    cube, gt = tiny_scene()
    scipy.io.savemat(tmp_path / "Pavia.mat", {"pavia": cube, "other": cube[..., :2]})  # two 3-D variables: picked by name
    scipy.io.savemat(tmp_path / "Pavia_gt.mat", {"pavia_gt": gt})
    paths = convert_hsi(tmp_path / "Pavia.mat", tmp_path / "Pavia_gt.mat", tmp_path / "out", patch_size=3, train_per_class=1)
    assert paths.meta["scene"] == "pavia_centre" and paths.meta["classes"] == ["Water", "Trees", "Asphalt"]
