"""Reliability: requests keep succeeding on the current model and no state is lost.

Workers die, gunicorn restarts, the datastore or the state folder goes away,
a candidate's checks hang, reloads pile up and admin tokens are guessed. The
module trains two good runs once; each case starts its own gunicorn (two
workers, a state folder of its own) and always stops it. Traffic goes only to
127.0.0.1, and every loop is bounded in count and in time.

``LINEUP_SOAK_SECONDS`` sets the soak test's length (default 600) and
``LINEUP_SOAK_RELOAD_EVERY`` its reload period (default 30 s); it runs only
with ``pytest -m slow``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from service import admin as admin_module
from service import config, create_app, gate
from service.status import WORKER_REPORT_EVERY
from tests import flows
from tests.conftest import ADMIN_TOKEN
from tests.server import Load, Server

#: Each case waits at most this long for the service to reach a state.
SETTLE = 30


# -- fixtures -----------------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A datastore with two good runs, and a way to train another one."""
    home = tmp_path_factory.mktemp("reliability")
    trainer = config.load({"LINEUP_HOME": str(home), "METAFLOW_USER": "lineup-trainer"})
    data = flows.sample(home / "data")
    with ThreadPoolExecutor(2) as pool:  # two trainings at once: half the wait
        good = sorted(pool.map(lambda _: flows.good_run(trainer, data), range(2)), key=int)
    return SimpleNamespace(datastore=trainer["DATASTORE_ROOT"], good=good,
                           train=lambda: flows.good_run(trainer, data))


@pytest.fixture
def serve(store, tmp_path):
    """Start gunicorn servers on the module's datastore with this test's state; stop them all."""
    servers: list[Server] = []

    def start(**env: str) -> Server:
        # One instance's own decision in its state folder (the module's runs are shared
        # by every case; tests/test_fleet.py covers the decision shared beside them).
        server = Server(tmp_path, {"LINEUP_DATASTORE_ROOT": store.datastore,
                                   "LINEUP_STATE_DIR": str(tmp_path / "state"),
                                   "LINEUP_DECISION_ROOT": str(tmp_path / "state"),
                                   "LINEUP_POLL_INTERVAL": "3600", **env})
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


# -- helpers ------------------------------------------------------------------

def admin(server: Server, method: str, path: str, **kwargs) -> requests.Response:
    """Call the admin API on a fresh connection, so that calls spread over the workers."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Connection": "close"}
    return requests.request(method, server.url + path, headers=headers, timeout=300, **kwargs)


def worker_runs(server: Server, attempts: int = 40) -> dict[int, str | None]:
    """Ask /readyz on fresh connections; return the run each answering worker serves."""
    seen: dict[int, str | None] = {}
    for _ in range(attempts):
        body = server.get("/readyz", headers={"Connection": "close"}).json()
        seen[body["pid"]] = body["run_id"]
    return seen


def settle(server: Server) -> str:
    """Wait until both workers serve the decided run; return it."""
    server.wait_for(lambda: server.get("/readyz").status_code == 200, SETTLE, "ready")
    decided = server.admin("GET", "/admin/status").json()["decided_run_id"]
    server.wait_for(lambda: server.all_workers_serve(decided), SETTLE, f"serving {decided}")
    return decided


def decision(server: Server) -> dict:
    """Read the decision file of the server's state folder."""
    return json.loads((Path(server.env["LINEUP_STATE_DIR"]) / "decision.json").read_text())


def lock_holder(state_dir: Path) -> int | None:
    """Return the pid holding the selection lock's flock, from /proc/locks."""
    try:
        inode = (state_dir / "selection.lock").stat().st_ino
    except FileNotFoundError:
        return None
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and "->" not in fields and \
                fields[-3].rsplit(":", 1)[-1] == str(inode):
            return int(fields[-4])
    return None


# -- 1. a worker killed during a reload -----------------------------------------

