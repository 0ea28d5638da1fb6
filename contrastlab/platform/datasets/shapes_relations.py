"""`shapes-relations`: two coloured shapes and a spatial relation, for UNIMO's CMCL (card g).

A scene graph is (A, relation, B): two distinct colour x shape objects (shapes-captions' six
colours and four shapes, drawn with its helpers) and one of four relations {left of, right of,
above, below}, drawn so the relation's axis clearly dominates. Captions are templated from the
graph: "a red circle left of a blue square.", "there is a blue square to the right of a red
circle." (both orientations name the same graph). Each colour/shape word is the canonical one or,
with probability 1/2, a synonym ("a crimson disc above a cobalt box."), in captions, paraphrases and
rewrites alike (`surface_word`), so a text's vocabulary never tells a positive from a negative.

Splits (every sample's json has a unique int `index`):
- `train`: `n_train` samples whose `stream` is drawn in the `stream_mix` proportions (default
  1:1:1): 0 = image-text pair (jpg, txt, json), 1 = text-only (txt, json), 2 = image-only (jpg,
  json). The text-only and image-only pools come from the same generator; none uses a held-out
  colour x shape combination, and neither does any mined text (rewritten negatives and evaluation
  hard negatives of the train and test splits are drawn among seen combinations).
- `test`: pairs of training combinations (new scenes).
- `heldout`: pairs in which at least one object is a held-out colour x shape combination
  (shapes-captions' `choose_heldout_combos`): compositions never seen in training.

Offline mining (`mine_and_rewrite`, card d) runs at generation time over the raw shards and writes
the final ones: per pair, paraphrases (`pos_texts`), rewritten negatives (`neg_texts`, each with its
`level` sent/phrase/word and the rewritten `node`), retrieved texts from the text-only pool with the
same graph (`ret_texts`), retrieved images from the image-only pool with the same object set
(inline members `ret0.jpg`, `ret1.jpg`, ...), and three evaluation hard negatives (`hard_negatives`:
an attribute swap, an object swap and a relation swap, in that order). Rewrites are made from the
caption's parsed graph (`parse_caption`), not from the generator's scene record.

Mining is a Ray Data stage (`contrastlab.platform.data.stage`), so it scales out on CPU nodes and is
never redone per epoch: pass 1 indexes every raw shard in its own task (captions, parsed graphs,
object sets, image-pool JPEGs); the driver builds the global structures once (scikit-learn TF-IDF
neighbours over pair captions, the text pool by graph, the image pool by object set) and broadcasts
them through the object store; pass 2 builds each output shard in its own task (one per raw shard,
same numbering). Randomness is drawn per sample (`[seed, 991, index]`), so the bytes do not depend
on the split into tasks, and `engine="ray"` and `"local"` (in-process) write identical shards.

Node vocabulary: attribute = an object's colour, object = its shape, relation = the relation.
Word-level rewrites replace one attribute or object word; phrase-level ones replace the relation
phrase ("left of" -> "above"). Synonyms (crimson = red) never count as a change and relations in
`SYMMETRIC_RELATIONS` are never used for relation swaps (false-negative filter, card i).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from contrastlab.platform.data.codecs import decode_json, decode_text, encode_jpeg

from ._common import DatasetSpec, check_count, fill_prompts, sample_key, with_article, write_split
from .shapes_captions import CLASSES, COLOUR_RGB, COLOURS, SHAPES, SYNONYMS, choose_heldout_combos, class_id, shape_mask

RELATIONS = ["left of", "right of", "above", "below"]
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
SYMMETRIC_RELATIONS = {"next to", "near", "beside"}  # never produced by a relation swap (false negatives)
# surface phrases of each relation (the first is canonical)
RELATION_PHRASES = {
    "left of": ["left of", "to the left of"],
    "right of": ["right of", "to the right of"],
    "above": ["above", "over"],
    "below": ["below", "under"],
}
_PHRASE_TO_REL = {p: r for r, ps in RELATION_PHRASES.items() for p in ps}
SENTENCE_TEMPLATES = ["{s}.", "a photo of {s}.", "there is {s}.", "an image of {s}.", "a picture showing {s}."]
STREAMS = {"pair": 0, "text": 1, "image": 2}
EVAL_HARD_NEGATIVE_KINDS = ("attribute", "object", "relation")
_SPLIT_STREAM = {"train": 0, "test": 1, "heldout": 2}
_RADIUS = 0.15

_COLOUR_ALT = "|".join(sorted({*COLOURS, *(a for c in COLOURS for a in SYNONYMS[c])}, key=len, reverse=True))
_SHAPE_ALT = "|".join(sorted({*SHAPES, *(a for s in SHAPES for a in SYNONYMS[s])}, key=len, reverse=True))
_REL_ALT = "|".join(sorted(_PHRASE_TO_REL, key=len, reverse=True))
_CAPTION_RE = re.compile(rf"\ban? (?P<c1>{_COLOUR_ALT}) (?P<s1>{_SHAPE_ALT}) (?P<rel>{_REL_ALT}) an? (?P<c2>{_COLOUR_ALT}) (?P<s2>{_SHAPE_ALT})\b")
_CANON = {alt: canon for canon in (*COLOURS, *SHAPES) for alt in SYNONYMS[canon]}


# ---------------------------------------------------------------- graphs and captions
def obj_phrase(colour: str, shape: str) -> str:
    return with_article(f"{colour} {shape}")


def canonical_graph(a: tuple[str, str], rel: str, b: tuple[str, str]) -> tuple:
    """The orientation-free form: 'right of' / 'below' are written as their inverses ('B left of A')."""
    if rel in ("right of", "below"):
        return (tuple(b), INVERSE[rel], tuple(a))
    return (tuple(a), rel, tuple(b))


def parse_caption(text: str) -> dict:
    """Caption -> {'a': (colour, shape), 'rel', 'b': (colour, shape), 'graph', 'spans'} (canonical words;
    spans index the raw text for c1, s1, rel, c2, s2). Raises ValueError for text outside the grammar."""
    m = _CAPTION_RE.search(text.lower())
    if not m:
        raise ValueError(f"not a shapes-relations caption: {text!r}")
    canon = lambda w: _CANON.get(w, w)  # noqa: E731
    a, b = (canon(m["c1"]), canon(m["s1"])), (canon(m["c2"]), canon(m["s2"]))
    rel = _PHRASE_TO_REL[m["rel"]]
    return {"a": a, "rel": rel, "b": b, "graph": canonical_graph(a, rel, b),
            "spans": {k: m.span(k) for k in ("c1", "s1", "rel", "c2", "s2")}}


def graph_distance(g1: tuple, g2: tuple) -> int:
    """Number of differing scene-graph nodes (A colour, A shape, relation, B colour, B shape) between
    two canonical graphs, the smaller over both orientations of g2."""
    def nodes(g):
        return [g[0][0], g[0][1], g[1], g[2][0], g[2][1]]

    inv = (g2[2], INVERSE[g2[1]], g2[0])
    return min(sum(x != y for x, y in zip(nodes(g1), nodes(h))) for h in (g2, inv))


def object_set(graph: tuple) -> tuple:
    return tuple(sorted([graph[0], graph[2]]))


def make_caption(a, rel, b, rng: np.random.Generator, *, flip: bool | None = None, synonyms: bool = False,
                 template: int | None = None, variant: int | None = None) -> str:
    """A caption of graph (a, rel, b): optionally in the inverse orientation ('b inverse(rel) a'),
    with colour/shape synonyms; template and relation-phrase variant random unless given."""
    flip = bool(rng.random() < 0.5) if flip is None else flip
    if flip:
        a, rel, b = b, INVERSE[rel], a
    word = (lambda w: surface_word(w, rng)) if synonyms else (lambda w: w)
    phrases = RELATION_PHRASES[rel]
    phrase = phrases[rng.integers(len(phrases)) if variant is None else variant % len(phrases)]
    s = f"{obj_phrase(word(a[0]), word(a[1]))} {phrase} {obj_phrase(word(b[0]), word(b[1]))}"
    tpl = SENTENCE_TEMPLATES[rng.integers(len(SENTENCE_TEMPLATES)) if template is None else template]
    return tpl.format(s=s)


# ---------------------------------------------------------------- rewrites (card d: scene-graph edits)
def _replace(text: str, span: tuple[int, int], new: str) -> str:
    out = text[: span[0]] + new + text[span[1]:]
    return re.sub(r"\ba (?=[aeiou])", "an ", re.sub(r"\ban (?=[^aeiou\s])", "a ", out))  # fix articles


def rewrite(caption: str, node: str, new_value: str) -> str:
    """Replace one scene-graph node of the caption's parsed graph: node in {a_colour, a_shape, rel,
    b_colour, b_shape}. The new value must be a different canonical word (synonyms are no change)."""
    parsed = parse_caption(caption)
    key = {"a_colour": "c1", "a_shape": "s1", "rel": "rel", "b_colour": "c2", "b_shape": "s2"}[node]
    old = {"a_colour": parsed["a"][0], "a_shape": parsed["a"][1], "rel": parsed["rel"], "b_colour": parsed["b"][0], "b_shape": parsed["b"][1]}[node]
    if new_value == old or _CANON.get(new_value, new_value) == old:
        raise ValueError(f"rewrite of {node} must change it ({old!r} -> {new_value!r})")
    if node == "rel":
        if new_value in SYMMETRIC_RELATIONS:
            raise ValueError(f"symmetric relation {new_value!r} makes a false negative")
        if new_value not in _PHRASE_TO_REL:
            raise ValueError(f"unknown relation phrase {new_value!r}; allowed: {sorted(_PHRASE_TO_REL)}")
        if _PHRASE_TO_REL[new_value] == old:
            raise ValueError(f"rewrite of rel must change it ({old!r} -> {new_value!r})")
        if new_value in RELATIONS:  # a canonical relation is written with its canonical phrase
            new_value = RELATION_PHRASES[new_value][0]
    return _replace(caption, parsed["spans"][key], new_value)


def surface_word(word: str, rng: np.random.Generator) -> str:
    """The canonical colour/shape word or, with probability 1/2, one of its synonyms. Captions,
    paraphrases and rewrites all draw their words this way, so no word marks a text as a paraphrase
    (positive) or a rewrite (negative): with synonyms in paraphrases only, CMCL learned to score every
    synonym-bearing text high against every image (loss -> 0, retrieval at chance)."""
    return word if rng.random() < 0.5 else SYNONYMS[word][rng.integers(len(SYNONYMS[word]))]


def surface_relation(rel: str, rng: np.random.Generator) -> str:
    """One of the relation's surface phrases, uniformly (as captions pick them)."""
    phrases = RELATION_PHRASES[rel]
    return phrases[rng.integers(len(phrases))]


