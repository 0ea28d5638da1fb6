import json
import os

import pytest

import contrastlab.platform.datasets as datasets
from contrastlab.platform.datasets import ensure_dataset, list_datasets, load_dataset_paths

TINY = dict(n_train=6, n_test=3, n_heldout=3, image_size=32)


def test_list_datasets_names_and_descriptions():
    names = list_datasets()
    assert {"shapes-captions", "fashion-captions", "fashion-mnist", "digits"} <= set(names)
    assert all(isinstance(d, str) and d and "\n" not in d for d in names.values())


def test_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(ValueError) as err:
        ensure_dataset("shapes", cache_dir=tmp_path)
    for name in list_datasets():
        assert name in str(err.value)


def test_unknown_or_mistyped_params_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="n_train.*n_test"):
        ensure_dataset("shapes-captions", cache_dir=tmp_path, n_trian=5)
    with pytest.raises(ValueError, match="n_train"):
        ensure_dataset("shapes-captions", cache_dir=tmp_path, n_train="5")
    with pytest.raises(ValueError, match="resize"):
        ensure_dataset("fashion-mnist", cache_dir=tmp_path, resize="cubic")
    with pytest.raises(ValueError, match="n_train"):
        ensure_dataset("shapes-captions", cache_dir=tmp_path, n_train=-1)
    assert not any(tmp_path.iterdir())  # nothing half-made left behind


def test_generates_once_then_returns_cached(tmp_path, capsys):
    first = ensure_dataset("shapes-captions", cache_dir=tmp_path, **TINY)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and str(first.root) in out
    assert first.root.parent == tmp_path and first.root.name.startswith("shapes-captions-")
    stamp = os.stat(first.splits["train"][0]).st_mtime_ns
    again = ensure_dataset("shapes-captions", cache_dir=tmp_path, **TINY)
    assert capsys.readouterr().out == ""
    assert again.root == first.root and again.splits == first.splits and again.meta == first.meta
    assert os.stat(first.splits["train"][0]).st_mtime_ns == stamp
    assert load_dataset_paths(first.root).splits == first.splits
    assert [p.name for p in tmp_path.iterdir()] == [first.root.name]  # no temporary folder left


def test_explicit_defaults_share_the_cache_entry(tmp_path):
    a = ensure_dataset("shapes-captions", cache_dir=tmp_path, **TINY)
    b = ensure_dataset("shapes-captions", cache_dir=tmp_path, max_objects=3, **TINY)
    c = ensure_dataset("shapes-captions", cache_dir=tmp_path, max_objects=2, **TINY)
    assert a.root == b.root != c.root


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRASTLAB_CACHE", str(tmp_path / "env-cache"))
    paths = ensure_dataset("shapes-captions", **TINY)
    assert paths.root.parent == tmp_path / "env-cache"


def test_meta_json_records_seed_params_and_counts(tmp_path):
    paths = ensure_dataset("shapes-captions", seed=5, cache_dir=tmp_path, **TINY)
    meta = json.loads((paths.root / "meta.json").read_text())
    assert meta["name"] == "shapes-captions" and meta["seed"] == 5
    assert meta["params"]["n_train"] == 6 and meta["counts"] == {"train": 6, "test": 3, "heldout": 3}
    assert meta["splits"]["train"] == ["train-00000.tar"]
    assert paths.splits["train"] == [str(paths.root / "train-00000.tar")]


def test_crash_mid_generation_leaves_nothing_usable(tmp_path, monkeypatch):
    spec = datasets._REGISTRY["shapes-captions"]
    real = spec.generate

    def crashing(out_dir, **kw):
        real(out_dir, **kw)  # every shard written ...
        raise KeyboardInterrupt  # ... but killed before the hand-over

    monkeypatch.setitem(datasets._REGISTRY, "shapes-captions", type(spec)(**{**spec.__dict__, "generate": crashing}))
    with pytest.raises(KeyboardInterrupt):
        ensure_dataset("shapes-captions", cache_dir=tmp_path, **TINY)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setitem(datasets._REGISTRY, "shapes-captions", spec)
    paths = ensure_dataset("shapes-captions", cache_dir=tmp_path, **TINY)
    assert paths.meta["counts"]["train"] == 6


def test_an_unfinished_folder_is_never_used(tmp_path):
    paths = ensure_dataset("shapes-captions", cache_dir=tmp_path, **TINY)
    (paths.root / "meta.json").unlink()  # as if a crash had happened before completion
    with pytest.raises(FileNotFoundError, match="not a complete"):
        load_dataset_paths(paths.root)
    again = ensure_dataset("shapes-captions", cache_dir=tmp_path, **TINY)  # regenerated in place
    assert again.root == paths.root and (again.root / "meta.json").is_file()


def test_cli_make_and_errors(tmp_path, capsys):
    from contrastlab.platform.datasets.cli import main

    assert main(["make", "shapes-captions", "n_train=4", "n_test=2", "n_heldout=2", "image_size=32", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train: 4 samples in 1 shard(s)" in out and str(tmp_path) in out
    assert main(["make", "nope", "--cache-dir", str(tmp_path)]) == 2
    assert "shapes-captions" in capsys.readouterr().err
    assert main(["list"]) == 0 and "fashion-mnist" in capsys.readouterr().out


def test_small_splits_get_several_shards_large_ones_1000_per_shard():
    """One Ray Data read+preprocess task per shard: a 192-clip split must not be one shard."""
    from contrastlab.platform.datasets._common import shard_size_for

    assert shard_size_for(192) == 32  # 6 shards
    assert shard_size_for(1024) == 128  # 8 shards
    assert shard_size_for(20) == 32  # tiny: one shard
    assert shard_size_for(100_000) == 1000
