"""A config with an unknown key or a wrong type, or shard patterns that match nothing, are refused
before any Ray work starts (no cluster is started or joined, no dataset built)."""
import pytest

from contrastlab.platform.config import ConfigError
from contrastlab.platform.data.paths import ShardPatternError


@pytest.fixture
def no_ray(monkeypatch):
    """Any attempt to start or join Ray fails the test."""
    import ray

    import contrastlab.platform.runner as runner
    import contrastlab.platform.tune as tune

    def forbidden(*a, **k):
        raise AssertionError("Ray work started before the config was checked")

    monkeypatch.setattr(ray, "init", forbidden)
    monkeypatch.setattr(runner, "init_ray", forbidden)
    monkeypatch.setattr(tune, "init_ray", forbidden)


@pytest.mark.parametrize("sets, words", [
    (["method.temprature=0.1"], "unknown config key 'method.temprature'"),
    (["train.epoch=2"], "unknown config key 'train.epoch'"),
    (["optim.lr=1"], "unknown config key 'optim.lr'"),
    (["train.epochs=two"], "train.epochs: expected int, got 'two'"),
    (["train.batch_size=1.5"], "train.batch_size: expected int"),
    (["data.shuffle_files=maybe"], "data.shuffle_files: expected bool"),
    (["data.bad_samples=ignore"], "data.bad_samples must be raise or skip"),
    (["run.cpus_per_worker=0"], "run.cpus_per_worker must be > 0"),
    # values that passed validation and then failed inside the Train worker (ZeroDivisionError, numpy seeds)
    (["train.log_every_steps=0"], "train.log_every_steps must be >= 1, got 0"),
    (["train.eval_every_epochs=0"], "train.eval_every_epochs must be >= 1, got 0"),
    (["run.seed=-1"], "run.seed must be >= 0"),
    (["data.shuffle_buffer=-5"], "data.shuffle_buffer must be >= 0 (0 = off), got -5"),
    (["run.placement_strategy=ANY"], "got 'ANY'"),
    # a method's own check is a config error too (it was a ValueError traceback)
    (["method.crop_scale_min=0"], "method.* (clip): method.crop_scale_min must lie in (0, 1], got 0"),
])
def test_sweep_refuses_bad_config_before_ray(no_ray, tmp_path, sets, words):
    from contrastlab.platform.sweep_cli import sweep_main

    with pytest.raises(ConfigError) as err:
        sweep_main("clip", ["--storage", str(tmp_path), *sum([["--set", s] for s in sets], [])])
    assert words in str(err.value)


def test_yaml_with_unknown_key_is_refused(no_ray, tmp_path):
    from contrastlab.platform.sweep_cli import sweep_main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 2\n  warmup: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.warmup'"):
        sweep_main("clip", ["--storage", str(tmp_path), "--config", str(cfg)])


@pytest.mark.parametrize("data, words", [
    ("{tmp}/nope-*.tar", "matches no file"),
    ("{tmp}/train-{{00000..00003}}.tar", "does not exist"),
    (" , ", "empty shard list"),
    ("s4://bucket/train-00000.tar", "Unrecognized filesystem type"),
])
def test_bad_shard_patterns_are_refused_before_ray(no_ray, tmp_path, data, words):
    from contrastlab.platform.config import build_experiment
    from contrastlab.platform.runner import train
    from contrastlab.platform.sweep_cli import sweep_main

    data = data.format(tmp=tmp_path)
    with pytest.raises(ShardPatternError, match=words):
        sweep_main("clip", ["--storage", str(tmp_path), "--data", data, "--eval-data", data])
    with pytest.raises(ShardPatternError, match=words):
        train(build_experiment("clip", sets=[f"data.train={data}"]), name="x", storage=str(tmp_path))


def test_a_sweep_on_user_shards_needs_evaluation_shards(no_ray, tmp_path):
    """Trials are ranked on the evaluation split; with --data the embedded one no longer applies, so
    a sweep without --eval-data (or with data.eval=none) would rank nothing: refused before Ray."""
    from contrastlab.platform.sweep_cli import sweep_main

    with pytest.raises(ConfigError, match="--data was given without --eval-data"):
        sweep_main("clip", ["--storage", str(tmp_path), "--data", str(tmp_path / "x-{0..1}.tar")])
    with pytest.raises(ConfigError, match="data.eval=none"):
        sweep_main("clip", ["--storage", str(tmp_path), "--set", "data.eval=none"])


def test_sweep_scripts_print_input_errors_as_one_line(no_ray, tmp_path, capsys):
    from contrastlab.platform.sweep_cli import script_main

    (tmp_path / "e.tar").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_:
        script_main("clip", ["--storage", str(tmp_path), "--data", str(tmp_path / "nope-*.tar"), "--eval-data", str(tmp_path / "e.tar")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "matches no file" in err and "Traceback" not in err


def test_evaluation_shards_apply_to_embedded_training_data_and_stores_must_match(tmp_path):
    """data.eval replaces the embedded evaluation split (it was ignored when data.train was empty);
    training and evaluation on different stores are refused by name."""
    from contrastlab.platform.config import build_experiment
    from contrastlab.platform.datasets import ensure_dataset
    from contrastlab.platform.runner import _one_store, plan_data

    params = {"n_train": 64, "n_test": 32}
    ds = ensure_dataset("shapes-captions", cache_dir=str(tmp_path), **params)
    sets = [f"data.cache_dir={tmp_path}", "data.embedded=shapes-captions", "data.embedded_params={n_train: 64, n_test: 32}"]
    assert plan_data(build_experiment("clip", sets=sets)).eval == ds.splits["heldout"]  # clip's evaluation split
    assert plan_data(build_experiment("clip", sets=[*sets, f"data.eval={ds.splits['train'][0]}"])).eval == [ds.splits["train"][0]]
    assert plan_data(build_experiment("clip", sets=[*sets, "data.eval=none"])).eval == []

    class S3:  # pyarrow's FileSystem.equals compares the options (region, endpoint)
        type_name = "s3"

        def __init__(self, endpoint="aws"):
            self.endpoint = endpoint

        def equals(self, other):
            return self.endpoint == other.endpoint

    _one_store([("a", None), ("b", None)])
    _one_store([("a", S3()), ("b", S3())])
    with pytest.raises(ConfigError, match=r"'s3://b/e.tar' \(s3\)"):
        _one_store([("train-*.tar", None), ("s3://b/e.tar", S3())])
    with pytest.raises(ConfigError, match="one filesystem and its options"):
        _one_store([("s3://a/t.tar", S3()), ("s3://b/e.tar?endpoint_override=minio:9000", S3("minio"))])


def test_pbt_is_refused_before_ray_with_the_reason(no_ray, tmp_path):
    from contrastlab.platform.sweep_cli import sweep_main

    with pytest.raises(ConfigError, match="PBT cannot clone"):
        sweep_main("clip", ["--storage", str(tmp_path), "--scheduler", "pbt"])
