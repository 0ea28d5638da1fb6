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
    # As the README tells a cluster user: `ray get-auth-token --generate` once (Ray 2.60's `ray start`
    # makes no token: without one it starts the cluster with auth off, and with RAY_AUTH_MODE=token it
    # refuses), then `ray start` and `ray job submit` with RAY_AUTH_MODE=token. Nothing is switched off.
    # The token goes to a throwaway HOME, found through RAY_AUTH_TOKEN_PATH, so the host's ~/.ray is untouched.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "CONTRASTLAB_STORAGE": str(tmp_path / "results")}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    home = tmp_path / "home"
    try:  # whatever fails below, no Ray process outlives the test
        # Why cluster.yaml sets RAY_AUTH_MODE=token on every node: a node without the token refuses to start
        refused = ray_cli("start", "--head", "--port=6390", "--num-cpus=1", "--dashboard-host=127.0.0.1",
                          "--disable-usage-stats", env={**env, "HOME": str(home)}, timeout=120)
        assert refused.returncode != 0 and "no authentication token was found" in refused.stderr, refused.stdout + refused.stderr
        generate = ray_cli("get-auth-token", "--generate", env={**env, "HOME": str(home)})
        assert generate.returncode == 0, generate.stdout + generate.stderr
        env["RAY_AUTH_TOKEN_PATH"] = str(home / ".ray" / "auth_token")
        assert generate.stdout.strip() == open(env["RAY_AUTH_TOKEN_PATH"]).read().strip()
        start = ray_cli("start", "--head", "--port=6390", "--num-cpus=2", "--dashboard-host=127.0.0.1",
                        "--dashboard-port=8265", "--disable-usage-stats", env=env)
        assert start.returncode == 0, start.stdout + start.stderr
        sub = ray_cli("job", "submit", "--address", "http://127.0.0.1:8265", "--working-dir", ".",
                      "--runtime-env-json", '{"env_vars": {"CONTRASTLAB_STORAGE": "%s", "CONTRASTLAB_CACHE": "%s"}}'
                      % (tmp_path / "results", os.environ.get("CONTRASTLAB_CACHE", str(tmp_path / "cache"))),
                      "--", "python", "sweeps/clip.py", "--smoke", timeout=1500, env=env)
        assert sub.returncode == 0, sub.stdout[-4000:] + sub.stderr[-4000:]
        assert "succeeded" in (sub.stdout + sub.stderr).lower()
        assert "best.json written" in sub.stdout + sub.stderr
    finally:
        ray_cli("stop", "--force", env=env)
