"""Airflow on the CeleryExecutor on one machine, without Docker: each component started by hand.

``airflow standalone`` always runs the LocalExecutor, so the Celery path (``make celery``, the Celery
end-to-end test) starts the api-server, scheduler, dag-processor, triggerer, N Celery workers and
optionally Flower itself, each in its own process group with its output in ``<log dir>/<name>.log``.

Workers on one machine would all report the same host name on their task instances; each worker here
gets its own (``celery@<name>`` for Celery, and :func:`worker_hostname` as Airflow's
``[core] hostname_callable`` for the task instances), and none serves logs on a port (the api-server
reads them from the shared ``$AIRFLOW_HOME/logs``).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

WORKER_HOSTNAME_ENV = "COMMERCE_SYNC_WORKER_HOSTNAME"
MARKETPLACE_QUEUE = "marketplace"
HUB_QUEUE = "default"


def worker_hostname() -> str:
    """``[core] hostname_callable`` for workers sharing a machine: ``$COMMERCE_SYNC_WORKER_HOSTNAME`` or the FQDN."""
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()


@dataclass(frozen=True)
class Worker:
    """One Celery worker: its name, the queues it consumes and how many tasks it runs at once."""

    name: str
    queues: tuple[str, ...] = (HUB_QUEUE, MARKETPLACE_QUEUE)
    concurrency: int = 2


def celery_env(
    *,
    metadata_url: str,
    broker_url: str,
    api_port: int,
    parallelism: int = 8,
) -> dict[str, str]:
    """The Airflow settings every component of the Celery stack shares.

    Args:
        metadata_url: SQLAlchemy URL of Airflow's metadata database (PostgreSQL; also the result backend).
        broker_url: the Celery broker, e.g. ``redis://127.0.0.1:6379/0``.
        api_port: the api-server's port on 127.0.0.1 (workers reach the execution API there).
        parallelism: task instances the scheduler runs at once over all workers.
    """
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url,
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
    }


@dataclass
class CeleryStack:
    """The processes of one Celery deployment on this machine.

    Args:
        env: the complete environment of every component (Airflow settings from :func:`celery_env`).
        log_dir: where each component's output goes.
        workers: the Celery workers to start.
        flower_port: start Flower on this port (None: no Flower).
    """

    env: Mapping[str, str]
    log_dir: Path
    workers: tuple[Worker, ...] = (Worker("worker-1"), Worker("worker-2"))
    flower_port: int | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def commands(self) -> dict[str, tuple[list[str], dict[str, str]]]:
        """Component name → (argv, extra environment)."""
        found: dict[str, tuple[list[str], dict[str, str]]] = {
            "api-server": (["airflow", "api-server"], {}),
            "scheduler": (["airflow", "scheduler"], {}),
            "dag-processor": (["airflow", "dag-processor"], {}),
            "triggerer": (["airflow", "triggerer"], {}),
        }
        for worker in self.workers:
            argv = ["airflow", "celery", "worker", "-q", ",".join(worker.queues), "-c", str(worker.concurrency)]
            argv += ["-H", worker.name, "--without-mingle", "--without-gossip", "--skip-serve-logs"]
            found[worker.name] = (argv, {WORKER_HOSTNAME_ENV: worker.name})
        if self.flower_port is not None:
            found["flower"] = (["airflow", "celery", "flower", "-H", "127.0.0.1", "-p", str(self.flower_port)], {})
        return found

    def start(self, names: list[str] | None = None) -> None:
        """Start the components (all, or ``names``), each in its own process group."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, (argv, extra) in self.commands().items():
            if names is not None and name not in names:
                continue
            with (self.log_dir / f"{name}.log").open("ab") as log:
                self.processes[name] = subprocess.Popen(
                    argv, env={**self.env, **extra}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )

    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.env['AIRFLOW__API__PORT']}"

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Wait until the api-server answers, its health shows the scheduler, dag-processor and triggerer
        healthy, and every worker logged that it is ready.

        Raises:
            RuntimeError: a component exited or did not get ready in time (naming it and its log).
        """
        deadline = time.monotonic() + timeout
        pending = {"api-server", *(w.name for w in self.workers)}
        while pending and time.monotonic() < deadline:
            self.check_alive()
            if "api-server" in pending and self._healthy():
                pending.discard("api-server")
            for worker in self.workers:
                log = self.log_dir / f"{worker.name}.log"
                ready = log.exists() and f"@{worker.name} ready." in log.read_text(errors="replace")
                if worker.name in pending and ready:
                    pending.discard(worker.name)
            time.sleep(1)
        if pending:
            raise RuntimeError(f"not ready after {timeout:.0f} s: {sorted(pending)} (logs in {self.log_dir})")

    def _healthy(self) -> bool:
        import json

        try:
            with urllib.request.urlopen(f"{self.api_url()}/api/v2/monitor/health", timeout=5) as response:  # noqa: S310
                health = json.load(response)
        except OSError:
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(part) or {}).get("status") == "healthy" for part in parts)

    def check_alive(self) -> None:
        """Raise if a started component has exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {self.log_dir / f'{name}.log'}")

    def kill(self, name: str) -> None:
        """SIGKILL a component's whole process group (a worker: its Celery children and their tasks too)."""
        process = self.processes.pop(name)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM every component's process group, then SIGKILL what is left after ``grace`` seconds."""
        for process in self.processes.values():
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.processes.values():
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        self.processes.clear()


@contextmanager
def running(stack: CeleryStack, timeout: float = 180.0) -> Iterator[CeleryStack]:
    """Start ``stack``, wait until it is ready, stop it afterwards."""
    stack.start()
    try:
        stack.wait_ready(timeout)
        yield stack
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    """``commerce-sync-dev celery``: run the stack in the current environment until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="commerce-sync-dev celery", description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="Celery workers to start (default 2)")
    parser.add_argument("--concurrency", type=int, default=2, help="tasks each worker runs at once (default 2)")
    parser.add_argument("--flower-port", type=int, default=None, help="also start Flower on this port")
    parser.add_argument("--log-dir", type=Path, default=Path(os.environ.get("AIRFLOW_HOME", ".")) / "celery-logs")
    args = parser.parse_args(argv)
    workers = tuple(Worker(f"worker-{i}", concurrency=args.concurrency) for i in range(1, args.workers + 1))
    stack = CeleryStack(dict(os.environ), args.log_dir, workers, args.flower_port)
    stack.start()
    print(f"started {', '.join(stack.processes)}; logs in {args.log_dir}; Ctrl-C stops them", flush=True)
    try:
        stack.wait_ready()
        print(f"ready: Airflow UI {stack.api_url()}", flush=True)
        while True:
            stack.check_alive()
            time.sleep(2)
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
