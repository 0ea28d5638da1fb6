"""`fashion-products`: five-modality products (image, title, attribute table, video, audio) built
from real Fashion-MNIST items, for SCALE (method card `scale.md`, section g), any modality possibly
missing.

Per product (a Fashion-MNIST item, its class = the category):
- attributes: colour, material, pattern and price band, sampled per product;
- `key.jpg`: the item tinted in its colour with its pattern (stripes / dots / checks) applied;
- `key.txt`: a title, "[filler] colour [pattern] material synonym [filler]"; with probability
  `contradiction` its colour is replaced by a wrong one (noisy titles, as in M5Product);
- `key.table.json`: {"pairs": [[property, value], ...]}: category, colour, material, pattern, price,
  each pair dropped with probability `table_drop` and each value replaced by a wrong one with
  probability `contradiction`;
- `key.mp4`: a short H.264 clip of the image (`frames` frames of `video_size` px) with one motion:
  pan, zoom or rotation;
- `key.wav`: "colour class" spoken by `espeak-ng` when it is installed (synthesised once per
  unique phrase, cached) else a class- and colour-dependent tone sequence; meta["audio_source"]
  records which (`ensure_dataset` turns audio="auto" into "espeak" or "tones" before computing the
  cache key, so the key names the backend; the audio's random jitter has its own per-sample
  generator, so every other member is the same whichever backend made the audio). With
  probability `noise_audio` the track is pure white noise instead (json "audio_noise": true):
  present but uninformative, the case SCALE should down-weight;
- `key.json`: {"index", "split", "category", "label", "class", "attributes", "has_<modality>",
  "audio_noise", "motion"}.
Each of image, text, table, video and audio is absent (no member at all, `has_<m>` false) with
its own probability `missing_<m>`; card g defaults: video missing for 40 %, audio noise for 50 %.
train = the first n_train official train images, test = the first n_test official test images;
`index` is the official position (test offset by 60,000).
"""
from __future__ import annotations

import functools
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np

from contrastlab.platform.data.codecs import encode_jpeg

from ._common import DatasetSpec, check_count, log, resize_batch, sample_key, write_split
from .fashion_captions import CLASSNAMES, SYNONYMS
from .fashion_mnist import CLASSES, TEST_INDEX_OFFSET, fashion_mnist_digest, load_subset

MODALITY_NAMES = ("image", "text", "table", "video", "audio")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 220), "yellow": (230, 210, 40),
    "purple": (150, 60, 190), "orange": (240, 140, 30), "white": (235, 235, 235), "pink": (240, 130, 180),
}
MATERIALS = ["cotton", "leather", "wool", "denim", "silk", "polyester"]
PATTERNS = ["plain", "striped", "dotted", "checked"]
PRICE_BANDS = ["budget", "mid-range", "premium", "luxury"]
FILLERS = ["new", "hot sale", "free shipping", "2024", "best seller", "official store", "classic", "trendy"]
MOTIONS = ("pan", "zoom", "rotation")
AUDIO_SOURCES = ("auto", "espeak", "tones")


# --------------------------------------------------------------------------- attributes and text
def sample_attributes(label: int, rng: np.random.Generator) -> dict[str, str]:
    material = MATERIALS[rng.integers(len(MATERIALS))]
    # price band depends on the material (silk/leather/wool dearer), so the table carries real structure
    dear = material in ("silk", "leather", "wool")
    price = PRICE_BANDS[min(3, int(rng.integers(0, 3)) + (1 if dear else 0))]
    return {
        "category": CLASSNAMES[label],
        "colour": list(COLOURS)[rng.integers(len(COLOURS))],
        "material": material,
        "pattern": PATTERNS[rng.integers(len(PATTERNS))],
        "price": price,
    }


def _other(values: list[str], value: str, rng: np.random.Generator) -> str:
    choices = [v for v in values if v != value]
    return choices[rng.integers(len(choices))]


