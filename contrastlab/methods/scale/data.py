"""SCALE's per-sample CPU preprocessing: five modalities, masking, a modality-present mask.

Members (DESIGN §3 product schema): `jpg` (image), `txt` (title), `table.json` (attribute pairs),
`mp4` (video), `wav` (audio), `json` (category, index); only `json` is required. A missing member
gives a zero tensor of the fixed shape, no masked positions and `present[m] = 0`; a present member
that does not decode raises `DecodeError` (from the media codecs), so the bad-sample policy applies.

Output columns, modality order [text, image, table, video, audio] (`present`, float (5,)):
    text_ids (Lt,) int64, text_labels (Lt,)          MLM: 15 %, 80/10/10; labels -1 elsewhere
    table_ids (Lp,) int64, table_labels (Lp,)        MEM: each pair with p=0.15, all property or all value tokens
    image_feats (R, F_i), image_boxes (R, 5)         regions: grid patches, boxes [x1/W, y1/H, x2/W, y2/H, area]
    video_feats (T, F_v)                             T sampled frames, each resized and flattened
    audio_feats (A, F_a)                             mel power spectrogram (card c orientation: mel bins as tokens)
    image_target/_mask, video_target/_mask, audio_target/_mask   (train) the regression targets and masked positions
    label int64 (json category, else label, else -1), audio_noise int64 (1/0, -1 unknown)
Train-only masks come from the per-sample `rng`; eval returns no masks, targets or labels.

Tokens: a hashed word vocabulary (lower-cased words, crc32 mod vocab), so any title or table
tokenises without a vocabulary file; [PAD]=0 [CLS]=1 [SEP]=2 [MASK]=3.
"""
from __future__ import annotations

import json
import re
import zlib

import numpy as np

from contrastlab.methods.scale.config import SCALEConfig
from contrastlab.platform.data.codecs import DecodeError
from contrastlab.platform.data.media import clip_indices, decode_mp4, decode_wav, log_mel

PAD, CLS, SEP, MASK = 0, 1, 2, 3
N_SPECIAL = 5  # 4 is reserved ([UNK])
IGNORE = -1
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


