"""The slow-test time budget that keeps `make test` inside CI's hour (tests/time_budget.py).

Runs a real pytest in a subprocess over a throwaway test folder with the plugin loaded, the way `make test`
loads it through tests/conftest.py.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from time_budget import UNKNOWN_TEST_SECONDS, expected_seconds, would_overrun

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SAMPLE_TESTS = '''
import pytest

def test_fast():
    pass

@pytest.mark.slow
def test_slow_one():
    pass

@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2])
def test_slow_family(n):
    pass
'''


def _run_pytest(folder, *args, clock_start=None):
    env = {k: v for k, v in os.environ.items() if k != "CONTRASTLAB_TEST_CLOCK_START"}
    env["PYTHONPATH"] = os.pathsep.join([TESTS_DIR, env.get("PYTHONPATH", "")])
    if clock_start is not None:
        env["CONTRASTLAB_TEST_CLOCK_START"] = str(clock_start)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "time_budget", "-p", "no:cacheprovider", "-rs", str(folder), *args],
        cwd=folder, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def sample_folder(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    (tmp_path / "test_sample.py").write_text(SAMPLE_TESTS)
    return tmp_path


def test_expected_seconds_uses_the_record_then_the_family_then_the_default():
    records = {"a.py::t[1]": 40.0, "a.py::t[2]": 70.0, "a.py::u": 5.0}
    assert expected_seconds("a.py::u", records) == 5.0
    assert expected_seconds("a.py::t[3]", records) == 70.0  # a new parameter takes its family's longest
    assert expected_seconds("b.py::v", records) == UNKNOWN_TEST_SECONDS


def test_would_overrun():
    assert not would_overrun(100.0, 200.0, None)  # no budget: everything runs
    assert not would_overrun(100.0, 200.0, 300.0)  # ends exactly at the budget
    assert would_overrun(100.1, 200.0, 300.0)


def test_without_a_budget_every_test_runs(sample_folder):
    result = _run_pytest(sample_folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_slow_tests_that_do_not_fit_are_skipped_with_the_reason_and_fast_ones_still_run(sample_folder):
    # the clock started 100 s ago (as `make test` sets it); unknown slow tests are expected to take 300 s
    result = _run_pytest(sample_folder, "--time-budget", "350", clock_start=time.time() - 100)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 3 skipped" in result.stdout
    assert "time budget: 1.7 min spent, this test takes about 5.0 min, the budget is 5.8 min" in result.stdout
    assert "pytest test_sample.py::test_slow_one" in result.stdout  # how to run it alone
    assert "3 slow test(s) did not fit and were skipped" in result.stdout


def test_slow_tests_that_fit_run_and_their_durations_can_be_recorded(sample_folder, tmp_path):
    record = tmp_path / "seconds.json"
    record.write_text(json.dumps({"about": "measured on host X", "seconds": {"test_sample.py::test_gone": 9.0}}))
    result = _run_pytest(sample_folder, "--time-budget", "450", "--record-slow-seconds", str(record),
                         clock_start=time.time() - 100)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout
    assert "every selected slow test ran" in result.stdout
    recorded = json.loads(record.read_text())
    assert recorded["about"] == "measured on host X"  # the note on where the figures come from is kept
    seconds = recorded["seconds"]
    # slow tests only, merged into what the file held
    assert set(seconds) == {"test_sample.py::test_gone", "test_sample.py::test_slow_one",
                            "test_sample.py::test_slow_family[1]", "test_sample.py::test_slow_family[2]"}
    assert all(0 <= s < 60 for s in seconds.values()) and seconds["test_sample.py::test_gone"] == 9.0


@pytest.mark.parametrize("args, clock, message", [
    (["--time-budget", "0"], None, "--time-budget must be a positive number of seconds"),
    (["--time-budget", "60"], "yesterday", "is not Unix seconds"),
])
def test_bad_budget_settings_are_refused_with_what_to_change(sample_folder, args, clock, message):
    result = _run_pytest(sample_folder, *args, clock_start=clock)
    assert result.returncode != 0
    assert message in result.stderr


def test_the_committed_estimates_name_slow_tests_by_node_id_with_positive_seconds():
    from time_budget import _load_estimates

    estimates = _load_estimates()
    assert len(estimates) >= 20
    for nodeid, seconds in estimates.items():
        assert nodeid.startswith("tests/") and "::" in nodeid and os.path.exists(os.path.join(
            os.path.dirname(TESTS_DIR), nodeid.split("::")[0])), nodeid
        assert seconds > 0, nodeid