def make_title(attrs: dict[str, str], label: int, contradiction: float, rng: np.random.Generator) -> str:
    colour = attrs["colour"] if rng.random() >= contradiction else _other(list(COLOURS), attrs["colour"], rng)
    words = SYNONYMS[CLASSNAMES[label]]
    parts = [colour]
    if attrs["pattern"] != "plain" and rng.random() < 0.7:
        parts.append(attrs["pattern"])
    if rng.random() < 0.8:
        parts.append(attrs["material"])
    parts.append(words[rng.integers(len(words))])
    if rng.random() < 0.4:
        parts.insert(0, FILLERS[rng.integers(len(FILLERS))])
    if rng.random() < 0.3:
        parts.append(FILLERS[rng.integers(len(FILLERS))])
    return " ".join(parts)


_VALUES = {"category": CLASSNAMES, "colour": list(COLOURS), "material": MATERIALS, "pattern": PATTERNS, "price": PRICE_BANDS}


def make_table(attrs: dict[str, str], drop: float, contradiction: float, rng: np.random.Generator) -> list[list[str]]:
    pairs = []
    for prop, value in attrs.items():
        if rng.random() < drop:
            continue
        if rng.random() < contradiction:
            value = _other(_VALUES[prop], value, rng)
        pairs.append([prop, value])
    return pairs or [["category", attrs["category"]]]