def test_a_worker_killed_during_a_reload_is_replaced_and_serves_the_decided_run(store, serve):
    server = serve()
    serving = settle(server)
    state = Path(server.env["LINEUP_STATE_DIR"])
    new = store.train()
    reply: dict = {}

    def reload():
        try:
            reply["response"] = server.admin("POST", "/admin/reload")
        except requests.RequestException as exc:
            reply["error"] = exc

    with Load(server.url) as load:
        caller = threading.Thread(target=reload)
        caller.start()
        try:
            holder = None
            deadline = time.monotonic() + SETTLE
            while holder is None and time.monotonic() < deadline:
                holder = lock_holder(state)
                time.sleep(0.005)
            assert holder in server.worker_pids(), "no worker took the selection lock"
            os.kill(holder, signal.SIGKILL)
            killed_at = time.monotonic()
        finally:
            caller.join(timeout=60)
        # The killed worker's selection never wrote its decision; the worker that
        # replaces it selects when it starts, and every worker follows.
        server.wait_for(lambda: holder not in server.worker_pids()
                        and server.all_workers_serve(new), SETTLE, "replacing the killed worker")
        replaced_at = time.monotonic()
        time.sleep(1)
    assert "error" in reply, f"the reload finished before the kill: {reply}"
    assert decision(server)["serving"]["run_id"] == new
    assert decision(server)["verdicts"][new]["passed"] is True
    # Only requests in flight on the killed worker may fail: one per load thread at most.
    assert len(load.failures) <= 4, load.failures
    assert all("Connection" in failure and killed_at - 1 <= at <= killed_at + 5
               for at, failure in load.failures), load.failures
    assert load.runs() <= {serving, new} and load.runs(replaced_at) == {new}
    assert set(worker_runs(server).values()) == {new}
    assert not list(state.glob(".decision-*"))


# -- 2. a graceful restart under load -------------------------------------------

def test_a_graceful_restart_under_load_fails_no_request(serve):
    server = serve()
    serving = settle(server)
    old = server.worker_pids()
    with Load(server.url) as load:
        time.sleep(0.5)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for(lambda: not server.worker_pids() & old
                        and server.all_workers_serve(serving), SETTLE, "new workers")
        restarted_at = time.monotonic()
        time.sleep(1)
    assert load.failures == []
    assert load.runs() == {serving} and len(load.runs(restarted_at)) == 1
    assert len(load.answers) > 50
    assert set(worker_runs(server).values()) == {serving}


# -- 3. the datastore goes away and comes back ------------------------------------

def test_a_datastore_that_goes_away_keeps_serving_and_recovers(store, serve, tmp_path):
    link = tmp_path / "datastore"
    link.symlink_to(store.datastore)
    server = serve(LINEUP_DATASTORE_ROOT=str(link))
    serving = settle(server)
    # One keep-alive connection reaches one worker, whose last_error we follow.
    operator = requests.Session()
    operator.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    with Load(server.url) as load:
        link.unlink()
        try:
            response = operator.post(server.url + "/admin/reload", timeout=60)
            assert response.status_code == 502, response.text
            error = response.json()["error"]
            assert error["code"] == "selection_failed"
            assert "missing or unreadable" in error["message"]
            assert f"still serving run {serving}" in error["message"]
            status = operator.get(server.url + "/admin/status", timeout=10).json()
            assert "missing or unreadable" in status["last_error"]["message"]
            assert status["serving"]["run_id"] == serving
            # Every worker shows the failed selection: it is in the decision.
            for _ in range(6):
                other = admin(server, "GET", "/admin/status")
                assert "missing or unreadable" in other.json()["last_selection"]["error"]
            runs = server.admin("GET", "/admin/runs")
            assert runs.status_code == 502 and \
                runs.json()["error"]["code"] == "datastore_unavailable"
            assert server.get("/readyz").json()["run_id"] == serving
        finally:
            link.symlink_to(store.datastore)
        response = operator.post(server.url + "/admin/reload", timeout=60)
        assert response.status_code == 200 and response.json()["after"] == serving
        status = operator.get(server.url + "/admin/status", timeout=10).json()
        assert status["last_error"] is None and status["last_selection"]["error"] is None
    assert load.failures == []
    assert load.runs() == {serving} and len(load.answers) > 20
    assert decision(server)["serving"]["run_id"] == serving


# -- 4. a candidate whose checks take too long or hang ---------------------------------

