"""Per-sample CPU preprocessing for video shards (`key.mp4` + `key.json`), run inside Ray Data.

Train (card d): one video -> two clips of `clip_len` frames `frame_stride` apart at two distinct
random start indices (the same start when only one is possible), decoded in ONE pass over the
video; each clip independently RandomResizedCrop(crop, scale (crop_scale_min, 1)) + horizontal
flip, the same parameters for all its frames. Output uint8 (3, T, crop, crop) `clip_q` (the clip
FAME will merge) and `clip_k`; colour augmentations and FAME run on the Train worker.
Eval (card f): `eval_clips` uniformly spaced clips, centre crop, as uint8 (n, 3, T, crop, crop).
Both also emit `label` (json "label", else -1) and `bg_id` (json "bg_id", synthetic data only, else -1).

`cfg.decode_cache > 0` keeps up to that many fully decoded videos per sample-function copy (card i:
"cache decoded uint8 tensors for small-scale runs"): the first epoch decodes, later epochs index
the cached frames. Off by default; meant for the tiny embedded data in one process (run_local,
benchmarks), where decoding dominates the step time.
"""
from __future__ import annotations

import numpy as np

from contrastlab.methods.fame.augment import center_crop_clip, hflip_clip, random_resized_crop_clip
from contrastlab.platform.data.media import decode_mp4, probe_mp4


def clip_span(clip_len: int, stride: int) -> int:
    return (clip_len - 1) * stride + 1


def two_clip_starts(n_frames: int, clip_len: int, stride: int, rng: np.random.Generator) -> tuple[int, int]:
    """Two distinct random start frames (both 0 when the video allows only one clip position)."""
    room = max(0, n_frames - clip_span(clip_len, stride))
    if room == 0:
        return 0, 0
    a, b = rng.choice(room + 1, size=2, replace=False)
    return int(a), int(b)


def uniform_clip_starts(n_frames: int, clip_len: int, stride: int, n_clips: int) -> np.ndarray:
    """Start frames of `n_clips` clips spread uniformly over the video (eval; one clip = the centre)."""
    room = max(0, n_frames - clip_span(clip_len, stride))
    if n_clips == 1:
        return np.array([room // 2])
    return np.round(np.linspace(0, room, n_clips)).astype(np.int64)


def _num_frames(sample: dict) -> int:
    info = sample.get("json") or {}
    n = info.get("num_frames")
    return int(n) if isinstance(n, (int, np.integer)) and n > 0 else probe_mp4(sample["mp4"])["frames"]


def _labels(sample: dict) -> dict:
    info = sample.get("json") or {}
    out = {}
    for name in ("label", "bg_id"):
        value = info.get(name, -1)
        out[name] = np.int64(value if isinstance(value, (int, np.integer)) else -1)
    return out


class DecodedCache:
    """sample key -> all decoded frames, first come first kept, at most `capacity` videos."""

    def __init__(self, capacity: int):
        self.capacity, self.videos = capacity, {}

    def frames(self, sample: dict, indices: np.ndarray) -> np.ndarray:
        if self.capacity <= 0:
            return decode_mp4(sample["mp4"], indices)
        key = sample.get("__key__")
        video = self.videos.get(key)
        if video is None:
            video = decode_mp4(sample["mp4"])
            if key is not None and len(self.videos) < self.capacity:
                self.videos[key] = video
        return video[np.minimum(indices, len(video) - 1)]


def make_sample_fn(cfg, split: str):
    """sample_fn(sample, rng) -> dict of numpy arrays for the given split (see module doc)."""
    length, stride, crop = cfg.clip_len, cfg.frame_stride, cfg.crop_size
    offsets = stride * np.arange(length)
    cache = DecodedCache(getattr(cfg, "decode_cache", 0))

    def train(sample: dict, rng: np.random.Generator) -> dict:
        n = _num_frames(sample)
        s1, s2 = two_clip_starts(n, length, stride, rng)
        frames = cache.frames(sample, np.concatenate([s1 + offsets, s2 + offsets]))
        clips = []
        for clip in (frames[:length], frames[length:]):
            clip = hflip_clip(random_resized_crop_clip(clip, crop, rng, scale=(cfg.crop_scale_min, 1.0)), rng, cfg.flip_prob)
            clips.append(np.ascontiguousarray(clip.transpose(3, 0, 1, 2)))  # (3, T, H, W)
        return {"clip_q": clips[0], "clip_k": clips[1], **_labels(sample)}

    def evaluate(sample: dict, rng: np.random.Generator) -> dict:
        n = _num_frames(sample)
        starts = uniform_clip_starts(n, length, stride, cfg.eval_clips)
        frames = cache.frames(sample, (starts[:, None] + offsets[None]).reshape(-1))
        clips = center_crop_clip(frames, crop, cfg.eval_resize_ratio).reshape(len(starts), length, crop, crop, 3)
        return {"clips": np.ascontiguousarray(clips.transpose(0, 4, 1, 2, 3)), **_labels(sample)}

    return train if split == "train" else evaluate
