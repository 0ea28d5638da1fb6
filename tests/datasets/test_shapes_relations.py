"""shapes-relations: graphs, paraphrases, rewrites (card h.5), streams, held-out split, mined shards."""
import json

import numpy as np
import pytest

from contrastlab.platform.datasets import shapes_relations as sr
from contrastlab.platform.datasets.shapes_captions import CLASSES, class_id


def test_parse_and_canonical_graph_are_orientation_free():
    p1 = sr.parse_caption("a red circle left of a blue square.")
    p2 = sr.parse_caption("there is a cobalt box to the right of a crimson ring.")
    assert p1["graph"] == p2["graph"] == (("red", "circle"), "left of", ("blue", "square"))
    assert sr.graph_distance(p1["graph"], p2["graph"]) == 0
    with pytest.raises(ValueError):
        sr.parse_caption("a red circle.")


def test_every_rewrite_changes_exactly_one_node_of_the_intended_kind():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, rel, b = sr._draw_graph(rng, list(range(24)))
        caption = sr.make_caption(a, rel, b, rng, synonyms=True)  # as the generator writes captions
        orig = sr.parse_caption(caption)
        negs = sr.word_and_phrase_negatives(caption, rng)
        assert len(negs) == 4 + 3
        for neg in negs:
            new = sr.parse_caption(neg["text"])
            assert sr.graph_distance(orig["graph"], new["graph"]) == 1, (caption, neg)
            # the surface form keeps A and B in place: the changed slot is the intended node
            changed = [k for k in ("a", "rel", "b") if orig[k] != new[k]]
            assert len(changed) == 1
            if neg["node"] == "relation":
                assert changed == ["rel"] and neg["level"] == "phrase" and new["rel"] not in sr.SYMMETRIC_RELATIONS
            else:
                k = changed[0]
                field = 0 if neg["node"] == "attribute" else 1
                assert neg["level"] == "word" and orig[k][field] != new[k][field] and orig[k][1 - field] == new[k][1 - field]
        hard = sr.eval_hard_negatives(caption, rng)
        kinds = []
        for text in hard:
            new = sr.parse_caption(text)
            assert sr.graph_distance(orig["graph"], new["graph"]) == 1
            k = [k for k in ("a", "rel", "b") if orig[k] != new[k]][0]
            kinds.append("relation" if k == "rel" else ("attribute" if orig[k][0] != new[k][0] else "object"))
        assert kinds == list(sr.EVAL_HARD_NEGATIVE_KINDS)


def test_rewrite_refuses_synonyms_and_symmetric_relations():
    with pytest.raises(ValueError):
        sr.rewrite("a red circle left of a blue square.", "a_colour", "crimson")
    with pytest.raises(ValueError):
        sr.rewrite("a red circle left of a blue square.", "rel", "next to")
    assert sr.rewrite("an orange circle left of a blue square.", "a_colour", "red") == "a red circle left of a blue square."
    assert sr.rewrite("a red circle left of a blue square.", "b_colour", "orange") == "a red circle left of an orange square."
    # relation rewrites take any surface phrase of another relation, never one of the same relation
    assert sr.rewrite("a red circle left of a blue square.", "rel", "over") == "a red circle over a blue square."
    assert sr.rewrite("a red circle left of a blue square.", "rel", "below") == "a red circle below a blue square."
    with pytest.raises(ValueError):
        sr.rewrite("a red circle left of a blue square.", "rel", "to the left of")
    with pytest.raises(ValueError, match="unknown relation phrase"):
        sr.rewrite("a red circle left of a blue square.", "rel", "inside")


