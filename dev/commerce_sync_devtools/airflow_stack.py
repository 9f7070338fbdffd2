"""Airflow's components started one by one (api-server, scheduler, dag-processor, triggerer).

``airflow standalone`` cannot restart one component; the event-driven test restarts the triggerer
and the latency bench wants each component as it runs in production. LocalExecutor, the given
metadata database (SQLite by default), only the DAG files asked for, every DAG unpaused, the
simple auth manager in all-admins mode (the REST API needs no token: loopback only).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AirflowStack:
    """Airflow's four components in processes of their own, in a private AIRFLOW_HOME.

    Args:
        root: a directory for the home, the DAG folder and the component logs.
        repo: the repository (its ``dags/`` and ``.venv/bin``).
        dag_ids: DAG files (``dags/<id>.py``) to link into the DAG folder.
        env: environment for every component (connections, data dir, config dir, ...).
        metadata_url: Airflow's metadata database (default: SQLite in the home).
        port: the api-server's port (default: a free one).
    """

    def __init__(
        self,
        root: Path,
        repo: Path,
        dag_ids: Iterable[str],
        env: Mapping[str, str],
        *,
        metadata_url: str | None = None,
        port: int | None = None,
    ) -> None:
        self.root = root
        self.home = root / "airflow"
        self.dags = root / "dags"
        self.logs = root / "component-logs"
        self.bin = repo / ".venv" / "bin"
        for folder in (self.home, self.dags, self.logs, root / "plugins"):
            folder.mkdir(parents=True, exist_ok=True)
        for dag_id in dag_ids:
            link = self.dags / f"{dag_id}.py"
            if not link.exists():
                link.symlink_to(repo / "dags" / f"{dag_id}.py")
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            **env,
            "PATH": f"{self.bin}:{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM", "4"),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url or f"sqlite:///{self.home}/airflow.db",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__OPENLINEAGE__DISABLED": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ processes
    def migrate(self) -> None:
        """Create Airflow's metadata schema (once per home) and the marketplace pools."""
        log = self.logs / "db-migrate.log"
        with log.open("ab") as out:
            done = subprocess.run(
                [str(self.bin / "airflow"), "db", "migrate"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        if done.returncode:
            raise RuntimeError(f"airflow db migrate failed ({done.returncode}):\n{log.read_text()[-3000:]}")
        # One pool per marketplace API, sized in the channel registry (as scripts/common.sh ensure_pools).
        pools = self.home / "pools.json"
        with pools.open("w") as out:
            subprocess.run(
                [str(self.bin / "commerce-sync"), "pools", "--format", "airflow"], env=self.env, stdout=out, check=True
            )
        with log.open("ab") as out:
            done = subprocess.run(
                [str(self.bin / "airflow"), "pools", "import", str(pools)], env=self.env, stdout=out, stderr=out
            )
        if done.returncode:
            raise RuntimeError(f"airflow pools import failed ({done.returncode}):\n{log.read_text()[-3000:]}")

    def start(self, *components: str) -> None:
        """Start the named components (all four by default)."""
        for name in components or COMPONENTS:
            if name not in COMPONENTS:
                raise ValueError(f"unknown Airflow component {name!r}; one of {', '.join(COMPONENTS)}")
            if name in self.processes and self.processes[name].poll() is None:
                continue
            args = [str(self.bin / "airflow"), name]
            if name == "api-server":
                args += ["--port", str(self.port), "--host", "127.0.0.1"]
            with (self.logs / f"{name}.log").open("ab") as out:
                self.processes[name] = subprocess.Popen(
                    args, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True
                )

    def stop(self, *components: str, timeout: float = 40) -> None:
        """Stop the named components (all by default): SIGTERM to the process group, SIGKILL after ``timeout``."""
        for name in components or tuple(reversed(list(self.processes))):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def check_alive(self) -> None:
        """Raise with the log tail if a started component has exited."""
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def __enter__(self) -> AirflowStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ REST API
    def call(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        """One REST call (``/api/v2/...``); JSON in, JSON out."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 only
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http://127.0.0.1 only
            return json.loads(response.read() or b"null")

    def wait_until(self, what: str, probe: Any, timeout: float, interval: float = 0.5) -> Any:
        """Call ``probe`` until it returns something truthy; raise TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                value = probe()
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise
                value = None  # SQLite busy under load: the api-server answers 500, ask again
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                value = None
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

    def wait_ready(self, dag_ids: Iterable[str], timeout: float = 240) -> None:
        """Wait for the api-server, then for every DAG to be parsed, unpaused."""
        self.wait_until("the api-server", lambda: self.call("GET", "/api/v2/version", timeout=3), timeout)
        for dag_id in dag_ids:
            self.wait_until(f"DAG {dag_id} to be parsed", lambda d=dag_id: self._dag(d), timeout)
            self.wait_until(
                f"DAG {dag_id} to be unpaused",
                lambda d=dag_id: self.call("PATCH", f"/api/v2/dags/{d}", {"is_paused": False}),
                timeout,
            )

    def _dag(self, dag_id: str) -> Any:
        try:
            return self.call("GET", f"/api/v2/dags/{dag_id}", timeout=5)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of ``dag_id``, oldest first."""
        answer = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=id&limit=1000")
        return list(answer["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        return list(answer["task_instances"])

    def asset_id(self, name: str) -> int | None:
        """The id Airflow gave the asset named ``name`` (None until a DAG using it is parsed)."""
        assets = self.call("GET", f"/api/v2/assets?name_pattern={name}&limit=100")["assets"]
        ids = [a["id"] for a in assets if a["name"] == name]
        return int(ids[0]) if ids else None

    def asset_events(self, name: str) -> list[dict[str, Any]]:
        """Events of the asset named ``name``, oldest first."""
        asset_id = self.asset_id(name)
        if asset_id is None:
            return []
        answer = self.call("GET", f"/api/v2/assets/events?asset_id={asset_id}&order_by=timestamp&limit=1000")
        return list(answer["asset_events"])

    def remove(self) -> None:
        """Delete the home, DAG folder and logs (after stop())."""
        for path in (self.home, self.dags, self.logs, self.root / "plugins"):
            shutil.rmtree(path, ignore_errors=True)
