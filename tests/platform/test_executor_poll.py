"""data.executor_poll_s: setting Ray Data's executor wait, 0 leaving Ray's, and a Ray without the constant.
(That it reaches the processes a dataset is sent to: test_ray_ingest.py.)"""
import warnings

import pytest
from ray.data._internal.execution import streaming_executor_state as state

from contrastlab.platform.data import executor_poll


@pytest.fixture
def restore_poll():
    before = state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S
    yield
    state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = before


def test_sets_the_executor_wait(restore_poll):
    assert executor_poll.set_executor_poll(0.02)
    assert state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == 0.02


def test_zero_leaves_the_process_as_it_is(restore_poll):
    state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = 0.1
    assert not executor_poll.set_executor_poll(0)
    assert state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == 0.1


def test_a_ray_without_the_constant_warns_once_and_keeps_its_polling(monkeypatch):
    monkeypatch.delattr(state, executor_poll.RAY_POLL_CONSTANT)
    monkeypatch.setattr(executor_poll, "_warned", [])
    with pytest.warns(UserWarning, match="Ray Data keeps its own polling"):
        assert not executor_poll.set_executor_poll(0.01)
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        assert not executor_poll.set_executor_poll(0.01)
    assert again == []
