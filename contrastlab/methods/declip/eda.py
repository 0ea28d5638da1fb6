"""Easy Data Augmentation (EDA) of captions for DeCLIP's text view `ta` (card d "EDA").

Per caption one operation is chosen at random (card: uniformly among synonym replacement,
random swap and random deletion, the `textaugment` defaults; random insertion is available with
weight 0 by default):
  - "sr" synonym replacement: replace n_sr (1) words that have a synonym by a random synonym;
  - "ri" random insertion: n_ri (1) times, insert a synonym of a random word at a random position;
  - "rs" random swap: n_rs (1) times, swap two random words;
  - "rd" random deletion: delete each word with probability p_rd (0.1), keeping at least one.
A caption is never returned empty: an operation that would empty it returns the original.

Synonym source. The reference uses WordNet (nltk data), which is not installed and cannot be
downloaded here. Instead a small hand-written table of common caption words ships with this
module (`SYNONYM_GROUPS`: colours, shapes, sizes, positions, clothing, people, animals, vehicles,
places, objects, common verbs and adjectives; about 190 groups, 460 words). Each group is a set of mutual
synonyms, so the table is symmetric. A user table can be added from a JSON file
(`{"word": ["syn", ...], ...}`, symmetrised on load) with `load_synonyms(path)`. Lookup is on the
lower-cased word with surrounding punctuation stripped; a replaced word keeps that punctuation.
Runs in Ray Data CPU preprocessing (numpy RNG, no torch).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    # colours
    ("red", "crimson", "scarlet"),
    ("blue", "azure", "navy"),
    ("green", "emerald"),
    ("yellow", "golden"),
    ("orange", "tangerine"),
    ("purple", "violet"),
    ("pink", "rosy"),
    ("white", "ivory", "snowy"),
    ("black", "ebony"),
    ("grey", "gray", "ashen"),
    ("brown", "tan", "chestnut"),
    ("colorful", "colourful", "multicolored", "vibrant"),
    ("bright", "vivid", "brilliant"),
    ("dark", "dim", "shadowy"),
    ("pale", "faded"),
    # shapes and patterns
    ("circle", "ring", "disc"),
    ("square", "box"),
    ("triangle", "wedge"),
    ("star", "asterisk"),
    ("round", "circular"),
    ("rectangular", "oblong"),
    ("striped", "stripy"),
    ("dotted", "spotted"),
    ("pointed", "pointy"),
    # sizes and amounts
    ("big", "large", "huge", "sizable"),
    ("small", "little", "tiny"),
    ("tall", "towering"),
    ("short", "low"),
    ("long", "lengthy"),
    ("wide", "broad"),
    ("narrow", "thin", "slim"),
    ("many", "numerous", "lots"),
    ("several", "various"),
    # positions
    ("left", "leftmost"),
    ("right", "rightmost"),
    ("top", "upper"),
    ("bottom", "lower"),
    ("center", "centre", "middle"),
    ("above", "over"),
    ("below", "under", "beneath", "underneath"),
    ("near", "beside", "by"),
    ("corner", "edge"),
    ("inside", "within"),
    ("outside", "outdoors"),
    ("behind", "beyond"),
    ("front", "fore"),
    # people
    ("man", "guy", "gentleman"),
    ("woman", "lady"),
    ("person", "individual", "someone"),
    ("people", "folks", "persons"),
    ("child", "kid", "youngster"),
    ("children", "kids"),
    ("boy", "lad"),
    ("girl", "lass"),
    ("baby", "infant"),
    ("crowd", "throng"),
    ("player", "athlete"),
    # clothing
    ("shirt", "tee", "blouse"),
    ("jacket", "coat"),
    ("hat", "cap"),
    ("pants", "trousers", "slacks"),
    ("sneakers", "trainers"),
    ("shoes", "footwear"),
    ("dress", "gown", "frock"),
    ("sweater", "jumper", "pullover"),
    ("glasses", "spectacles"),
    ("bag", "handbag", "purse"),
    ("suit", "outfit"),
    ("wearing", "donning"),
    # animals
    ("dog", "hound", "pooch"),
    ("puppy", "pup"),
    ("cat", "kitty", "feline"),
    ("kitten", "kitty"),
    ("horse", "steed", "pony"),
    ("bird", "fowl"),
    ("cow", "cattle"),
    # vehicles and transport
    ("car", "automobile", "auto"),
    ("vehicle", "automobile"),
    ("bike", "bicycle", "cycle"),
    ("motorcycle", "motorbike"),
    ("plane", "airplane", "aircraft"),
    ("boat", "ship", "vessel"),
    ("truck", "lorry"),
    ("bus", "coach"),
    ("train", "locomotive"),
    # places and scenery
    ("street", "road", "avenue"),
    ("path", "trail", "pathway"),
    ("sidewalk", "pavement"),
    ("field", "meadow"),
    ("grass", "lawn", "turf"),
    ("forest", "woods", "woodland"),
    ("ocean", "sea"),
    ("beach", "shore", "seashore"),
    ("river", "stream", "creek"),
    ("lake", "pond"),
    ("mountain", "peak"),
    ("hill", "slope", "hillside"),
    ("sky", "heavens"),
    ("city", "town"),
    ("building", "structure", "edifice"),
    ("house", "home", "dwelling"),
    ("shop", "store"),
    ("market", "bazaar"),
    ("room", "chamber"),
    ("kitchen", "cookhouse"),
    ("bathroom", "restroom", "washroom"),
    ("park", "garden"),
    ("background", "backdrop"),
    ("scene", "view", "setting"),
    # objects
    ("picture", "photo", "photograph", "image"),
    ("rock", "stone", "boulder"),
    ("tree", "sapling"),
    ("flower", "blossom", "bloom"),
    ("sofa", "couch", "settee"),
    ("table", "desk"),
    ("chair", "seat"),
    ("bed", "cot"),
    ("plate", "dish"),
    ("cup", "mug"),
    ("phone", "telephone", "cellphone"),
    ("screen", "monitor", "display"),
    ("sign", "signboard", "placard"),
    ("food", "meal"),
    ("sandwich", "sub"),
    ("ball", "sphere"),
    ("toy", "plaything"),
    ("window", "pane"),
    ("door", "doorway"),
    ("wall", "partition"),
    ("floor", "ground"),
    ("shape", "form", "figure"),
    ("object", "item", "thing"),
    ("noise", "static", "grain"),
    ("pattern", "motif"),
    # verbs
    ("walking", "strolling", "wandering"),
    ("running", "jogging", "sprinting"),
    ("sitting", "seated"),
    ("standing", "upright"),
    ("looking", "gazing", "staring"),
    ("holding", "gripping", "clutching"),
    ("carrying", "bearing", "toting"),
    ("eating", "dining", "munching"),
    ("drinking", "sipping"),
    ("playing", "frolicking"),
    ("smiling", "grinning", "beaming"),
    ("laughing", "chuckling", "giggling"),
    ("jumping", "leaping", "hopping"),
    ("talking", "chatting", "speaking"),
    ("lying", "resting", "reclining"),
    ("waiting", "lingering"),
    ("throwing", "tossing", "hurling"),
    ("catching", "grabbing"),
    ("shows", "depicts", "displays"),
    ("showing", "depicting", "displaying"),
    ("contains", "includes", "has"),
    ("placed", "positioned", "located"),
    ("parked", "stationed"),
    ("flying", "soaring"),
    ("swimming", "bathing"),
    ("cooking", "preparing"),
    ("watching", "observing", "viewing"),
    # adjectives
    ("beautiful", "pretty", "lovely", "gorgeous"),
    ("happy", "cheerful", "joyful"),
    ("sad", "unhappy", "gloomy"),
    ("old", "aged", "ancient"),
    ("young", "youthful"),
    ("new", "fresh", "modern"),
    ("empty", "vacant", "bare"),
    ("busy", "crowded", "bustling"),
    ("quiet", "calm", "peaceful", "tranquil"),
    ("fast", "quick", "rapid", "speedy"),
    ("slow", "sluggish"),
    ("wet", "damp", "soaked"),
    ("dry", "arid"),
    ("clean", "tidy", "spotless"),
    ("dirty", "filthy", "grimy"),
    ("shiny", "glossy", "gleaming"),
    ("wooden", "timber"),
    ("metal", "metallic", "steel"),
    ("cute", "adorable"),
    ("funny", "amusing", "humorous"),
    ("delicious", "tasty"),
    ("sunny", "sunlit"),
    ("cloudy", "overcast"),
    ("hot", "warm"),
    ("cold", "chilly", "cool"),
)
"""Mutual-synonym groups; a word in several groups gets the union of their members."""

_CORE = re.compile(r"^(\W*)(.*?)(\W*)$")
OPERATIONS = ("sr", "ri", "rs", "rd")
DEFAULT_PROBS: Mapping[str, float] = {"sr": 1.0, "ri": 0.0, "rs": 1.0, "rd": 1.0}


def symmetrise(pairs: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Make a synonym map symmetric: b in map[a] implies a in map[b]. Keys are lower-cased."""
    out: dict[str, set[str]] = {}
    for word, syns in pairs.items():
        w = word.strip().lower()
        for s in syns:
            s = s.strip().lower()
            if s and w and s != w:
                out.setdefault(w, set()).add(s)
                out.setdefault(s, set()).add(w)
    return {w: sorted(s) for w, s in sorted(out.items())}


