"""DeCLIP EDA captions (card checklist h12, the text half)."""
import json

import numpy as np
import pytest

from contrastlab.methods.declip.eda import (
    BUILTIN_SYNONYMS,
    EDA,
    eda,
    eda_batch,
    load_synonyms,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)

CAPTIONS = [
    "a red circle at the top left",
    "A man wearing a black jacket walks a dog on the street.",
    "dog",
    "two small blue squares",
    "a, b",
    "",
]


def test_builtin_table_symmetric_and_sized():
    assert 150 <= len(BUILTIN_SYNONYMS) <= 600
    for w, syns in BUILTIN_SYNONYMS.items():
        assert syns and w not in syns
        for s in syns:
            assert w in BUILTIN_SYNONYMS[s]
    assert "crimson" in BUILTIN_SYNONYMS["red"] and "ring" in BUILTIN_SYNONYMS["circle"]


@pytest.mark.parametrize("op", ["sr", "ri", "rs", "rd"])
def test_never_empty(op):
    aug = EDA(probs={op: 1.0}, p_rd=0.99)
    rng = np.random.default_rng(0)
    for _ in range(200):
        for c in CAPTIONS[:-1]:
            out = aug(c, rng)
            assert out.strip()
    assert aug("", rng) == ""  # nothing to augment: the original comes back


def test_default_operations_are_sr_rs_rd_uniform():
    aug = EDA()
    assert dict(zip(["sr", "ri", "rs", "rd"], aug._p)) == pytest.approx({"sr": 1 / 3, "ri": 0.0, "rs": 1 / 3, "rd": 1 / 3})


def test_synonym_replacement_keeps_punctuation_and_length():
    rng = np.random.default_rng(1)
    words = "the red circle.".split()
    out = synonym_replacement(words, rng, BUILTIN_SYNONYMS, n=1)
    assert len(out) == 3 and out != words
    changed = [(a, b) for a, b in zip(words, out) if a != b]
    assert len(changed) == 1
    a, b = changed[0]
    if a == "circle.":
        assert b.endswith(".") and b[:-1] in BUILTIN_SYNONYMS["circle"]
    else:
        assert b in BUILTIN_SYNONYMS[a]


def test_insertion_swap_deletion():
    rng = np.random.default_rng(2)
    words = "a red circle on noise".split()
    ins = random_insertion(words, rng, BUILTIN_SYNONYMS, n=1)
    assert len(ins) == 6 and sorted(set(ins) - set(words)) and set(words) <= set(ins)
    sw = random_swap(words, rng, n=1)
    assert sorted(sw) == sorted(words) and sum(a != b for a, b in zip(sw, words)) == 2
    assert random_deletion(words, rng, p=1.0) and len(random_deletion(words, rng, p=1.0)) == 1
    assert random_deletion(words, rng, p=0.0) == words
    assert random_insertion(["zzz"], rng, BUILTIN_SYNONYMS) == ["zzz"]  # no synonym: unchanged


def test_batch_is_deterministic_and_changes_something():
    caps = ["a large red circle near a small blue square"] * 50
    a, b = eda_batch(caps, seed=3), eda_batch(caps, seed=3)
    assert a == b
    assert sum(x != caps[0] for x in a) > 25
    assert eda_batch(caps, seed=4) != a


def test_user_synonym_table(tmp_path):
    path = tmp_path / "syn.json"
    path.write_text(json.dumps({"blorp": ["zib"]}))
    table = load_synonyms(str(path))
    assert table["zib"] == ["blorp"] and "crimson" in table["red"]
    only_user = load_synonyms(str(path), use_builtin=False)
    assert set(only_user) == {"blorp", "zib"}
    out = eda("blorp", np.random.default_rng(0), probs={"sr": 1.0}, synonyms=only_user)
    assert out == "zib"


def test_unknown_operation_rejected():
    with pytest.raises(ValueError):
        EDA(probs={"xx": 1.0})
    with pytest.raises(ValueError):
        EDA(probs={"sr": 0.0})
