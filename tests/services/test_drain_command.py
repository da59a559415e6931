"""`blockrag drain` (a KubeRay pod's preStop hook) against a real Ray with a Serve deployment whose
calls wait for a file: the command marks the drain file the replicas watch, then waits for the
call in flight (or reports it still running at the grace period); a drain file the replicas do
not watch is refused before anything is marked; the wait counts only the replicas of the node
it is asked about. What a marked file does to calls from the port: test_drain_rules.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blockrag_services import drain

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

BLOCKRAG = str(Path(sys.executable).parent / "blockrag")


@serve.deployment
class Gate:
    """A call returns once its file exists: a request held in flight for as long as a test wants."""

    async def __call__(self, release: str) -> str:
        while not os.path.exists(release):
            await asyncio.sleep(0.05)
        return "released"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray whose processes watch ``drain_file`` (set before Ray starts, as a pod's
    environment is), with the Gate deployment running; its GCS address and the drain file."""
    drain_file = tmp_path_factory.mktemp("drain") / "draining"
    previous = {name: os.environ.get(name) for name in (drain.DRAIN_ENV, "RAY_AUTH_MODE")}
    os.environ[drain.DRAIN_ENV] = str(drain_file)
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a local cluster on loopback, as `blockrag up` starts
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             configure_logging=False)
    try:
        handle = serve.run(Gate.bind(), name="gate", route_prefix=None)
        yield ray.get_runtime_context().gcs_address, drain_file, handle
    finally:
        serve.shutdown()
        ray.shutdown()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_drain(address: str, *args: str, env_file: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", COLUMNS="200")
    env.pop(drain.DRAIN_ENV, None)
    if env_file is not None:
        env[drain.DRAIN_ENV] = str(env_file)
    return subprocess.Popen([BLOCKRAG, "drain", "--ray-address", address, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(path: Path, process: subprocess.Popen) -> None:
    while not path.exists():
        assert process.poll() is None, process.communicate()[0]
        time.sleep(0.1)


def wait_in_flight(count: int) -> None:
    while drain.requests_in_flight() != count:
        time.sleep(0.1)


def test_a_file_the_replicas_do_not_watch_is_refused_before_anything_is_marked(cluster, tmp_path):
    address, drain_file, _ = cluster
    other = tmp_path / "elsewhere" / "draining"
    process = run_drain(address, "--drain-file", str(other), "--grace-period", "5")
    out = process.communicate(timeout=120)[0]
    assert process.returncode == 1, out
    assert "1 replica(s) here watch" in out and repr(str(drain_file)) in " ".join(out.split()), out
    assert not other.exists() and not drain_file.exists()


def test_the_wait_counts_only_the_replicas_of_the_node_asked_about(cluster, tmp_path):
    _, _, handle = cluster
    release = tmp_path / "release"
    response = handle.remote(str(release))
    wait_in_flight(1)
    here = ray.get_runtime_context().get_node_id()
    assert drain.requests_in_flight(here) == 1
    assert drain.requests_in_flight("0" * 56) == 0  # a node without replicas: nothing to wait for
    assert drain.wait_idle(30, node_id="0" * 56) == 0
    release.touch()
    assert response.result(timeout_s=60) == "released"


def test_drain_waits_for_the_call_in_flight_then_reports_none_left(cluster, tmp_path):
    address, drain_file, handle = cluster
    release = tmp_path / "release"
    response = handle.remote(str(release))
    wait_in_flight(1)
    process = run_drain(address, "--grace-period", "120", env_file=drain_file)
    wait_for(drain_file, process)  # marked: from here new calls from the port are refused
    assert process.poll() is None  # still waiting: the call is held until its release file exists
    release.touch()
    out = process.communicate(timeout=180)[0]
    assert process.returncode == 0, out
    assert "Draining this node (1 replica(s))" in out and "No request in flight." in out, out
    assert response.result(timeout_s=60) == "released"
    drain_file.unlink()


def test_at_the_grace_period_drain_reports_the_calls_still_in_flight(cluster, tmp_path):
    address, drain_file, handle = cluster
    release = tmp_path / "release"
    response = handle.remote(str(release))
    wait_in_flight(1)
    process = run_drain(address, "--grace-period", "1", env_file=drain_file)
    out = process.communicate(timeout=180)[0]
    assert process.returncode == 0, out
    assert "1 request(s) still in flight after 1 s." in out, out
    assert drain_file.exists()
    release.touch()
    assert response.result(timeout_s=60) == "released"
    drain_file.unlink()