def test_checks_over_the_time_limit_reject_the_candidate_while_requests_go_on(store, serve):
    # Real checks on a real run take far more than 1 ms (the latency check alone makes
    # hundreds of recommend calls): the limit rejects the run.
    # The first server (default limit) chose the newest run; the second judges an older one.
    first = serve()
    serving = settle(first)
    first.stop()
    older = next(run for run in store.good if run not in decision(first)["verdicts"])
    server = serve(LINEUP_CHECK_TIMEOUT="0.001")
    assert settle(server) == serving
    with Load(server.url) as load:
        response = server.admin("POST", "/admin/pin", json={"run_id": older})
        time.sleep(0.5)
    assert response.status_code == 422, response.text
    assert "time_limit" in response.json()["error"]["message"]
    verdict = decision(server)["verdicts"][older]
    assert verdict["failed_checks"] == ["time_limit"] and not verdict["passed"]
    assert load.failures == [] and load.runs() == {serving}
    assert decision(server)["serving"]["run_id"] == serving and decision(server)["pin"] is None
    assert "abandoned after" in server.log_path.read_text()


def test_a_hanging_candidate_never_blocks_requests(store, tmp_path, monkeypatch):
    with warnings.catch_warnings():  # metaflow's vendored yaml warns on its first import
        warnings.simplefilter("ignore", DeprecationWarning)
        import metaflow  # noqa: F401
    settings = config.load({"LINEUP_HOME": str(tmp_path), "METAFLOW_USER": "lineup-test",
                            "LINEUP_ADMIN_TOKEN": ADMIN_TOKEN, "LINEUP_CHECK_TIMEOUT": "3",
                            "LINEUP_DATASTORE_ROOT": store.datastore,
                            "LINEUP_DECISION_ROOT": str(tmp_path / ".lineup"),  # this test's
                            "LINEUP_MAX_WALKBACK": "1"})
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    newest = app.extensions["lineup"].source.candidates(limit=1)[0].run_id
    older = next(run for run in store.good if run != newest)
    assert app.test_client().post("/admin/pin", json={"run_id": older},
                                  headers=headers).status_code == 200

    real, hung, release = gate.evaluate, threading.Event(), threading.Event()

    def hang_on_newest(source, record, settings, serving=None):
        if record.run_id == newest:
            hung.set()
            release.wait(60)  # a check that never returns, until the test ends
        return real(source, record, settings, serving)

    monkeypatch.setattr(gate, "evaluate", hang_on_newest)
    outcome: dict = {}
    answered: list[tuple[int, str | None]] = []

    def unpin():
        outcome["response"] = app.test_client().post("/admin/unpin", headers=headers)

    def ask(index: int) -> None:
        client = app.test_client()
        deadline = time.monotonic() + 10
        while "response" not in outcome and time.monotonic() < deadline:
            response = client.get(f"/recommendations?user_id=u-{index:06d}&n=3")
            answered.append((response.status_code, response.headers.get("X-Model-Run")))
            time.sleep(0.01)

    selection = threading.Thread(target=unpin)
    askers = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    try:
        selection.start()
        assert hung.wait(10), "the newest run was never evaluated"
        for asker in askers:
            asker.start()
        status = app.test_client().get("/admin/status", headers=headers)
        assert status.status_code == 200 and status.get_json()["serving"]["run_id"] == older
        selection.join(10)
        for asker in askers:
            asker.join(15)
    finally:
        release.set()
        selection.join(5)
    result = outcome["response"].get_json()
    assert outcome["response"].status_code == 200
    assert result["candidates"][0]["run_id"] == newest
    assert result["candidates"][0]["failed_checks"] == ["time_limit"]
    assert result["after"] == older
    assert len(answered) > 20 and set(answered) == {(200, older)}


# -- 5. many reloads at once ---------------------------------------------------------

