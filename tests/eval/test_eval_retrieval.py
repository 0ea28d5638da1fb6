import numpy as np
import pytest
import torch

from contrastlab.platform.eval import retrieval_recall

r2 = 2**-0.5
# Images are the basis vectors e1, e2, e3, so a cosine score is exactly a caption component.
IMAGES = np.eye(3, dtype=np.float32)
CAPTIONS = np.array(
    [
        [1, 0, 0],  # t0 -> image 0
        [1, 0, 1],  # t1 -> image 0   (normalised: (r2, 0, r2))
        [1, 1, 0],  # t2 -> image 1   ties images 0 and 1
        [0, 1, 0],  # t3 -> image 2
        [0, 1, 1],  # t4 -> image 2   ties images 1 and 2
    ],
    dtype=np.float32,
)
TEXT_TO_IMAGE = np.array([0, 0, 1, 2, 2])
# t2i ranks (0-based; equal scores ordered by image index):
#   t0 -> 0; t1 -> 0 (ties image 2, which comes later); t2 -> 1 (image 0 ties it, comes first);
#   t3 -> 2 (image 1 scores 1 > 0, image 0 ties at 0 and comes first); t4 -> 1 (image 1 ties first)
#   R@1 = 2/5, R@2 = 4/5, R@3 = 5/5
# i2t (image row over t0..t4; equal scores ordered by caption index):
#   image 0: (1, r2, r2, 0, 0), best own t0 -> rank 0
#   image 1: (0, 0, r2, 1, r2), own t2: t3 beats it, t4 ties but comes later -> rank 1
#   image 2: (0, r2, 0, 0, r2), best own t4: t1 ties it and comes first -> rank 1
#   R@1 = 1/3, R@2 = 3/3
EXPECTED = {"i2t_r1": 1 / 3, "i2t_r2": 1.0, "i2t_r3": 1.0, "t2i_r1": 0.4, "t2i_r2": 0.8, "t2i_r3": 1.0}


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 100])
def test_multi_caption_hand_case_with_ties(chunk_size):
    out = retrieval_recall(IMAGES, CAPTIONS, TEXT_TO_IMAGE, ks=(1, 2, 3), chunk_size=chunk_size)
    assert out == pytest.approx(EXPECTED)
    # K = 1: the ties sit exactly at the top-1 cut, the exact fallback must decide them
    assert retrieval_recall(IMAGES, CAPTIONS, TEXT_TO_IMAGE, ks=(1,), chunk_size=chunk_size) == pytest.approx(
        {"i2t_r1": 1 / 3, "t2i_r1": 0.4}
    )


def test_torch_input_and_image_without_caption():
    t = retrieval_recall(torch.from_numpy(IMAGES), torch.from_numpy(CAPTIONS), torch.from_numpy(TEXT_TO_IMAGE), ks=(1, 2, 3))
    assert t == pytest.approx(EXPECTED)
    # A 4th image (e1 + 0.5 e2)/sqrt(1.25) = (0.894, 0.447, 0) with no caption: left out of i2t
    # (unchanged), still a distractor for t2i. Its scores: t0 0.894 < 1 (rank stays 0);
    # t1 0.632 < r2 (stays 0); t2 0.949 > r2 (rank 1 -> 2); t3 0.447 > 0 (rank 2 -> 3);
    # t4 0.316 < r2 (stays 1). Ranks 0, 0, 2, 3, 1: R@1 = 2/5, R@2 = 3/5, R@3 = 4/5.
    imgs = np.vstack([IMAGES, [[1, 0.5, 0]]]).astype(np.float32)
    out = retrieval_recall(imgs, CAPTIONS, TEXT_TO_IMAGE, ks=(1, 2, 3), chunk_size=2)
    assert out == pytest.approx({"i2t_r1": 1 / 3, "i2t_r2": 1.0, "i2t_r3": 1.0, "t2i_r1": 0.4, "t2i_r2": 0.6, "t2i_r3": 0.8})


