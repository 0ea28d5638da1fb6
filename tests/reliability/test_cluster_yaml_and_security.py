"""cluster.yaml passes the installed Ray's own autoscaler validation (offline), and opens no Ray port
to the internet; every local Ray start of the project binds the dashboard/job server to 127.0.0.1."""
import copy
import glob
import os
import re
import subprocess
import sys

import pytest
import yaml

from reliability_helpers import ROOT

CLUSTER_YAML = os.path.join(ROOT, "cluster.yaml")
RAY_PORTS = {6379, 8265, 8076, 10001, 52365, 8080}  # GCS, dashboard/jobs, object manager, client, agent, metrics


def _load():
    return yaml.safe_load(open(CLUSTER_YAML))


def test_cluster_yaml_passes_rays_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(_load()))
    validate_config(config)  # raises on a schema or semantic error
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert config["provider"]["type"] == "aws"
    assert head.get("max_workers", 0) == 0 and head["resources"].get("CPU", 0) > 0  # a CPU head
    gpu = [t for t in types.values() if t is not head and "g" in t["node_config"]["InstanceType"].split(".")[0][:2]]
    assert gpu and all(t["min_workers"] == 0 < t["max_workers"] for t in gpu)  # an autoscaling GPU type
    assert any("data_cpu" in t["resources"] for t in types.values())  # a CPU-only type for preprocessing
    assert config["idle_timeout_minutes"] > 0 and config["file_mounts"]
    assert config["docker"]["image"] and any("pip install" in c for c in config["setup_commands"])


def test_validator_really_checks():
    """The same validator refuses typos, so the pass above means something."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = _load()
    bad["setup_comands"] = bad.pop("setup_commands")
    with pytest.raises(Exception, match="setup_comands"):
        validate_config(prepare_config(bad))
    bad = _load()
    bad["available_node_types"]["gpu_worker"]["min_workers"] = 20  # more than max_workers
    with pytest.raises(ValueError):
        validate_config(prepare_config(bad))


def test_cluster_yaml_opens_no_ray_port_to_the_internet():
    config = _load()
    text = open(CLUSTER_YAML).read()
    for rule in config["provider"]["security_group"]["IpPermissions"]:
        ports = set(range(rule["FromPort"], rule["ToPort"] + 1))
        assert not ports & RAY_PORTS, rule
        assert ports == {22}, f"only SSH may be open from outside: {rule}"
    start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start
    assert "0.0.0.0" not in text and "ray-client-server-port" not in text


def test_every_scripted_ray_start_binds_localhost():
    """`ray start --head` / `ray.init(...)` that start a local cluster in the repo's code, scripts and docs."""
    files = [f for pat in ("contrastlab/**/*.py", "sweeps/*.py", "benchmarks/*.py", "tests/**/*.py", "Makefile", "README.md",
                           "docs/*.md", ".ci/*") for f in glob.glob(os.path.join(ROOT, pat), recursive=True)]
    offenders = []
    for path in files:
        if os.path.samefile(path, __file__):
            continue
        text = open(path, errors="replace").read()
        for m in re.finditer(r"ray start --head[^\n]*|ray\.init\(([^()]|\([^()]*\))*\)|Cluster\(([^()]|\([^()]*\))*\)", text):
            call = m.group(0)
            if text[max(0, m.start() - 1)] == "`":
                continue  # prose quoting a command (docstrings, markdown), not a start
            local_start = "--head" in call or "num_cpus" in call or "Cluster(" in call
            if local_start and "127.0.0.1" not in call and "include_dashboard\": False" not in call:
                offenders.append(f"{os.path.relpath(path, ROOT)}: {call[:120]}")
    assert not offenders, offenders


@pytest.mark.slow
def test_init_ray_binds_dashboard_to_localhost(tmp_path):
    """Start Ray the way `contrastlab train/sweep` does and look at what the dashboard listens on."""
    code = """
import os, ray
from contrastlab.platform.runner import init_ray
init_ray(num_cpus=1)
url = ray._private.worker._global_node.address_info["webui_url"]
port = int(url.rsplit(":", 1)[1])
listen = []
for line in open("/proc/net/tcp").read().splitlines()[1:]:
    local, state = line.split()[1], line.split()[3]
    if state == "0A" and int(local.split(":")[1], 16) == port:
        listen.append(local.split(":")[0])
print("URL", url, "LISTEN", listen)
ray.shutdown()
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("URL"))
    url, listen = line.split()[1], line.split("LISTEN", 1)[1]
    assert url.startswith("127.0.0.1:"), url
    assert "0100007F" in listen and "00000000" not in listen, listen  # 127.0.0.1, never 0.0.0.0


def test_cluster_yaml_starts_workers_at_full_priority():
    """Ray renices workers to 15 unless told; the platform's data and training workers are the job."""
    config = yaml.safe_load(open(CLUSTER_YAML))
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_worker_niceness=0 ray start" in c for c in starts), (key, starts)


def test_cluster_yaml_starts_every_node_with_token_auth():
    """Ray 2.60's `ray start` makes no token and, with none on the node and RAY_AUTH_MODE unset, starts
    the node with auth off; cluster.yaml copies the user's token to every node and requires it."""
    config = yaml.safe_load(open(CLUSTER_YAML))
    assert config["file_mounts"].get("/home/ray/.ray/auth_token") == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token " in c.split("ray start")[0] for c in starts), (key, starts)


@pytest.mark.slow
def test_init_ray_runs_tasks_at_niceness_zero():
    code = """
import os, ray
os.environ.pop("RAY_worker_niceness", None)
from contrastlab.platform.runner import init_ray
init_ray(num_cpus=1)
print("NICE", ray.get(ray.remote(lambda: os.nice(0)).remote()))
ray.shutdown()
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_worker_niceness"}
    env["RAY_AUTH_MODE"] = "disabled"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert "NICE 0" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
