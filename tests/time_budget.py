"""A wall-clock budget for the slow end-to-end tests (pytest plugin, loaded by tests/conftest.py).

CI must finish within 60 minutes on 2 cores, and hosts differ by more than 2x in speed (the same tree took
25 min on one and 56 min on another). So `make test` runs every fast test, then each slow-marked test only
if it is expected to end within the budget: ``--time-budget SECONDS``, counted from
``CONTRASTLAB_TEST_CLOCK_START`` (Unix seconds; `make test` and `.ci/run` set it when they start, so the
install counts too) or else from this pytest's start. A test that would not fit is reported as skipped
with the reason, never silently dropped. Expected durations come from ``slow_test_seconds.json`` beside this
file (measured on the slowest host seen); refresh it with ``--record-slow-seconds FILE``.
"""

from __future__ import annotations

import json
import os
import time

import pytest

ESTIMATES_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow_test_seconds.json")
# A slow test without a recorded duration is assumed to take this long (longer than most recorded ones).
UNKNOWN_TEST_SECONDS = 300.0
CLOCK_ENV = "CONTRASTLAB_TEST_CLOCK_START"


def pytest_addoption(parser):
    group = parser.getgroup("contrastlab time budget")
    group.addoption(
        "--time-budget", type=float, default=None, metavar="SECONDS",
        help=f"run a slow-marked test only if it is expected to end within SECONDS, counted from ${CLOCK_ENV} "
             "(Unix seconds) or this pytest's start; tests that would not fit are skipped with the reason",
    )
    group.addoption(
        "--record-slow-seconds", default=None, metavar="FILE",
        help="write the measured wall time of each slow test that ran to FILE (JSON, merged into an existing "
             "file) to refresh tests/slow_test_seconds.json",
    )


def _read_record(path: str) -> dict:
    """The durations file as written by --record-slow-seconds ({} if there is none yet)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _load_estimates(path: str = ESTIMATES_PATH) -> dict[str, float]:
    return {str(k): float(v) for k, v in _read_record(path).get("seconds", {}).items()}


def _clock_start() -> float:
    clock_text = os.environ.get(CLOCK_ENV)
    if not clock_text:
        return time.time()
    try:
        return float(clock_text)
    except ValueError:
        raise pytest.UsageError(f"{CLOCK_ENV}={clock_text!r} is not Unix seconds (e.g. the output of `date +%s`)")


def expected_seconds(nodeid: str, estimates: dict[str, float]) -> float:
    """The recorded duration of a test; a parametrised test without its own record takes its family's longest."""
    if nodeid in estimates:
        return estimates[nodeid]
    family = nodeid.split("[", 1)[0]
    siblings = [s for k, s in estimates.items() if k.split("[", 1)[0] == family]
    return max(siblings) if siblings else UNKNOWN_TEST_SECONDS


def would_overrun(elapsed_s: float, expected_s: float, budget_s: float | None) -> bool:
    return budget_s is not None and elapsed_s + expected_s > budget_s


class SlowTestBudget:
    """Skips slow tests that would end after the budget; records the durations of those that ran."""

    def __init__(self, budget_s: float | None, record_path: str | None, clock_start: float,
                 estimates: dict[str, float]):
        self.budget_s, self.record_path, self.clock_start = budget_s, record_path, clock_start
        self.estimates = estimates
        self.skipped: list[tuple[str, float]] = []
        self.measured: dict[str, float] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        if self.budget_s is None or item.get_closest_marker("slow") is None:
            return
        elapsed = time.time() - self.clock_start
        expected = expected_seconds(item.nodeid, self.estimates)
        if would_overrun(elapsed, expected, self.budget_s):
            self.skipped.append((item.nodeid, expected))
            pytest.skip(
                f"time budget: {elapsed / 60:.1f} min spent, this test takes about {expected / 60:.1f} min, "
                f"the budget is {_minutes(self.budget_s)} min (--time-budget); run it on its own with "
                f"`pytest {item.nodeid}`"
            )

    def pytest_runtest_logreport(self, report):
        # setup + call + teardown: module fixtures (a dataset, a cluster) count for the test that builds them
        if "slow" in report.keywords and not report.skipped:
            self.measured[report.nodeid] = self.measured.get(report.nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self, session):
        if not self.record_path or not self.measured:
            return
        record = _read_record(self.record_path)
        # keeps the file's note on where its figures were measured
        about = record.get("about", "wall seconds of each slow test (setup + call + teardown), "
                                    "written by pytest --record-slow-seconds")
        merged = {**record.get("seconds", {}), **{k: round(v, 1) for k, v in self.measured.items()}}
        with open(self.record_path, "w") as f:
            json.dump({"about": about, "seconds": dict(sorted(merged.items()))}, f, indent=1)
            f.write("\n")

    def pytest_terminal_summary(self, terminalreporter):
        if self.budget_s is None:
            return
        spent = (time.time() - self.clock_start) / 60
        line = f"time budget: {spent:.1f} of {_minutes(self.budget_s)} min spent"
        if self.skipped:
            needed = sum(s for _, s in self.skipped) / 60
            line += (f"; {len(self.skipped)} slow test(s) did not fit and were skipped "
                     f"(about {needed:.0f} min more would run them)")
        else:
            line += "; every selected slow test ran"
        terminalreporter.write_line(line)


def _minutes(seconds: float) -> str:
    """Whole minutes for a CI-sized budget; a tenth of a minute below 10 (a 20 s budget is not "0 min")."""
    return f"{seconds / 60:.0f}" if seconds >= 600 else f"{seconds / 60:.1f}"


def pytest_configure(config):
    budget = config.getoption("--time-budget")
    if budget is not None and budget <= 0:
        raise pytest.UsageError(f"--time-budget must be a positive number of seconds, got {budget}")
    config.pluginmanager.register(
        SlowTestBudget(budget, config.getoption("--record-slow-seconds"), _clock_start(), _load_estimates()),
        "contrastlab-slow-test-budget",
    )