def _groups_to_map(groups: Iterable[Sequence[str]]) -> dict[str, list[str]]:
    pairs: dict[str, set[str]] = {}
    for group in groups:
        for w in group:
            pairs.setdefault(w, set()).update(x for x in group if x != w)
    return symmetrise(pairs)


BUILTIN_SYNONYMS: dict[str, list[str]] = _groups_to_map(SYNONYM_GROUPS)


def load_synonyms(path: str | None = None, use_builtin: bool = True) -> dict[str, list[str]]:
    """The built-in table, merged with a user JSON table `{"word": ["synonym", ...]}` if given."""
    table: dict[str, set[str]] = {w: set(s) for w, s in BUILTIN_SYNONYMS.items()} if use_builtin else {}
    if path is not None:
        with open(path, encoding="utf-8") as f:
            user = json.load(f)
        if not isinstance(user, dict) or not all(isinstance(v, list) for v in user.values()):
            raise ValueError(f"{path}: expected a JSON object mapping words to lists of synonyms")
        for w, syns in symmetrise(user).items():
            table.setdefault(w, set()).update(syns)
    return {w: sorted(s) for w, s in table.items()}


def _split_core(word: str) -> tuple[str, str, str]:
    m = _CORE.match(word)
    assert m is not None  # the pattern matches every string
    return m.group(1), m.group(2), m.group(3)


