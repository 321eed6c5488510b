"""The service under real gunicorn with two workers, over HTTP, fed by real flow runs.

The tests in this module share one datastore and one server and run in order:
a cold start, the first good run, a damaged run, a swap under load, restarts.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from service import config
from service.config import KEEPALIVE_REQUESTS
from tests import flows
from tests.server import Server

SWAP_DEADLINE = 2.0


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """An empty datastore, a trainer for it, and gunicorn serving from it."""
    home = tmp_path_factory.mktemp("live")
    trainer = config.load({"LINEUP_HOME": str(home), "METAFLOW_USER": "lineup-trainer"})
    (Path(trainer["DATASTORE_ROOT"]) / ".metaflow").mkdir(parents=True)
    server = Server(home, {"LINEUP_POLL_INTERVAL": "2"})
    server.start()
    try:
        yield server, trainer, flows.sample(home / "data")
    finally:
        server.stop()


def test_cold_start_answers_503_then_picks_up_the_first_good_run(live):
    server, trainer, data = live
    response = server.get("/recommendations", params={"user_id": "u-000001"})
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.json()["error"]["code"] == "model_unavailable"
    assert server.get("/readyz").status_code == 503

    run_id = flows.good_run(trainer, data)
    server.wait_for(lambda: server.all_workers_serve(run_id), 30, f"serving {run_id}")
    response = server.get("/recommendations", params={"user_id": "u-000001", "n": 3})
    assert response.status_code == 200
    assert response.headers["X-Model-Run"] == run_id and len(response.json()["items"]) == 3


def test_a_keep_alive_connection_is_closed_after_its_quota_of_requests(live):
    # So that a client's connections cannot all stay on one worker (gunicorn_conf.pre_request).
    server, _, _ = live
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        closing = []
        for _ in range(KEEPALIVE_REQUESTS):
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            assert response.status == 200
            response.read()
            closing.append(response.getheader("Connection", "").lower() == "close")
    finally:
        connection.close()
    assert closing == [False] * (KEEPALIVE_REQUESTS - 1) + [True]


def test_a_damaged_run_is_rejected_and_the_good_one_keeps_serving(live):
    server, trainer, data = live
    serving = server.get("/readyz").json()["run_id"]
    damaged = flows.damaged_run(trainer, data, Path(trainer["HOME"]))
    result = server.admin("POST", "/admin/reload").json()
    assert result["after"] == serving
    assert result["candidates"][0]["run_id"] == damaged
    assert result["candidates"][0]["verdict"] == "rejected"
    status = server.admin("GET", "/admin/status").json()
    assert any(v["run_id"] == damaged and not v["passed"] for v in status["verdicts"])
    assert server.all_workers_serve(serving)


def test_a_reload_reaches_every_worker_and_no_request_fails_during_it(live):
    server, trainer, data = live
    new = flows.good_run(trainer, data)
    failures, answers, stop = [], [], threading.Event()

    def load():
        session = requests.Session()
        deadline = time.monotonic() + 60
        i = 0
        while not stop.is_set() and time.monotonic() < deadline:
            i += 1
            try:
                response = session.get(server.url + "/recommendations",
                                       params={"user_id": f"u-{i % 1500:06d}"}, timeout=10)
                answers.append(response.headers.get("X-Model-Run"))
                if response.status_code != 200:
                    failures.append(response.status_code)
            except requests.RequestException as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        result = server.admin("POST", "/admin/reload").json()
        returned = time.monotonic()
        assert result["after"] == new
        server.wait_for(lambda: server.all_workers_serve(new), SWAP_DEADLINE, "swapped")
        assert time.monotonic() - returned <= SWAP_DEADLINE
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert len(answers) > 50 and answers[-1] == new


def test_workers_and_the_whole_service_come_back_on_the_decision(live):
    server, trainer, data = live
    serving = server.get("/readyz").json()["run_id"]
    victim = min(server.worker_pids())
    os.kill(victim, signal.SIGKILL)
    server.wait_for(lambda: victim not in server.worker_pids() and
                    server.all_workers_serve(serving), 30, "replacing the killed worker")

    server.stop()
    server.start()
    took = server.wait_for(lambda: server.all_workers_serve(serving), 30, "ready again")
    assert took < 10
    last = server.admin("GET", "/admin/status").json()["last_selection"]
    assert all(c["remembered"] for c in last["candidates"])
