"""`curate deploy` against a real Prefect server on 127.0.0.1: the deployment exists with its cron
schedule, the scheduler creates runs for it, a served worker executes a triggered run, and the
new dataset version appears in the catalog. Server and worker are stopped by PID at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started, SIGKILL what is left after 15 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def _wait(what: str, check, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}: {log.read_text()[-3000:] if log else ''}")
        value = check()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"{what}: not within {timeout}s" + (f": {log.read_text()[-3000:]}" if log else ""))


@pytest.mark.slow
def test_deployment_on_a_real_server_runs_and_publishes(tmp_path, shared_data):
    from curation.catalog import open_catalog
    from curation.recipe import STAGES

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "nightly-small",
        "sources": [{"path": str(shared_data / "pandalm_testset.jsonl.gz"), "limit": 40}],
        "select": [{"kind": "dedup", "method": "exact"}],
    }))
    catalog = tmp_path / "catalog"
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_MEMO_STORE_PATH": str(tmp_path / "prefect" / "memo_store.toml")}
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=server_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    worker = None
    try:
        def healthy():
            try:
                return httpx.get(f"{api}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait("prefect server health", healthy, 240, server, server_log)
        worker = subprocess.Popen(
            [sys.executable, "-m", "curation", "deploy", str(recipe), "--name", "nightly", "--cron", "0 3 * * *",
             "--catalog", str(catalog), "--serve"],
            env=env, cwd=tmp_path, stdout=worker_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        client = httpx.Client(base_url=api, timeout=10)

        def deployment():
            r = client.get("/deployments/name/curate/nightly")
            return r.json() if r.status_code == 200 else None

        dep = _wait("deployment curate/nightly", deployment, 180, worker, worker_log)
        assert [s["schedule"]["cron"] for s in dep["schedules"]] == ["0 3 * * *"]
        assert dep["parameters"]["catalog"] == str(catalog.resolve())
        assert dep["parameters"]["recipe"] == str(recipe.resolve())
        # typed parameters: what the UI renders as a form (a file path, a choice of stage, a bounded number)
        schema = dep["parameter_openapi_schema"]["properties"]
        assert schema["recipe"]["format"] == "file-path"
        assert schema["until"]["anyOf"][0]["enum"] == list(STAGES)
        assert schema["shard_size"]["minimum"] == 1

        def runs(state: str | None = None):
            body = {"deployments": {"id": {"any_": [dep["id"]]}}}
            if state:
                body["flow_runs"] = {"state": {"type": {"any_": [state]}}}
            return client.post("/flow_runs/filter", json=body).json()

        _wait("scheduled runs of the cron schedule", lambda: runs("SCHEDULED"), 120, worker, worker_log)

        r = client.post(f"/deployments/{dep['id']}/create_flow_run", json={"state": {"type": "SCHEDULED"}})
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]

        def finished():
            state = client.get(f"/flow_runs/{run_id}").json()["state"]["type"]
            return state if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        assert _wait("the triggered flow run", finished, 300, worker, worker_log) == "COMPLETED", worker_log.read_text()[-3000:]
        versions = open_catalog(catalog).versions("nightly-small")
        assert versions["ref"].to_list() == ["nightly-small@v1"]
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
