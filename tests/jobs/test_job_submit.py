"""`ray start --head` + `ray job submit --working-dir .` as a cluster user does it, token auth ON.

Runs in its own pytest process (the Makefile's second pytest call) because `ray stop` ends every
Ray process on the host, the session cluster of the other tests included.
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.slow


def ray_cli(*args, timeout=600, env=None):
    exe = os.path.join(os.path.dirname(sys.executable), "ray")
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_job_submit_smoke_sweep(tmp_path):
    # Ray 2.60 turns token auth on; the client opts in with RAY_AUTH_MODE=token and reads the token
    # `ray start` wrote to ~/.ray/auth_token, as a cluster user would. Nothing is switched off.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "CONTRASTLAB_STORAGE": str(tmp_path / "results")}
    env.pop("RAY_ADDRESS", None)
    start = ray_cli("start", "--head", "--port=6390", "--num-cpus=2", "--dashboard-host=127.0.0.1",
                    "--dashboard-port=8265", "--disable-usage-stats", env=env)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        sub = ray_cli("job", "submit", "--address", "http://127.0.0.1:8265", "--working-dir", ".",
                      "--runtime-env-json", '{"env_vars": {"CONTRASTLAB_STORAGE": "%s", "CONTRASTLAB_CACHE": "%s"}}'
                      % (tmp_path / "results", os.environ.get("CONTRASTLAB_CACHE", str(tmp_path / "cache"))),
                      "--", "python", "sweeps/clip.py", "--smoke", timeout=1500, env=env)
        assert sub.returncode == 0, sub.stdout[-4000:] + sub.stderr[-4000:]
        assert "succeeded" in (sub.stdout + sub.stderr).lower()
        assert "best.json written" in sub.stdout + sub.stderr
    finally:
        ray_cli("stop", "--force", env=env)