def test_concurrent_reloads_evaluate_each_candidate_once(store, serve):
    server = serve()
    serving = settle(server)
    new = store.train()
    barrier = threading.Barrier(12)

    def reload(_: int) -> requests.Response:
        barrier.wait(30)
        return admin(server, "POST", "/admin/reload")

    with Load(server.url) as load, ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(reload, range(12)))
        server.wait_for(lambda: server.all_workers_serve(new), SETTLE, f"serving {new}")
    bodies = [response.json() for response in responses]
    assert [response.status_code for response in responses] == [200] * 12, bodies
    assert {body["after"] for body in bodies} == {new}
    evaluated = [c for body in bodies if not body.get("joined") for c in body["candidates"]
                 if c["run_id"] == new and not c["remembered"]]
    assert len(evaluated) == 1, bodies
    assert any(body.get("joined") for body in bodies)
    assert load.failures == [] and load.runs() <= {serving, new}

    on_disk = decision(server)
    assert on_disk["serving"]["run_id"] == new
    assert on_disk["verdicts"][new]["passed"] and on_disk["verdicts"][serving]["passed"]
    log = server.log_path.read_text()
    assert log.count(f"run {new} passed every check") == 1
    assert log.count(f"run {serving} passed every check") == 1
    # Every selection that ran is on disk in order; none was lost to another.
    own = sorted(body["selection"] for body in bodies if not body.get("joined"))
    assert own == sorted(set(own)) and on_disk["generation"] == max(own)
    metrics = server.get("/metrics").text
    assert 'lineup_check_duration_seconds_count{check="load_model"} 2.0' in metrics


# -- 6. the state folder is full -------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs for the state folder; skip where mounting is not permitted.

    It holds the small world's model copy (5 MB with schema 8's per-city
    scores) and the decision until the test fills it.
    """
    mount = tmp_path / "state"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        # The servers stop first (fixture order); a lazy unmount outlives stray mmaps.
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Write into ``folder`` until the disk is full; return the filler file."""
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        for _ in range(10_000):  # 64 KB at a time: far more than the disk holds
            try:
                handle.write(b"\0" * 65536)
                handle.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return filler


def test_a_full_state_folder_keeps_serving_and_loses_no_decision(store, small_disk, serve):
    server = serve()
    serving = settle(server)
    other = next(run for run in store.good if run != serving)
    before = (small_disk / "decision.json").read_bytes()
    operator = requests.Session()
    operator.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    with Load(server.url) as load:
        filler = fill(small_disk)
        try:
            response = operator.post(server.url + "/admin/reload", timeout=60)
            assert response.status_code == 502, response.text
            assert "disk full" in response.json()["error"]["message"]
            pinned = operator.post(server.url + "/admin/pin", json={"run_id": other}, timeout=60)
            assert pinned.status_code == 502, pinned.text
            status = operator.get(server.url + "/admin/status", timeout=10).json()
            assert status["serving"]["run_id"] == serving
            assert "disk full" in status["last_error"]["message"] or \
                "No space left" in status["last_error"]["message"]
            assert (small_disk / "decision.json").read_bytes() == before
            # Stay full past a worker report period: the workers' reports fail too.
            time.sleep(WORKER_REPORT_EVERY + 1)
            assert server.get("/readyz").json()["run_id"] == serving
        finally:
            filler.unlink()
        response = operator.post(server.url + "/admin/reload", timeout=60)
        assert response.status_code == 200 and response.json()["after"] == serving
        assert operator.get(server.url + "/admin/status", timeout=10).json()["last_error"] is None
        # Every worker reports again within a report period, and that clears its error.

        def every_worker_recovered() -> bool:
            errors = {body["worker_pid"]: body["last_error"] for body in
                      (admin(server, "GET", "/admin/status").json() for _ in range(20))}
            return set(errors) == server.worker_pids() and not any(errors.values())

        server.wait_for(every_worker_recovered, 3 * WORKER_REPORT_EVERY, "recovered")
    assert load.failures == [] and load.runs() == {serving}
    on_disk = decision(server)
    assert on_disk["serving"]["run_id"] == serving and on_disk["pin"] is None
    assert json.loads(before)["verdicts"].items() <= on_disk["verdicts"].items()
    log = server.log_path.read_text()
    assert "disk full" in log and log.count("No space left") < 10
    assert not list(small_disk.glob(".decision-*"))


# -- 7. guessed admin tokens ------------------------------------------------------------