def _reference_scores(img, txt):
    """Cosine scores, each pair computed on its own in float64. Not a BLAS matmul: OpenBLAS's float32
    matmul on an AMD EPYC host gave two identical image rows different scores (they fall in different
    kernel tiles), so exact duplicates were no longer ties and the reference broke them by rounding."""
    img = img.astype(np.float64) / np.linalg.norm(img.astype(np.float64), axis=1, keepdims=True)
    txt = txt.astype(np.float64) / np.linalg.norm(txt.astype(np.float64), axis=1, keepdims=True)
    return (img[:, None, :] * txt[None, :, :]).sum(axis=2)


def _reference(img, txt, owner, ks):
    s = _reference_scores(img, txt)
    out = {}
    i2t, t2i = [], []
    for i in range(len(img)):
        order = np.lexsort((np.arange(s.shape[1]), -s[i]))  # score descending, then index
        own = np.flatnonzero(owner[order] == i)
        if len(own):
            i2t.append(own[0])
    for j in range(len(txt)):
        order = np.lexsort((np.arange(s.shape[0]), -s[:, j]))
        t2i.append(np.flatnonzero(order == owner[j])[0])
    for k in ks:
        out[f"i2t_r{k}"] = np.mean(np.array(i2t) < k)
    for k in ks:
        out[f"t2i_r{k}"] = np.mean(np.array(t2i) < k)
    return out


def test_random_against_brute_force():
    rng = np.random.default_rng(0)
    n_img = 97
    img = rng.normal(size=(n_img, 24)).astype(np.float32)
    owner = np.concatenate([np.arange(n_img), rng.integers(0, n_img, 150)])  # 1 to several captions each
    rng.shuffle(owner)
    txt = (img[owner] + 1.2 * rng.normal(size=(len(owner), 24))).astype(np.float32)
    ks = (1, 5, 10)
    ref = _reference(img, txt, owner, ks)
    assert 0.1 < ref["t2i_r1"] < 0.9  # meaningful
    for chunk in (1, 16, 1000):
        assert retrieval_recall(img, txt, owner, ks=ks, chunk_size=chunk) == pytest.approx(ref)


def test_random_with_duplicates_and_uncaptioned_images_against_brute_force():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(60, 8)).astype(np.float32)
    img[40:50] = img[10:20]  # duplicate images: exact ties in every caption's ranking
    owner = rng.integers(0, 45, 120)  # images 45..59 have no caption (distractors only)
    txt = (img[owner] + 1.0 * rng.normal(size=(120, 8))).astype(np.float32)
    txt[100:110] = txt[0:10]  # duplicate captions: exact ties in image rows
    ks = (1, 2, 5)
    ref = _reference(img, txt, owner, ks)
    # The premise: duplicates are exact ties in the reference, and every other pair of scores in a
    # row or column is far apart compared with float32 rounding, so only the tie rule can differ.
    s = _reference_scores(img, txt)
    assert np.array_equal(s[10:20], s[40:50]) and np.array_equal(s[:, 0:10], s[:, 100:110])
    distinct = np.delete(np.delete(s, np.s_[40:50], axis=0), np.s_[100:110], axis=1)
    assert min(np.diff(np.sort(distinct, axis=1), axis=1).min(), np.diff(np.sort(distinct, axis=0), axis=0).min()) > 1e-6
    # one block, so each duplicate pair is scored by the same matmul call in the implementation
    assert retrieval_recall(img, txt, owner, ks=ks, chunk_size=1000) == pytest.approx(ref)


def test_bad_owner_raises():
    with pytest.raises(ValueError):
        retrieval_recall(IMAGES, CAPTIONS, [0, 0, 1, 2, 3])
    with pytest.raises(ValueError):
        retrieval_recall(IMAGES, CAPTIONS, [0, 0, 1])