def _synonyms_of(word: str, table: Mapping[str, Sequence[str]]) -> Sequence[str]:
    return table.get(_split_core(word)[1].lower(), ())


def synonym_replacement(words: list[str], rng: np.random.Generator, table: Mapping[str, Sequence[str]], n: int = 1) -> list[str]:
    """Replace up to n distinct words that have synonyms by a random synonym (punctuation kept)."""
    out = list(words)
    candidates = [i for i, w in enumerate(out) if _synonyms_of(w, table)]
    for i in rng.permutation(len(candidates))[:n]:
        pos = candidates[int(i)]
        pre, core, post = _split_core(out[pos])
        syns = _synonyms_of(out[pos], table)
        out[pos] = pre + syns[int(rng.integers(len(syns)))] + post
    return out


def random_insertion(words: list[str], rng: np.random.Generator, table: Mapping[str, Sequence[str]], n: int = 1) -> list[str]:
    """n times: insert a synonym of a random word (that has one) at a random position."""
    out = list(words)
    for _ in range(n):
        candidates = [w for w in out if _synonyms_of(w, table)]
        if not candidates:
            break
        syns = _synonyms_of(candidates[int(rng.integers(len(candidates)))], table)
        out.insert(int(rng.integers(len(out) + 1)), syns[int(rng.integers(len(syns)))])
    return out


