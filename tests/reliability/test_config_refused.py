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