def _swap_choices(obj: tuple[str, str], forbidden: frozenset) -> tuple[list[str], list[str]]:
    """The colours and shapes a word rewrite may give `obj`: any other value, except one that would
    name a `forbidden` (held-out) colour x shape combination."""
    colours = [c for c in COLOURS if c != obj[0] and (c, obj[1]) not in forbidden]
    shapes = [s for s in SHAPES if s != obj[1] and (obj[0], s) not in forbidden]
    return colours, shapes


def word_and_phrase_negatives(caption: str, rng: np.random.Generator, forbidden: frozenset = frozenset()) -> list[dict]:
    """Every object/attribute/relation rewrite kind once per slot: colour and shape of both objects
    (word level, one random new value each) and every other asymmetric relation (phrase level).
    No rewrite names a `forbidden` colour x shape pair: the train split's negatives must not show
    the held-out compositions either (a slot with no allowed value gets no rewrite)."""
    parsed = parse_caption(caption)
    out = []
    for side, obj in (("a", parsed["a"]), ("b", parsed["b"])):
        colour, shape = _swap_choices(obj, forbidden)
        if colour:
            out.append({"text": rewrite(caption, f"{side}_colour", surface_word(colour[rng.integers(len(colour))], rng)),
                        "level": "word", "node": "attribute"})
        if shape:
            out.append({"text": rewrite(caption, f"{side}_shape", surface_word(shape[rng.integers(len(shape))], rng)),
                        "level": "word", "node": "object"})
    for rel in RELATIONS:
        if rel != parsed["rel"] and rel not in SYMMETRIC_RELATIONS:
            out.append({"text": rewrite(caption, "rel", surface_relation(rel, rng)), "level": "phrase", "node": "relation"})
    return out


