import os

import pytest

# --time-budget: `make test` runs each slow test only if it fits CI's hour (tests/time_budget.py)
from time_budget import pytest_addoption, pytest_configure  # noqa: F401

# Local test clusters opt out of token auth (ray-notes §6); the job-submission test turns it on.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Ray workers unpickle functions defined in test modules by module name: put the test folders on
# their path (workers inherit the driver's environment).
_here = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_here, *sorted(os.path.join(_here, d) for d in os.listdir(_here) if os.path.isdir(os.path.join(_here, d)) and not d.startswith((".", "_"))),
     *filter(None, [os.environ.get("PYTHONPATH")])]
)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster for the whole session (2 logical CPUs, dashboard on 127.0.0.1)."""
    import ray

    if not ray.is_initialized():
        # address="local": always a fresh cluster of our own, even if a `ray start` cluster runs on this host
        from contrastlab.platform.runner import use_full_priority_workers

        use_full_priority_workers()
        ray.init(address="local", num_cpus=2, dashboard_host="127.0.0.1", dashboard_port=_free_port(), include_dashboard=True)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """A tiny shapes-captions dataset in a session cache."""
    from contrastlab.platform.datasets import ensure_dataset

    cache = tmp_path_factory.mktemp("cache")
    return ensure_dataset("shapes-captions", cache_dir=str(cache), n_train=256, n_heldout=64, n_test=32)