BAD_AUTHORIZATIONS = [
    None, "", "Bearer", "Bearer ", "bearer wrong", "Bearer " + ADMIN_TOKEN[:-1],
    "Bearer " + ADMIN_TOKEN + "x", "Basic " + ADMIN_TOKEN, ADMIN_TOKEN, "Bearer  ",
    "Bearer " + ADMIN_TOKEN.upper(), "Bearer " + "a" * 4000, "Bearer \u00e9t\u00e9",
    "Bearer " + ADMIN_TOKEN.replace("-", "_"),
]


def test_guessed_admin_tokens_always_get_401_and_compare_in_constant_time(app, monkeypatch):
    compared = []
    real = admin_module.hmac.compare_digest

    def counting(a, b):
        compared.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(admin_module.hmac, "compare_digest", counting)
    client = app.test_client()
    answers = []
    for i in range(300):
        value = BAD_AUTHORIZATIONS[i % len(BAD_AUTHORIZATIONS)]
        headers = {} if value is None else {"Authorization": value}
        method, path = [("POST", "/admin/reload"), ("GET", "/admin/status"),
                        ("POST", "/admin/pin"), ("GET", "/admin/runs")][i % 4]
        try:
            response = client.open(path, method=method, headers=headers, json={"run_id": "1"})
        except UnicodeEncodeError:
            continue  # the test client cannot send this header; gunicorn gets it below
        answers.append((response.status_code, response.get_json()["error"]["code"]))
    assert set(answers) == {(401, "unauthorized")} and len(answers) >= 250
    # Every bearer guess went through compare_digest on bytes, never through ==.
    assert compared and set(compared) == {(bytes, bytes)}
    assert client.get("/admin/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                      ).status_code == 200


def test_guessed_admin_tokens_over_http_never_get_a_5xx(serve):
    server = serve()
    session = requests.Session()
    raw = [b"Bearer \xff\xfe", b"Bearer \xc3\xa9", "Bearer " + ADMIN_TOKEN[:-1]]
    for i in range(200):
        value = (BAD_AUTHORIZATIONS + raw)[i % (len(BAD_AUTHORIZATIONS) + len(raw))]
        headers = {} if value is None else {"Authorization": value}
        with contextlib.suppress(UnicodeEncodeError):
            response = session.post(server.url + "/admin/reload", headers=headers, timeout=10)
            assert response.status_code == 401, (value, response.text)
            assert response.json() == {"error": {
                "status": 401, "code": "unauthorized",
                "message": "a valid 'Authorization: Bearer <token>' is required"}}
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


# -- 8. soak ---------------------------------------------------------------------------

def rss_kb(pid: int) -> int:
    """Return a process's resident set size in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


SOAK_SECONDS = float(os.environ.get("LINEUP_SOAK_SECONDS", "600"))


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS + 300)  # the soak's own length, over the suite's limit
def test_soak_reloads_under_load_keep_memory_flat(store, serve):
    seconds = SOAK_SECONDS
    every = float(os.environ.get("LINEUP_SOAK_RELOAD_EVERY", "30"))
    # Warm: a minute has passed (a quarter of a short smoke) and both runs were loaded.
    warm_up = min(60.0, seconds / 4)
    server = serve()
    settle(server)
    pids = server.worker_pids()
    baseline: dict[int, int] = {}
    reloads = 0
    with Load(server.url, threads=3, seconds=seconds + 60) as load:
        started = time.monotonic()
        next_reload = started + every
        while time.monotonic() - started < seconds:
            if not baseline and reloads >= 2 and time.monotonic() - started >= warm_up:
                baseline = {pid: rss_kb(pid) for pid in pids}
            if time.monotonic() >= next_reload:
                target = store.good[reloads % 2]
                response = server.admin("POST", "/admin/pin", json={"run_id": target})
                assert response.status_code == 200 and response.json()["after"] == target
                server.wait_for(lambda: server.all_workers_serve(target), SETTLE, target)
                reloads += 1
                next_reload += every
            time.sleep(0.5)
        assert server.worker_pids() == pids, "a worker was replaced during the soak"
        final = {pid: rss_kb(pid) for pid in pids}
    assert load.failures == []
    assert baseline, "the soak ended before it was warm"
    assert reloads >= int(seconds // every) - 1
    assert len(load.answers) > seconds * 10
    for pid in pids:
        assert final[pid] <= baseline[pid] * 1.05, (pid, baseline[pid], final[pid])
