import pytest

from contrastlab.platform.config import ConfigError, build_experiment


def test_defaults_come_from_method_and_train_defaults():
    exp = build_experiment("clip")
    assert exp.method.lr == 1e-3 and exp.train.batch_size == 64


def test_set_overrides_are_typed():
    exp = build_experiment("clip", sets=["method.lr=3e-4", "train.epochs=2", "data.embedded_params={n_train: 10}"])
    assert exp.method.lr == pytest.approx(3e-4) and exp.train.epochs == 2 and exp.data.embedded_params == {"n_train": 10}


def test_unknown_key_names_key_and_lists_allowed():
    with pytest.raises(ConfigError) as err:
        build_experiment("clip", sets=["method.lrr=1"])
    assert "method.lrr" in str(err.value) and "method.lr (float" in str(err.value)


def test_wrong_type_is_refused():
    with pytest.raises(ConfigError, match="train.epochs: expected int"):
        build_experiment("clip", sets=["train.epochs=many"])


def test_bad_section_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="section in method, train, data, run"):
        build_experiment("clip", sets=["optim.lr=1"])
    y = tmp_path / "c.yaml"
    y.write_text("method: {lr: 0.002}\ntrain: {epochs: 3}\n")
    exp = build_experiment("clip", yaml_path=str(y))
    assert exp.method.lr == 0.002 and exp.train.epochs == 3


def test_fp16_on_cpu_refused():
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        build_experiment("clip", sets=["train.precision=fp16"])


def test_executor_poll_outside_0_to_1_s_refused():
    for bad in ("-0.1", "2"):
        with pytest.raises(ConfigError, match="data.executor_poll_s must be between 0"):
            build_experiment("clip", sets=[f"data.executor_poll_s={bad}"])
    assert build_experiment("clip", sets=["data.executor_poll_s=0.02"]).data.executor_poll_s == 0.02


def test_resource_plan_that_starves_ingest_is_refused():
    from contrastlab.platform.runner import plan_resources

    exp = build_experiment("clip", sets=["run.workers=2", "run.cpus_per_worker=1"])
    with pytest.raises(ConfigError, match="starves data ingest"):
        plan_resources(exp, cluster_cpus=2)
    exp = build_experiment("clip", sets=["run.workers=2", "run.cpus_per_worker=0.5"])
    plan_resources(exp, cluster_cpus=2)


def test_set_null_unsets_an_optional_field():
    from typing import Optional

    from contrastlab.platform.config import _coerce

    assert _coerce("null", Optional[int], "method.x") is None
    assert _coerce("~", int | None, "method.x") is None
    assert _coerce("3", int | None, "method.x") == 3
    with pytest.raises(ConfigError):
        _coerce("null", int, "method.x")