def eval_hard_negatives(caption: str, rng: np.random.Generator, forbidden: frozenset = frozenset()) -> list[str]:
    """One attribute swap, one object swap and one relation swap (EVAL_HARD_NEGATIVE_KINDS order), on
    a random object among those that have an allowed new value (none naming a `forbidden` pair)."""
    parsed = parse_caption(caption)
    choices = {side: _swap_choices(parsed[side], forbidden) for side in "ab"}
    swaps = []
    for kind, what in ((0, "colour"), (1, "shape")):
        sides = [side for side in "ab" if choices[side][kind]]
        if not sides:
            raise ValueError(f"no {what} swap of {caption!r} avoids the held-out combinations {sorted(forbidden)}")
        side = sides[rng.integers(len(sides))]
        values = choices[side][kind]
        swaps.append(rewrite(caption, f"{side}_{what}", surface_word(values[rng.integers(len(values))], rng)))
    rels = [r for r in RELATIONS if r != parsed["rel"] and r not in SYMMETRIC_RELATIONS]
    return swaps + [rewrite(caption, "rel", surface_relation(rels[rng.integers(len(rels))], rng))]


def paraphrases(caption: str, n: int, rng: np.random.Generator) -> list[str]:
    """Back-translation stand-in (card g): the parsed graph re-written with another template, the
    inverse orientation (odd k) and colour/shape synonyms; distinct from the caption and each other."""
    parsed = parse_caption(caption)
    out: list[str] = []
    for k in range(20 * n):
        if len(out) == n:
            break
        text = make_caption(parsed["a"], parsed["rel"], parsed["b"], rng, flip=(len(out) % 2 == 0), synonyms=True)
        if text != caption and text not in out:
            out.append(text)
    return out