def random_swap(words: list[str], rng: np.random.Generator, n: int = 1) -> list[str]:
    """n times: swap two words at distinct random positions (no-op for fewer than 2 words)."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = (int(k) for k in rng.choice(len(out), size=2, replace=False))
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], rng: np.random.Generator, p: float = 0.1) -> list[str]:
    """Delete each word with probability p; if all would go, keep one random word."""
    if len(words) <= 1:
        return list(words)
    keep = rng.random(len(words)) >= p
    if not keep.any():
        return [words[int(rng.integers(len(words)))]]
    return [w for w, k in zip(words, keep) if k]


@dataclass
class EDA:
    """A configured EDA augmenter: `EDA()(caption, rng) -> str`.

    `probs`: relative weight of each operation in OPERATIONS (normalised; 0 disables one).
    `synonyms`: a word -> synonyms table (default: the built-in one; see `load_synonyms`).
    """

    probs: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PROBS))
    n_sr: int = 1
    n_ri: int = 1
    n_rs: int = 1
    p_rd: float = 0.1
    synonyms: Mapping[str, Sequence[str]] = field(default_factory=lambda: BUILTIN_SYNONYMS)

    def __post_init__(self):
        unknown = set(self.probs) - set(OPERATIONS)
        if unknown:
            raise ValueError(f"unknown EDA operation(s) {sorted(unknown)}; known: {OPERATIONS}")
        weights = np.array([float(self.probs.get(op, 0.0)) for op in OPERATIONS])
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"EDA weights must be >= 0 with a positive sum, got {dict(self.probs)}")
        self._p = weights / weights.sum()

    def apply(self, op: str, words: list[str], rng: np.random.Generator) -> list[str]:
        if op == "sr":
            return synonym_replacement(words, rng, self.synonyms, self.n_sr)
        if op == "ri":
            return random_insertion(words, rng, self.synonyms, self.n_ri)
        if op == "rs":
            return random_swap(words, rng, self.n_rs)
        if op == "rd":
            return random_deletion(words, rng, self.p_rd)
        raise ValueError(f"unknown EDA operation {op!r}")

    def __call__(self, caption: str, rng: np.random.Generator) -> str:
        words = caption.split()
        if not words:
            return caption
        op = OPERATIONS[int(rng.choice(len(OPERATIONS), p=self._p))]
        out = " ".join(self.apply(op, words, rng)).strip()
        return out if out else caption


def eda(
    caption: str,
    rng: np.random.Generator,
    probs: Mapping[str, float] | None = None,
    synonyms: Mapping[str, Sequence[str]] | None = None,
    **kwargs,
) -> str:
    """EDA one caption (see `EDA` for the options); never returns an empty caption."""
    return EDA(
        probs=dict(DEFAULT_PROBS) if probs is None else probs,
        synonyms=BUILTIN_SYNONYMS if synonyms is None else synonyms,
        **kwargs,
    )(caption, rng)


def eda_batch(captions: Sequence[str], seed: int | np.random.SeedSequence, augmenter: EDA | None = None) -> list[str]:
    """EDA a batch of captions with one generator seeded by `seed` (deterministic per seed)."""
    augmenter = EDA() if augmenter is None else augmenter
    rng = np.random.default_rng(seed)
    return [augmenter(str(c), rng) for c in captions]
