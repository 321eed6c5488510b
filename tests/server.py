"""Run the real service under gunicorn on 127.0.0.1 for a test, and always stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from tests.conftest import ADMIN_TOKEN


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A gunicorn master with its workers, logging into a file."""

    def __init__(self, home: Path, env: Mapping[str, str] | None = None, workers: int = 2, *,
                 python: str = sys.executable, user: str | None = None,
                 cwd: Path | None = None):
        self.python = python
        self.cwd = cwd
        self.user = user  # run gunicorn as this account (the caller must be root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / f"gunicorn-{self.port}.log"
        self.env = {
            **os.environ,
            "LINEUP_HOME": str(home),
            "LINEUP_BIND": f"127.0.0.1:{self.port}",
            "LINEUP_WORKERS": str(workers),
            "LINEUP_ADMIN_TOKEN": ADMIN_TOKEN,
            "LINEUP_WATCH_INTERVAL": "0.2",
            "METAFLOW_USER": "lineup-service",
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Server:
        """Start gunicorn and wait until it answers /healthz."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [self.python, "-m", "gunicorn", "-c", "python:service.gunicorn_conf",
             "service:create_app()"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            user=self.user, cwd=self.cwd)
        log.close()
        self.wait_for(lambda: self.get("/healthz").status_code == 200, timeout, "healthy")
        return self

    def stop(self) -> None:
        """Stop gracefully, then by force; never leave a process behind."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kwargs)

    def admin(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.url + path, timeout=300,
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, **kwargs)

    def wait_for(self, condition, timeout: float, what: str) -> float:
        """Poll ``condition`` until true; return the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if condition():
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError(f"not {what} within {timeout} s; log:\n{self.log()}")

    def worker_pids(self) -> set[int]:
        """Return the pids of the master's live workers."""
        pid = self.process.pid
        return {int(child) for child in
                Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}

    def all_workers_serve(self, run_id: str, workers: int = 2) -> bool:
        """True when every live worker reports serving ``run_id``."""
        reports = {w["pid"]: w["run_id"] for w in self.admin("GET", "/admin/status").json()
                   ["workers"]}
        pids = self.worker_pids()
        return len(pids) == workers and all(reports.get(pid) == run_id for pid in pids)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]