# ---------------------------------------------------------------- drawing
def scene_centres(rel: str, rng: np.random.Generator) -> tuple[tuple[float, float], tuple[float, float]]:
    """Centres (fractions of the side) of A and B: along the relation axis 0.22-0.36 vs 0.64-0.78,
    across it within +-0.08 of a shared random line, so the relation is never ambiguous."""
    lo, hi = rng.uniform(0.22, 0.36), rng.uniform(0.64, 0.78)
    line = rng.uniform(0.3, 0.7)
    cross = line + rng.uniform(-0.08, 0.08, 2)
    first, second = (lo, hi) if rel in ("left of", "above") else (hi, lo)
    if rel in ("left of", "right of"):
        return (first, cross[0]), (second, cross[1])
    return (cross[0], first), (cross[1], second)


def render_scene(a, rel, b, size: int, rng: np.random.Generator, grid) -> tuple[np.ndarray, list[list[int]]]:
    xx, yy = grid
    noise = rng.standard_normal((size, size, 3), dtype=np.float32)
    image = rng.uniform(60, 190) + rng.normal(0, 8, 3).astype(np.float32) + 20.0 * noise
    boxes = []
    for (colour, shape), (fx, fy) in zip((a, b), scene_centres(rel, rng)):
        r = _RADIUS * size * rng.uniform(0.85, 1.1)
        mask = shape_mask(shape, fx * size, fy * size, r, rng.uniform(-0.25, 0.25), xx, yy)
        image[mask] = np.asarray(COLOUR_RGB[colour], np.float32) + rng.normal(0, 10, 3).astype(np.float32) + 8.0 * noise[mask]
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        boxes.append([int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1] if rows.size else [0, 0, 0, 0])
    return np.clip(image, 0, 255).astype(np.uint8), boxes