def test_paraphrases_keep_the_graph_and_differ_in_text():
    rng = np.random.default_rng(1)
    for _ in range(100):
        a, rel, b = sr._draw_graph(rng, list(range(24)))
        caption = sr.make_caption(a, rel, b, rng)
        paras = sr.paraphrases(caption, 2, rng)
        assert len(paras) == 2 and caption not in paras and paras[0] != paras[1]
        for p in paras:
            assert sr.parse_caption(p)["graph"] == sr.parse_caption(caption)["graph"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes_relations")
    splits, meta = sr.generate(out, seed=3, n_train=240, n_test=20, n_heldout=30, image_size=32, n_heldout_combos=5,
                               stream_mix="1:1:1", n_paraphrases=2, n_sent_negatives=2, n_ret_texts=2, n_ret_images=2,
                               ret_image_match="objects")
    return out, splits, meta, {k: sr._read_samples(v) for k, v in splits.items()}


def test_streams_members_and_indices(generated):
    out, splits, meta, samples = generated
    assert not (out / "_raw").exists()
    streams = [s["json"]["stream"] for s in samples["train"]]
    assert [streams.count(k) for k in (0, 1, 2)] == [80, 80, 80]
    for s in samples["train"]:
        kind = s["json"]["stream"]
        assert ("jpg" in s) == (kind != 1) and ("txt" in s) == (kind != 2)
    indices = [s["json"]["index"] for v in samples.values() for s in v]
    assert len(set(indices)) == len(indices) == 290
    assert all(s["json"]["stream"] == 0 for s in samples["heldout"] + samples["test"])


def test_mined_candidates_are_consistent(generated):
    _, _, meta, samples = generated
    text_pool = {sr.parse_caption(s["txt"])["graph"] for s in samples["train"] if s["json"]["stream"] == 1}
    n_ret_img = 0
    for s in samples["train"]:
        info = s["json"]
        if info["stream"] != 0:
            continue
        graph = sr.parse_caption(s["txt"])["graph"]
        positives = [s["txt"], *info["pos_texts"], *info["ret_texts"]]
        for p in positives:
            assert sr.parse_caption(p)["graph"] == graph
        for neg in info["neg_texts"]:
            assert neg["text"] not in positives and sr.parse_caption(neg["text"])["graph"] != graph
            assert neg["level"] in ("sent", "phrase", "word")
        assert {n["level"] for n in info["neg_texts"]} >= {"phrase", "word"}
        if info["ret_texts"]:
            assert graph in text_pool
        n_ret_img += info["n_ret_images"]
        assert sorted(k for k in s if k.startswith("ret")) == [f"ret{k}.jpg" for k in range(info["n_ret_images"])]
        assert len(info["hard_negatives"]) == 3
    assert n_ret_img > 0


def _synonym_fraction(texts: list[str]) -> float:
    """Fraction of colour/shape words written as a synonym, over the texts' parsed slots."""
    canonical = {*sr.COLOURS, *sr.SHAPES}
    words = []
    for t in texts:
        spans = sr.parse_caption(t)["spans"]
        words += [t.lower()[slice(*spans[k])] for k in ("c1", "s1", "c2", "s2")]
    return sum(w not in canonical for w in words) / len(words)


def test_vocabulary_does_not_mark_positives_or_negatives(generated):
    """Regression: when only paraphrases used synonyms, CMCL scored every synonym-bearing text high
    against every image (train loss -> 1e-4, retrieval and zero-shot at chance). Captions, paraphrases,
    rewritten negatives and the evaluation's hard negatives must all draw synonyms at the same rate."""
    _, _, _, samples = generated
    pairs = [s for s in samples["train"] if s["json"]["stream"] == 0]
    fractions = {
        "captions": _synonym_fraction([s["txt"] for s in pairs]),
        "paraphrases": _synonym_fraction([p for s in pairs for p in s["json"]["pos_texts"]]),
        "rewrites": _synonym_fraction([n["text"] for s in pairs for n in s["json"]["neg_texts"]]),
        "eval hard negatives": _synonym_fraction([h for s in samples["heldout"] for h in s["json"]["hard_negatives"]]),
    }
    for name, f in fractions.items():  # 0.5 each; >= 120 words per set, so +-0.12 is over 2.5 sigma
        assert abs(f - 0.5) < 0.12, fractions


def test_heldout_split_uses_heldout_compositions_only_there(generated):
    _, _, meta, samples = generated
    held = set(meta["heldout_classes"])
    for split in ("train", "test"):
        for s in samples[split]:
            sc = s["json"]["scene"]
            assert class_id(*sc["a"]) not in held and class_id(*sc["b"]) not in held
    for s in samples["heldout"]:
        sc = s["json"]["scene"]
        assert class_id(*sc["a"]) in held or class_id(*sc["b"]) in held
        assert s["json"]["label"] in held
    assert meta["zero_shot"]["colour_shape"]["classnames"] == CLASSES


def _named_classes(text: str) -> set[int]:
    parsed = sr.parse_caption(text)
    return {class_id(*parsed["a"]), class_id(*parsed["b"])}


def test_no_train_or_test_text_names_a_heldout_composition(generated):
    """Regression: word rewrites drew any colour or shape, so 64% of train pairs' negatives (and their
    stored hard negatives) named a held-out colour x shape; only the CMCL arm trains on them, and
    card g's comparison is on exactly those compositions. Every mined text of train and test avoids
    them; the held-out split's evaluation negatives may use any."""
    _, _, meta, samples = generated
    held = set(meta["heldout_classes"])
    for split in ("train", "test"):
        for s in samples[split]:
            info = s["json"]
            texts = [s["txt"]] if "txt" in s else []
            if info["stream"] == 0:
                texts += [*info["pos_texts"], *info["ret_texts"], *(n["text"] for n in info["neg_texts"]), *info["hard_negatives"]]
            for t in texts:
                assert not _named_classes(t) & held, (split, t)
    rewrites = [n for s in samples["train"] if s["json"]["stream"] == 0 for n in s["json"]["neg_texts"] if n["level"] == "word"]
    assert {n["node"] for n in rewrites} == {"attribute", "object"}  # both word kinds survive the filter


def test_rewrites_avoid_forbidden_pairs_and_keep_every_kind():
    """Every slot of a seen object keeps an allowed swap for every held-out draw the generator can
    make (at most 2 held-out shapes per colour): the three evaluation kinds always exist."""
    rng = np.random.default_rng(5)
    for seed in range(20):
        for n_combos in (5, 12):
            heldout = sr.choose_heldout_combos(seed, n_combos)
            forbidden = frozenset(tuple(CLASSES[c].split(" ")) for c in heldout)
            seen = [c for c in range(24) if c not in heldout]
            a, rel, b = sr._draw_graph(rng, seen)
            caption = sr.make_caption(a, rel, b, rng, synonyms=True)
            negatives = [neg["text"] for neg in sr.word_and_phrase_negatives(caption, rng, forbidden)]
            for t in negatives + sr.eval_hard_negatives(caption, rng, forbidden):
                assert not _named_classes(t) & set(heldout), (t, heldout)
            assert len(sr.eval_hard_negatives(caption, rng, forbidden)) == 3


def test_generation_is_deterministic(tmp_path):
    kw = dict(seed=0, n_train=30, n_test=3, n_heldout=3, image_size=24, n_heldout_combos=5, stream_mix="1:1:1", n_paraphrases=2,
              n_sent_negatives=2, n_ret_texts=1, n_ret_images=1, ret_image_match="graph")
    s1, _ = sr.generate(tmp_path / "a", **kw)
    s2, _ = sr.generate(tmp_path / "b", **kw)
    a, b = sr._read_samples(s1["train"]), sr._read_samples(s2["train"])
    assert [x["json"] for x in a] == [x["json"] for x in b]
    with pytest.raises(ValueError):
        sr.parse_mix("0:1:1")


def _raw_train(directory, n=60, seed=5, shard_total=None):
    """Raw (unmined) train shards of n samples; `shard_total` changes the shard size only."""
    from contrastlab.platform.datasets._common import write_split
    from contrastlab.platform.datasets.shapes_captions import choose_heldout_combos

    heldout = choose_heldout_combos(seed, 5)
    seen = [c for c in range(len(CLASSES)) if c not in heldout]
    samples = sr._raw_samples("train", n, 0, seed, 24, seen, heldout, [1.0, 1.0, 1.0])
    return write_split(directory, "train", samples, shard_total or n, "test raw")


def test_mining_via_ray_equals_local(ray_cluster, tmp_path, shards):
    raw = _raw_train(tmp_path / "raw")
    kw = dict(prefix="train", seed=5, n_paraphrases=2, n_sent_negatives=2, n_ret_texts=1, n_ret_images=2)
    via_ray = sr.mine_and_rewrite(raw, tmp_path / "ray", engine="ray", **kw)
    local = sr.mine_and_rewrite(raw, tmp_path / "local", engine="local", **kw)
    assert len(via_ray) == len(local) == len(raw) > 1  # one mined shard per raw shard
    a, b = shards.read(via_ray), shards.read(local)
    assert list(a) == list(b) == [f"{i:08d}" for i in range(60)]
    for key in a:
        assert a[key] == b[key], key
    assert shards.tree(tmp_path / "ray") == shards.tree(tmp_path / "local")  # byte-identical, manifest included
    assert sum(json.loads(f["json"])["n_ret_images"] for f in a.values() if json.loads(f["json"])["stream"] == 0) > 0


def test_mining_does_not_depend_on_the_shard_split(tmp_path, shards):
    """Per-sample randomness: the same raw samples in 1 shard or in several mine to the same samples."""
    one = _raw_train(tmp_path / "one", shard_total=10_000)  # shard_size_for(10k) > 60: a single shard
    many = _raw_train(tmp_path / "many")
    assert len(one) == 1 and len(many) > 1
    kw = dict(prefix="train", seed=5, n_ret_texts=1, n_ret_images=1, engine="local")
    assert shards.read(sr.mine_and_rewrite(one, tmp_path / "m1", **kw)) == shards.read(sr.mine_and_rewrite(many, tmp_path / "m2", **kw))