class HashTokenizer:
    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def words(self, text: str) -> list[int]:
        return [N_SPECIAL + zlib.crc32(w.encode("utf-8")) % (self.vocab_size - N_SPECIAL) for w in _WORD.findall(str(text).lower())]

    def encode(self, text: str, length: int) -> np.ndarray:
        ids = [CLS, *self.words(text)[: length - 2], SEP]
        out = np.zeros(length, np.int64)
        out[: len(ids)] = ids
        return out

    def encode_pairs(self, pairs: list[tuple[str, str]], length: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """[CLS] p1 v1 p2 v2 ... [SEP] -> (ids, spans): spans = [(start, end)] per property and per value,
        in the order p1, v1, p2, v2, ... (only complete pieces that fit are kept)."""
        ids, spans = [CLS], []
        for prop, value in pairs:
            pw, vw = self.words(prop), self.words(value)
            if not pw or not vw or len(ids) + len(pw) + len(vw) > length - 1:
                continue
            spans.append((len(ids), len(ids) + len(pw)))
            ids += pw
            spans.append((len(ids), len(ids) + len(vw)))
            ids += vw
        ids.append(SEP)
        out = np.zeros(length, np.int64)
        out[: len(ids)] = ids
        return out, spans


def parse_table(table) -> list[tuple[str, str]]:
    """{"pairs": [[p, v], ...]}, {p: v}, [[p, v], ...] or the official "p#:#v#;#p#:#v" string -> [(p, v)]."""
    if isinstance(table, (bytes, str)):
        text = table.decode("utf-8") if isinstance(table, bytes) else table
        try:
            table = json.loads(text)
        except ValueError:
            return [tuple(item.split("#:#", 1)) for item in text.split("#;#") if "#:#" in item]
    if isinstance(table, dict):
        table = table["pairs"] if "pairs" in table else list(table.items())
    if not isinstance(table, list):
        raise DecodeError(f"table member is neither pairs nor a mapping: {type(table).__name__}")
    return [(str(p), str(v)) for p, v in table]


# --------------------------------------------------------------------------- masking (card d)
def mask_mlm(ids: np.ndarray, prob: float, vocab_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of the non-special tokens: select `prob`, of those 80 % [MASK], 10 % random, 10 % kept."""
    ids = ids.copy()
    labels = np.full_like(ids, IGNORE)
    candidates = ids >= N_SPECIAL
    selected = candidates & (rng.random(ids.shape) < prob)
    labels[selected] = ids[selected]
    roll = rng.random(ids.shape)
    ids[selected & (roll < 0.8)] = MASK
    rand = selected & (roll >= 0.8) & (roll < 0.9)
    ids[rand] = rng.integers(N_SPECIAL, vocab_size, size=int(rand.sum()))
    return ids, labels


def mask_mem(ids: np.ndarray, spans: list[tuple[int, int]], prob: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Masked entity modelling: each (property, value) pair picked with `prob`; then, 50/50, all tokens
    of the property or all tokens of the value become [MASK] (labelled); nothing else is labelled."""
    ids = ids.copy()
    labels = np.full_like(ids, IGNORE)
    for k in range(0, len(spans), 2):
        if rng.random() >= prob:
            continue
        start, end = spans[k] if rng.random() < 0.5 else spans[k + 1]
        labels[start:end] = ids[start:end]
        ids[start:end] = MASK
    return ids, labels


def mask_features(feats: np.ndarray, prob: float, zero_prob: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Select positions with `prob`; zero `zero_prob` of them. Returns (masked input, selected (L,) bool)."""
    selected = rng.random(len(feats)) < prob
    zeroed = selected & (rng.random(len(feats)) < zero_prob)
    out = feats.copy()
    out[zeroed] = 0.0
    return out, selected


# --------------------------------------------------------------------------- per-modality features
def image_regions(img: np.ndarray, cfg: SCALEConfig) -> tuple[np.ndarray, np.ndarray]:
    """uint8 HxWx3 (or HxW) -> (regions (g*g, (S/g)^2*3) in [0, 1], boxes (g*g, 5))."""
    from contrastlab.platform.data.augment import resize

    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[:2] != (cfg.image_size, cfg.image_size):
        img = resize(img, cfg.image_size)
    g, p = cfg.image_grid, cfg.image_size // cfg.image_grid
    patches = img[:, :, :3].reshape(g, p, g, p, 3).transpose(0, 2, 1, 3, 4).reshape(g * g, p * p * 3)
    ys, xs = np.divmod(np.arange(g * g), g)
    boxes = np.stack([xs / g, ys / g, (xs + 1) / g, (ys + 1) / g, np.full(g * g, 1.0 / (g * g))], axis=1)
    return patches.astype(np.float32) / 255.0, boxes.astype(np.float32)


def image_boxes(cfg: SCALEConfig) -> np.ndarray:
    return image_regions(np.zeros((cfg.image_size, cfg.image_size, 3), np.uint8), cfg)[1]


def video_features(data: bytes, cfg: SCALEConfig, rng: np.random.Generator | None) -> np.ndarray:
    """mp4 bytes -> (T, frame_size^2 * 3) in [0, 1]: a clip of T frames (random start in training)."""
    frames = decode_mp4(data, size=(cfg.frame_size, cfg.frame_size))
    idx = clip_indices(len(frames), cfg.video_frames, cfg.video_stride, rng)
    clip = frames[np.minimum(idx, len(frames) - 1)]
    return clip.reshape(cfg.video_frames, -1).astype(np.float32) / 255.0


def audio_features(data: bytes, cfg: SCALEConfig, rng: np.random.Generator | None) -> np.ndarray:
    """wav bytes -> (A, F) mel spectrogram: resampled to audio_rate, cropped (random start in training)
    or zero-padded to audio_seconds; power mel (or log-mel), each time frame standardised over the mel
    bins (card c); tokens are mel bins when `audio_tokens_are_mels` (the official orientation)."""
    wave, rate = decode_wav(data)
    if rate != cfg.audio_rate:
        n = max(1, int(round(len(wave) * cfg.audio_rate / rate)))
        wave = np.interp(np.linspace(0, len(wave) - 1, n), np.arange(len(wave)), wave).astype(np.float32)
    n = int(round(cfg.audio_rate * cfg.audio_seconds))
    if len(wave) > n:
        start = int(rng.integers(0, len(wave) - n + 1)) if rng is not None else 0
        wave = wave[start:start + n]
    else:
        wave = np.pad(wave, (0, n - len(wave)))
    mel = log_mel(wave, cfg.audio_rate, n_mels=cfg.n_mels, n_fft=cfg.n_fft, hop=cfg.audio_hop, frames=cfg.audio_frames)
    if not cfg.audio_log:
        mel = np.exp(mel) - 1e-6  # back to power (log_mel adds 1e-6 before the log)
    mel = (mel - mel.mean(axis=0, keepdims=True)) / (mel.std(axis=0, keepdims=True) + 1e-5)
    mel = mel.astype(np.float32)
    return mel if cfg.audio_tokens_are_mels else np.ascontiguousarray(mel.T)


# --------------------------------------------------------------------------- the sample function
def scale_sample_fn(cfg: SCALEConfig, split: str):
    tok = HashTokenizer(cfg.vocab_size)
    train = split == "train"
    boxes = image_boxes(cfg)
    a_shape = cfg.audio_shape

    def fn(sample: dict, rng: np.random.Generator) -> dict:
        info = sample.get("json") or {}
        out: dict = {}
        present = np.zeros(5, np.float32)  # text, image, table, video, audio
        text = np.zeros(cfg.title_len, np.int64)
        table, spans = np.zeros(cfg.table_len, np.int64), []
        img = np.zeros((cfg.n_regions, cfg.region_dim), np.float32)
        vid = np.zeros((cfg.video_frames, cfg.frame_dim), np.float32)
        aud = np.zeros(a_shape, np.float32)
        if "txt" in sample:
            text, present[0] = tok.encode(sample["txt"], cfg.title_len), 1
        if "jpg" in sample:
            img, present[1] = image_regions(sample["jpg"], cfg)[0], 1
        if "table.json" in sample:
            table, spans = tok.encode_pairs(parse_table(sample["table.json"]), cfg.table_len)
            present[2] = 1
        if "mp4" in sample:
            vid, present[3] = video_features(sample["mp4"], cfg, rng if train else None), 1
        if "wav" in sample:
            aud, present[4] = audio_features(sample["wav"], cfg, rng if train else None), 1
        if train and cfg.modality_dropout > 0 and present.sum() > 1:
            drop = (rng.random(5) < cfg.modality_dropout) & (present > 0)
            if drop.sum() >= present.sum():  # keep at least one modality
                drop[rng.choice(np.flatnonzero(present))] = False
            present[drop] = 0
            text = text if present[0] else np.zeros_like(text)
            img = img if present[1] else np.zeros_like(img)
            table, spans = (table, spans) if present[2] else (np.zeros_like(table), [])
            vid = vid if present[3] else np.zeros_like(vid)
            aud = aud if present[4] else np.zeros_like(aud)
        if train:
            out["text_ids"], out["text_labels"] = mask_mlm(text, cfg.mlm_prob, cfg.vocab_size, rng)
            out["table_ids"], out["table_labels"] = mask_mem(table, spans, cfg.mem_pair_prob, rng)
            for name, feats, prob, zero, m in (("image", img, cfg.mrm_prob, cfg.mrm_zero_prob, 1),
                                               ("video", vid, cfg.mfm_prob, 1.0, 3), ("audio", aud, cfg.mam_prob, 1.0, 4)):
                masked, selected = mask_features(feats, prob, zero, rng)
                out[f"{name}_feats"], out[f"{name}_target"] = masked, feats
                out[f"{name}_mask"] = selected & bool(present[m])  # a missing modality has no masked positions
        else:
            out["text_ids"], out["table_ids"] = text, table
            out["image_feats"], out["video_feats"], out["audio_feats"] = img, vid, aud
        out["image_boxes"] = boxes
        out["present"] = present
        label = info.get("category", info.get("label", -1))
        out["label"] = np.int64(label if isinstance(label, (int, np.integer)) and not isinstance(label, bool) else -1)
        noise = info.get("audio_noise")
        out["audio_noise"] = np.int64(-1 if noise is None else int(bool(noise)))
        return out

    return fn