def _draw_graph(rng: np.random.Generator, combos: list[int], must_use: list[int] | None = None) -> tuple:
    """Two distinct combos (one from `must_use` if given, at a random slot) and a relation."""
    if must_use:
        special = must_use[rng.integers(len(must_use))]
        other = [c for c in combos if c != special]
        pair = [special, other[rng.integers(len(other))]]
        if rng.random() < 0.5:
            pair.reverse()
    else:
        pair = list(rng.choice(combos, size=2, replace=False))
    a, b = [(COLOURS[c // len(SHAPES)], SHAPES[c % len(SHAPES)]) for c in pair]
    return a, RELATIONS[rng.integers(len(RELATIONS))], b


def _raw_samples(split: str, n: int, first_index: int, seed: int, image_size: int, seen: list[int], heldout: list[int],
                 mix: list[float]):
    rng = np.random.default_rng([seed, 77, _SPLIT_STREAM[split]])
    grid = tuple(g.astype(np.float32) + 0.5 for g in np.mgrid[0:image_size, 0:image_size][::-1])
    if split == "train":
        counts = np.floor(np.asarray(mix) / sum(mix) * n).astype(int)
        counts[0] += n - counts.sum()
        streams = rng.permutation(np.repeat(np.arange(3), counts))
    else:
        streams = np.zeros(n, dtype=int)
    for i in range(n):
        stream = int(streams[i])
        if split == "heldout":
            a, rel, b = _draw_graph(rng, seen + heldout, must_use=heldout)
        else:
            a, rel, b = _draw_graph(rng, seen)
        labelled = a if split != "heldout" or class_id(*a) in heldout else b  # the held-out object, else A
        index = first_index + i
        info = {"index": index, "split": split, "stream": stream,
                "scene": {"a": list(a), "relation": rel, "b": list(b)},
                "label": class_id(*labelled), "colour_id": COLOURS.index(labelled[0]), "shape_id": SHAPES.index(labelled[1]),
                "relation_id": RELATIONS.index(rel)}
        fields: dict = {}
        if stream != STREAMS["text"]:
            image, boxes = render_scene(a, rel, b, image_size, rng, grid)
            fields["jpg"] = encode_jpeg(image)
            info["boxes"] = boxes
        if stream != STREAMS["image"]:
            caption = make_caption(a, rel, b, rng, synonyms=True)  # the same surface-word draws as paraphrases
            fields["txt"] = caption
            info["caption"] = caption
        fields["json"] = info
        yield sample_key(index), fields


# ---------------------------------------------------------------- offline mining
def _read_samples(paths: list[str]) -> list[dict]:
    """All samples of the shards in order, json and txt decoded (for tests and inspection)."""
    from contrastlab.platform.data.reader import iter_tar_samples

    samples = []
    for path in paths:
        with open(path, "rb") as fh:
            for s in iter_tar_samples(fh, path, "raise"):
                s["json"] = decode_json(s["json"])
                if "txt" in s:
                    s["txt"] = s["txt"].decode("utf-8")
                samples.append(s)
    return samples


def _tfidf_neighbours(texts: list[str], graphs: list[tuple], k: int, chunk: int = 512) -> list[list[int]]:
    """For each caption, the k TF-IDF cosine-nearest captions of OTHER scenes with a different graph."""
    if k <= 0 or len(texts) < 2:
        return [[] for _ in texts]
    from sklearn.feature_extraction.text import TfidfVectorizer

    x = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b").fit_transform(texts)
    gid = {g: i for i, g in enumerate(sorted(set(graphs)))}
    ids = np.asarray([gid[g] for g in graphs])
    out = []
    for start in range(0, len(texts), chunk):
        sims = (x[start:start + chunk] @ x.T).toarray()
        rows = np.arange(sims.shape[0])
        sims[ids[start:start + chunk, None] == ids[None, :]] = -np.inf  # self and same-graph captions
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        out += [[int(j) for j in top[r] if np.isfinite(sims[r, j])] for r in rows]
    return out


def _index_row(sample: dict) -> dict:
    """Pass 1, per sample: what the global structures need. Pairs and text-only samples give their
    caption and its parsed graph; image-only samples (no caption) the graph of their scene record
    and their JPEG bytes, which the image pool hands out."""
    info = decode_json(sample["json"])
    stream = info.get("stream", STREAMS["pair"])
    row = {"key": sample["__key__"], "stream": stream}
    if stream == STREAMS["image"]:
        sc = info["scene"]
        graph = canonical_graph(tuple(sc["a"]), sc["relation"], tuple(sc["b"]))
        row.update(graph=graph, objects=object_set(graph), jpg=sample["jpg"])
    else:
        caption = decode_text(sample["txt"])
        graph = parse_caption(caption)["graph"]
        row.update(caption=caption, graph=graph, objects=object_set(graph))
    return row


def _mining_context(rows: list[dict], *, seed: int, n_paraphrases: int, n_sent_negatives: int, n_ret_texts: int,
                    n_ret_images: int, ret_image_match: str, forbidden: frozenset = frozenset()) -> dict:
    """The driver's global structures, built once from the index rows and broadcast to pass 2:
    per pair key its graph and TF-IDF sentence negatives (captions of other pair scenes), the
    text-only pool by graph and the image-only pool by object set (or graph), in sample order."""
    pairs = [r for r in rows if r["stream"] == STREAMS["pair"]]
    sent_nn = _tfidf_neighbours([r["caption"] for r in pairs], [r["graph"] for r in pairs], n_sent_negatives)
    text_pool: dict[tuple, list[str]] = {}
    image_pool: dict[tuple, list[bytes]] = {}
    for r in rows:
        if r["stream"] == STREAMS["text"]:
            text_pool.setdefault(r["graph"], []).append(r["caption"])
        elif r["stream"] == STREAMS["image"]:
            image_pool.setdefault(r["objects"] if ret_image_match == "objects" else r["graph"], []).append(r["jpg"])
    return {
        "pairs": {r["key"]: {"graph": r["graph"], "sent_negs": [pairs[j]["caption"] for j in nn]} for r, nn in zip(pairs, sent_nn)},
        "text_pool": text_pool, "image_pool": image_pool, "seed": seed, "n_paraphrases": n_paraphrases,
        "n_ret_texts": n_ret_texts, "n_ret_images": n_ret_images, "ret_image_match": ret_image_match,
        "forbidden": frozenset(forbidden),
    }


def _build_sample(sample: dict, ctx: dict) -> tuple[str, dict]:
    """Pass 2, per sample: the final sample. Pairs get their mined candidates; text-only and
    image-only samples pass through unchanged (same members, same json)."""
    info = decode_json(sample["json"])
    fields = {k: sample[k] for k in ("jpg", "txt") if k in sample}  # raw bytes: written back unchanged
    mined = ctx["pairs"].get(sample["__key__"])
    if mined is not None:
        # Per-sample stream: the output never depends on how the samples are split over shards/tasks.
        rng = np.random.default_rng([ctx["seed"], 991, int(info["index"])])
        graph, caption = mined["graph"], decode_text(sample["txt"])
        pos = paraphrases(caption, ctx["n_paraphrases"], rng)
        texts = ctx["text_pool"].get(graph, [])
        ret = [texts[j] for j in rng.permutation(len(texts))[:ctx["n_ret_texts"]]]
        negs = [{"text": t, "level": "sent", "node": "sentence"} for t in mined["sent_negs"]]
        forbidden = ctx["forbidden"]
        negs += word_and_phrase_negatives(caption, rng, forbidden)
        positives = {caption, *pos, *ret}
        # No negative may equal a positive, as a string or as a graph (card h.5).
        negs = [n for n in negs if n["text"] not in positives and parse_caption(n["text"])["graph"] != graph]
        info.update(pos_texts=pos, ret_texts=ret, neg_texts=negs, hard_negatives=eval_hard_negatives(caption, rng, forbidden),
                    hard_negative_kinds=list(EVAL_HARD_NEGATIVE_KINDS), graph=json.loads(json.dumps(graph)))
        pool = ctx["image_pool"].get(object_set(graph) if ctx["ret_image_match"] == "objects" else graph, [])
        picks = rng.permutation(len(pool))[:ctx["n_ret_images"]]
        for k, j in enumerate(picks):
            fields[f"ret{k}.jpg"] = pool[j]
        info["n_ret_images"] = int(len(picks))
    fields["json"] = info
    return sample["__key__"], fields


def mine_and_rewrite(in_shards: list[str], out_dir, *, prefix: str = "train", seed: int = 0, n_paraphrases: int = 2,
                     n_sent_negatives: int = 2, n_ret_texts: int = 2, n_ret_images: int = 2,
                     ret_image_match: str = "objects", forbidden_combos=(), engine: str = "auto") -> list[str]:
    """Offline positives/negatives (card d) over raw shards -> final shards `out_dir/<prefix>-*.tar`
    (one per raw shard, same numbering) plus `<prefix>.manifest.json`.

    For every pair sample (stream 0): paraphrases, word/phrase rewrites of its parsed caption,
    sentence-level negatives (TF-IDF nearest captions of other pair scenes, never the same graph),
    retrieved texts (text-only pool sentences with the same graph), retrieved images (image-only pool
    images whose scene has the same object set, `ret_image_match="objects"`, or the same graph,
    `"graph"`), stored inline as `ret<k>.jpg`, and the three evaluation hard negatives. Every stored
    negative differs from every stored positive as a graph, and no rewrite names a colour x shape
    pair in `forbidden_combos` ((colour, shape) tuples: the held-out compositions, for every split
    but `heldout`). Text-only and image-only samples pass
    through unchanged. Deterministic in `seed` (randomness per sample index), identical for every
    engine. Runs once, before training (never per epoch).

    A Ray Data stage (`contrastlab.platform.data.stage`): pass 1 indexes every shard in a task,
    the driver builds TF-IDF neighbours and the pools once, pass 2 builds each shard in a task with
    those broadcast. `engine`: "ray", "local" (in-process) or "auto" (ray when connected to Ray).
    """
    from contrastlab.platform.data.stage import collect_shards, map_shards

    if ret_image_match not in ("objects", "graph"):
        raise ValueError(f"ret_image_match must be 'objects' or 'graph', got {ret_image_match!r}")
    rows = collect_shards(in_shards, _index_row, engine, label=f"shapes-relations mining {prefix}: index")
    context = _mining_context(rows, seed=seed, n_paraphrases=n_paraphrases, n_sent_negatives=n_sent_negatives,
                              n_ret_texts=n_ret_texts, n_ret_images=n_ret_images, ret_image_match=ret_image_match,
                              forbidden=frozenset(tuple(c) for c in forbidden_combos))
    del rows  # pass 2 needs only the context: free the index rows (captions, graphs) while it runs
    return map_shards(in_shards, out_dir, prefix, _build_sample, context, engine, label=f"shapes-relations mining {prefix}")


# ---------------------------------------------------------------- generate
def parse_mix(mix: str) -> list[float]:
    parts = [float(x) for x in str(mix).split(":")]
    if len(parts) != 3 or min(parts) < 0 or parts[0] <= 0:
        raise ValueError(f"stream_mix must be 'pair:text:image' with pair > 0, got {mix!r}")
    return parts


def generate(out_dir: Path, *, seed: int, n_train: int, n_test: int, n_heldout: int, image_size: int, n_heldout_combos: int,
             stream_mix: str, n_paraphrases: int, n_sent_negatives: int, n_ret_texts: int, n_ret_images: int,
             ret_image_match: str) -> tuple[dict[str, list[str]], dict]:
    for name, value in (("n_train", n_train), ("n_test", n_test), ("n_heldout", n_heldout)):
        check_count(name, value, 1)
    check_count("image_size", image_size, 16, 1024)
    for name, value in (("n_paraphrases", n_paraphrases), ("n_sent_negatives", n_sent_negatives), ("n_ret_texts", n_ret_texts),
                        ("n_ret_images", n_ret_images)):
        check_count(name, value, 0, 16)
    mix = parse_mix(stream_mix)
    heldout = choose_heldout_combos(seed, n_heldout_combos)
    seen = [c for c in range(len(CLASSES)) if c not in heldout]
    heldout_pairs = [tuple(CLASSES[c].split(" ")) for c in heldout]  # (colour, shape): no train/test rewrite names one
    out_dir = Path(out_dir)
    raw = out_dir / "_raw"
    splits, first = {}, 0
    for split, n in (("train", n_train), ("test", n_test), ("heldout", n_heldout)):
        raw_paths = write_split(raw, split, _raw_samples(split, n, first, seed, image_size, seen, heldout, mix), n, "shapes-relations")
        splits[split] = mine_and_rewrite(raw_paths, out_dir, prefix=split, seed=seed + _SPLIT_STREAM[split], n_paraphrases=n_paraphrases,
                                         n_sent_negatives=n_sent_negatives, n_ret_texts=n_ret_texts, n_ret_images=n_ret_images,
                                         ret_image_match=ret_image_match,
                                         forbidden_combos=() if split == "heldout" else heldout_pairs)
        first += n
    shutil.rmtree(raw, ignore_errors=True)
    templates = ["a photo of a {}.", "there is a {}.", "an image of a {}."]
    zero_shot = {"colour_shape": {"classnames": list(CLASSES), "templates": templates, "label_field": "label",
                                  "prompts": fill_prompts(templates, list(CLASSES))}}
    meta = {
        "classes": CLASSES, "colours": COLOURS, "shapes": SHAPES, "relations": RELATIONS,
        "heldout_classes": heldout, "heldout_classnames": [CLASSES[c] for c in heldout],
        "zero_shot": zero_shot, "synonyms": SYNONYMS, "image_size": image_size, "modality": "image-text",
        "streams": STREAMS, "stream_mix": mix, "hard_negative_kinds": list(EVAL_HARD_NEGATIVE_KINDS),
        "max_ret_images": n_ret_images, "n_paraphrases": n_paraphrases, "n_ret_texts": n_ret_texts,
        "label_note": "label = class of the held-out object (heldout split), else of A; scenes show two objects",
    }
    return splits, meta


SPEC = DatasetSpec(
    name="shapes-relations",
    description="two coloured shapes and a spatial relation; paraphrases, scene-graph rewrites, TF-IDF and retrieval mined offline; "
                "text-only and image-only pools; held-out colour x shape compositions",
    defaults={"n_train": 3000, "n_test": 300, "n_heldout": 500, "image_size": 48, "n_heldout_combos": 5, "stream_mix": "1:1:1",
              "n_paraphrases": 2, "n_sent_negatives": 2, "n_ret_texts": 2, "n_ret_images": 2, "ret_image_match": "objects"},
    generate=generate,
    version=4,  # 4: train/test rewrites never name a held-out colour x shape (they did in 64% of train pairs)
    # (3: captions and rewrites use synonyms like paraphrases, removing a CMCL shortcut)
    # (2: mining as a per-shard Ray Data stage with per-sample randomness)
    choices={"ret_image_match": ("objects", "graph")},
)