# --------------------------------------------------------------------------- image and video
def render_product(grey: np.ndarray, attrs: dict[str, str]) -> np.ndarray:
    """(S, S) uint8 item -> (S, S, 3) uint8: intensity x colour, modulated by the pattern."""
    s = grey.shape[0]
    yy, xx = np.mgrid[0:s, 0:s]
    period = max(4, s // 6)
    pattern = attrs["pattern"]
    if pattern == "striped":
        mod = np.where((yy // (period // 2)) % 2 == 0, 1.0, 0.45)
    elif pattern == "dotted":
        mod = np.where(((yy % period) - period / 2) ** 2 + ((xx % period) - period / 2) ** 2 < (period / 3.5) ** 2, 0.35, 1.0)
    elif pattern == "checked":
        mod = np.where(((yy // (period // 2)) + (xx // (period // 2))) % 2 == 0, 1.0, 0.5)
    else:
        mod = np.ones((s, s))
    intensity = grey.astype(np.float32) / 255.0 * mod
    rgb = intensity[:, :, None] * np.asarray(COLOURS[attrs["colour"]], np.float32)[None, None]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def make_clip(image: np.ndarray, motion: str, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) uint8 -> (frames, size, size, 3) uint8 with one camera motion."""
    from scipy import ndimage

    base = resize_batch(image[None], size)[0].astype(np.float32)
    out = np.empty((frames, size, size, 3), np.uint8)
    t = np.linspace(0.0, 1.0, frames)
    if motion == "pan":
        dx, dy = rng.uniform(-0.3, 0.3, size=2) * size
        for f in range(frames):
            out[f] = np.clip(ndimage.shift(base, (dy * t[f], dx * t[f], 0), order=1, mode="constant"), 0, 255).astype(np.uint8)
    elif motion == "zoom":
        end = rng.uniform(1.3, 1.8)
        for f in range(frames):
            z = 1.0 + (end - 1.0) * t[f]
            crop = max(2, int(round(size / z)))
            a = (size - crop) // 2
            out[f] = resize_batch(base[a:a + crop, a:a + crop].astype(np.uint8)[None], size)[0]
    else:  # rotation
        angle = rng.uniform(30, 90) * rng.choice([-1, 1])
        for f in range(frames):
            out[f] = np.clip(ndimage.rotate(base, angle * t[f], axes=(0, 1), reshape=False, order=1, mode="constant"), 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- audio
def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return wave.astype(np.float32)
    n = int(round(len(wave) * target / rate))
    return np.interp(np.linspace(0, len(wave) - 1, n), np.arange(len(wave)), wave).astype(np.float32)


def _fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    return wave[:n] if len(wave) >= n else np.pad(wave, (0, n - len(wave)))


class Speaker:
    """'colour class' as audio: espeak-ng (cached per phrase) or the tone fallback."""

    def __init__(self, source: str, rate: int, seconds: float):
        self.rate, self.n = rate, int(round(rate * seconds))
        self.espeak = shutil.which("espeak-ng") if source in ("auto", "espeak") else None
        if source == "espeak" and self.espeak is None:
            raise ValueError("audio='espeak' but espeak-ng is not installed (apt-get install espeak-ng), use audio='auto' or 'tones'")
        self.source = "espeak-ng" if self.espeak else "tones"
        self._cache: dict[str, np.ndarray] = {}

    def _speak(self, phrase: str) -> np.ndarray:
        import soundfile as sf

        if phrase not in self._cache:
            wav = subprocess.run([self.espeak, "--stdout", "-s", "200", phrase], check=True, capture_output=True, timeout=30).stdout
            wave, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
            self._cache[phrase] = _resample(wave.mean(axis=1), rate, self.rate)
        return self._cache[phrase]

    def _tones(self, label: int, colour: str) -> np.ndarray:
        """Three 0.25 s notes from the class, one from the colour (A4 semitone steps)."""
        ci = list(COLOURS).index(colour)
        semis = [label * 2, label * 2 + 4, label * 2 + 7, 24 + ci * 2]
        t = np.arange(int(0.25 * self.rate)) / self.rate
        env = np.minimum(1.0, np.minimum(t, t[-1] - t) * 40)
        return np.concatenate([0.5 * env * np.sin(2 * np.pi * 220.0 * 2 ** (s / 12) * t) for s in semis]).astype(np.float32)

    def __call__(self, label: int, colour: str, rng: np.random.Generator) -> np.ndarray:
        wave = self._speak(f"{colour} {CLASSNAMES[label]}") if self.espeak else self._tones(label, colour)
        wave = wave * rng.uniform(0.6, 1.0) + rng.normal(0.0, 0.005, size=len(wave)).astype(np.float32)
        offset = int(rng.integers(0, max(1, self.n // 10)))  # a short random lead-in
        return np.clip(_fit_length(np.concatenate([np.zeros(offset, np.float32), wave]), self.n), -1, 1)

    def noise(self, rng: np.random.Generator) -> np.ndarray:
        return np.clip(rng.normal(0.0, rng.uniform(0.05, 0.3), size=self.n), -1, 1).astype(np.float32)


# --------------------------------------------------------------------------- samples
def _samples(split, images, labels, first_index, rng, speaker, p):
    from contrastlab.platform.data.media import encode_mp4, encode_wav

    for i, (grey, label) in enumerate(zip(images, labels)):
        index, label = first_index + i, int(label)
        attrs = sample_attributes(label, rng)
        has = {m: bool(rng.random() >= p[f"missing_{m}"]) for m in MODALITY_NAMES}
        audio_noise = bool(rng.random() < p["noise_audio"])
        motion = MOTIONS[rng.integers(len(MOTIONS))]
        # the audio draws come from their own per-sample generator: espeak waves and tones differ in length,
        # so drawing their jitter from `rng` made every later product depend on the audio backend
        audio_rng = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))
        product = render_product(grey, attrs)
        title = make_title(attrs, label, p["contradiction"], rng)
        pairs = make_table(attrs, p["table_drop"], p["contradiction"], rng)
        clip = make_clip(product, motion, p["frames"], p["video_size"], rng)
        wave = speaker.noise(audio_rng) if audio_noise else speaker(label, attrs["colour"], audio_rng)
        fields: dict[str, object] = {}
        if has["image"]:
            fields["jpg"] = encode_jpeg(product, quality=95)
        if has["text"]:
            fields["txt"] = title
        if has["table"]:
            fields["table.json"] = {"pairs": pairs}
        if has["video"]:
            fields["mp4"] = encode_mp4(clip, fps=8)
        if has["audio"]:
            fields["wav"] = encode_wav(wave, speaker.rate)
        fields["json"] = {
            "index": index, "split": split, "category": label, "label": label, "class": CLASSNAMES[label],
            "attributes": attrs, **{f"has_{m}": has[m] for m in MODALITY_NAMES},
            "audio_noise": audio_noise if has["audio"] else None, "motion": motion if has["video"] else None,
        }
        yield sample_key(index), fields


@functools.lru_cache(maxsize=None)
def _espeak_version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], check=True, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return " ".join(out.split()[:4])  # "eSpeak NG text-to-speech: 1.51"


def resolve_audio(params: dict) -> tuple[dict, dict]:
    """`DatasetSpec.resolve`: audio="auto" becomes the backend this machine will use ("espeak" when
    espeak-ng is installed, else "tones"), so the cache key names it; sources = the Fashion-MNIST files'
    digest and, for espeak, its version (its voices change the waves)."""
    audio = params["audio"]
    espeak = shutil.which("espeak-ng")
    if audio == "auto":
        audio = "espeak" if espeak else "tones"
    sources = {"fashion_mnist": fashion_mnist_digest()}
    if audio == "espeak" and espeak:
        sources["espeak"] = _espeak_version(espeak)
    return {**params, "audio": audio}, sources


def _check_prob(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def generate(out_dir: Path, *, seed: int, n_train: int, n_test: int, image_size: int, frames: int, video_size: int,
             audio: str, audio_rate: int, audio_seconds: float, missing_image: float, missing_text: float,
             missing_table: float, missing_video: float, missing_audio: float, noise_audio: float,
             contradiction: float, table_drop: float):
    check_count("image_size", image_size, 8, 256)
    check_count("frames", frames, 1, 64)
    check_count("video_size", video_size, 8, 128)
    check_count("audio_rate", audio_rate, 4000, 48000)
    if not 0.1 <= float(audio_seconds) <= 30:
        raise ValueError(f"audio_seconds must lie in [0.1, 30], got {audio_seconds!r}")
    if audio not in AUDIO_SOURCES:
        raise ValueError(f"audio must be one of {AUDIO_SOURCES}, got {audio!r}")
    p = {name: _check_prob(name, value) for name, value in dict(
        missing_image=missing_image, missing_text=missing_text, missing_table=missing_table, missing_video=missing_video,
        missing_audio=missing_audio, noise_audio=noise_audio, contradiction=contradiction, table_drop=table_drop).items()}
    p.update(frames=frames, video_size=video_size)
    speaker = Speaker(audio, audio_rate, float(audio_seconds))
    log(f"fashion-products: audio from {speaker.source}")
    splits = {}
    for stream, (split, n, offset) in enumerate((("train", n_train, 0), ("test", n_test, TEST_INDEX_OFFSET))):
        images, labels = load_subset(split, n)
        images = resize_batch(images, image_size)
        rng = np.random.default_rng([seed, stream])
        splits[split] = write_split(out_dir, split, _samples(split, images, labels, offset, rng, speaker, p), len(images), "fashion-products")
    meta = {
        "classes": CLASSES, "classnames": CLASSNAMES, "modality": "product", "modalities": list(MODALITY_NAMES),
        "attributes": {k: list(v) for k, v in _VALUES.items()}, "audio_source": speaker.source,
        "audio_phrase": "'<colour> <class>'" if speaker.source == "espeak-ng" else "tones(class, colour)",
        "audio_rate": audio_rate, "audio_seconds": float(audio_seconds), "frames": frames, "video_size": video_size,
        "image_size": image_size, "label_field": "category", **{k: v for k, v in p.items() if k not in ("frames", "video_size")},
    }
    return splits, meta


SPEC = DatasetSpec(
    name="fashion-products",
    description="five-modality products from real Fashion-MNIST items: tinted image, noisy title, attribute table, "
                "pan/zoom/rotation clip, spoken or tone audio (50% pure noise); video missing for 40%",
    defaults={
        "n_train": 4000, "n_test": 1000, "image_size": 32, "frames": 8, "video_size": 32, "audio": "auto",
        "audio_rate": 8000, "audio_seconds": 1.5, "missing_image": 0.0, "missing_text": 0.0, "missing_table": 0.05,
        "missing_video": 0.4, "missing_audio": 0.05, "noise_audio": 0.5, "contradiction": 0.1, "table_drop": 0.15,
    },
    choices={"audio": AUDIO_SOURCES},
    generate=generate,
    resolve=resolve_audio,
    # v2: each sample's audio jitter comes from its own generator, so images, titles, tables and clips no
    # longer depend on the audio backend (espeak waves consumed the shared stream differently from tones)
    version=2,
)
