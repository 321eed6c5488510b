"""A fleet: three `lineup serve` instances, two workers each, one decision beside the runs.

Each instance has its own state folder and port, as three hosts behind a
load balancer would; they share only the run store. The module runs twice:
on a shared datastore folder, and on an S3 datastore served by a local moto
server (runs' metadata stays in a shared local folder: there is no metadata
service here). Commands go to one instance and must reach all three within
5 s of the answer; a light load runs on every instance from start to end, and
no request may fail except at the instance killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from service import config
from tests import flows
from tests.conftest import REGION
from tests.server import Load, Server

#: Each case, with the module's fleet made in its first one's setup (four trainings).
pytestmark = pytest.mark.timeout(900)

#: A command sent to one instance reaches every instance within this (issue 14).
REACH = 5.0
LEASE_SECONDS = 3
FLOW = "LineupTrainFlow"


def _s3_environment(aws, bucket: str, metadata: Path, tmp: Path) -> dict[str, str]:
    """Metaflow on the local S3 for data, a shared folder for metadata; nothing leaves 127.0.0.1."""
    return {
        "LINEUP_METADATA": "service",
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": f"s3://{bucket}/metaflow",
        "METAFLOW_S3_ENDPOINT_URL": aws.url,
        "METAFLOW_DEFAULT_METADATA": "local",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(metadata),
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "NO_PROXY": "127.0.0.1,localhost",
    }


@pytest.fixture(scope="module", params=["folder", "s3"])
def fleet(request, tmp_path_factory):
    """Two good runs, three instances serving the newer, and a load on each; all stopped."""
    home = tmp_path_factory.mktemp(f"fleet-{request.param}")
    shared = home / "datastore"
    env = {"LINEUP_DATASTORE_ROOT": str(shared), "LINEUP_POLL_INTERVAL": "3600",
           "LINEUP_LEASE_SECONDS": str(LEASE_SECONDS)}
    lease_key = f".lineup/{FLOW}/selection-lease.json"
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "folder":
            read_lease = (shared / lease_key).read_bytes
        else:
            import boto3

            aws = request.getfixturevalue("aws")
            bucket = f"fleet-{time.monotonic_ns()}"
            env |= _s3_environment(aws, bucket, shared, home)
            for key, value in env.items():  # the trainer is a subprocess of this process
                patch.setenv(key, value)
            s3 = boto3.client("s3", endpoint_url=aws.url)
            s3.create_bucket(Bucket=bucket)

            def read_lease() -> bytes:
                return s3.get_object(Bucket=bucket,
                                     Key=f"metaflow/{lease_key}")["Body"].read()
        trainer = config.load({**env, "LINEUP_HOME": str(home), "METAFLOW_USER": "trainer"})
        data = flows.sample(home / "data")
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda _: flows.good_run(trainer, data), range(2)))
        for i in range(3):  # each instance its own home: state folder, metrics, log
            (home / f"instance-{i}").mkdir()
        servers = [Server(home / f"instance-{i}", env) for i in range(3)]
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(Server.start, servers))
        for server in servers:  # a cold start: no decision yet, the fleet makes one
            ready_means_every_worker_serves(server)
        fleet = SimpleNamespace(kind=request.param, home=home, shared=shared, env=env,
                                servers=servers, loads=[], runs=runs, killed=[],
                                train=lambda: flows.good_run(trainer, data),
                                read_lease=read_lease,
                                aws=request.getfixturevalue("aws") if request.param == "s3"
                                else None)
        try:
            # Trained side by side, either run may have finished last: the
            # decided one serves, the other is the one to pin back to.
            decided = servers[0].admin("GET", "/admin/status").json()["decided_run_id"]
            fleet.runs = [next(run for run in runs if run != decided), decided]
            wait_all(fleet, decided, 60)
            fleet.loads = [light_load(server) for server in servers]
            yield fleet
        finally:
            for load in fleet.loads:
                load.__exit__(None, None, None)
            for server in fleet.servers:
                server.stop()


def ready_means_every_worker_serves(server: Server) -> None:
    """Once /readyz says 200, no worker of the instance answers 503 (issue 14's cold start)."""
    server.wait_for(lambda: server.get("/readyz").status_code == 200, 60, "ready")
    fresh = {"Connection": "close"}  # each request may land on either worker
    answers = [server.get("/recommendations", params={"user_id": "u-000001"}, headers=fresh)
               for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 20, answers[0].text


def light_load(server: Server) -> Load:
    """Start one thread of requests on ``server``, for as long as the module may take."""
    return Load(server.url, threads=1, pause=0.02, seconds=1200).__enter__()


def everywhere(fleet, run_id: str) -> bool:
    """True when every worker of every live instance serves ``run_id``."""
    return all(server.all_workers_serve(run_id) for server in fleet.servers)


def wait_all(fleet, run_id: str, timeout: float = REACH) -> float:
    """Wait until the whole fleet serves ``run_id``; return the seconds it took."""
    return fleet.servers[0].wait_for(lambda: everywhere(fleet, run_id), timeout,
                                     f"every instance serving {run_id}")


def judged(fleet, run_id: str) -> int:
    """How many times the fleet judged ``run_id`` (each judgement logs one verdict)."""
    logs = [path.read_text(errors="replace") for path in fleet.home.glob("*/gunicorn-*.log")]
    return sum(log.count(f"run {run_id} passed every check") for log in logs)


def ok(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def test_pin_unpin_and_forced_pin_through_one_instance_reach_all_three(fleet):
    older, newer = fleet.runs
    first, second, third = fleet.servers
    assert ok(first.admin("POST", "/admin/pin", json={"run_id": older}))["after"] == older
    wait_all(fleet, older)
    assert ok(second.admin("POST", "/admin/unpin"))["after"] == newer
    wait_all(fleet, newer)
    forced = ok(third.admin("POST", "/admin/pin", json={"run_id": older, "force": True}))
    assert forced["candidates"][0]["verdict"] == "forced"
    wait_all(fleet, older)
    assert all(w["run_id"] == older for s in fleet.servers
               for w in s.admin("GET", "/admin/status").json()["workers"])
    ok(first.admin("POST", "/admin/unpin"))
    wait_all(fleet, newer)
    # Each run was judged once for the whole fleet, whichever instance was asked.
    assert judged(fleet, older) == 1 and judged(fleet, newer) == 1


def test_concurrent_reloads_on_all_three_judge_a_new_run_once_and_agree(fleet):
    newest = fleet.train()
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda s: s.admin("POST", "/admin/reload"), fleet.servers))
    assert [ok(answer)["after"] for answer in answers] == [newest] * 3
    wait_all(fleet, newest)
    assert judged(fleet, newest) == 1  # the lease made the others wait, then remember
    status = ok(fleet.servers[0].admin("GET", "/admin/status"))
    assert status["decided_run_id"] == newest
    assert status["verdicts"][0]["run_id"] == newest


def test_an_instance_killed_mid_selection_blocks_the_fleet_one_lease_term_at_most(fleet):
    victim = fleet.servers[0]
    fleet.victim = victim_id = ok(victim.admin("GET", "/admin/status"))["instance"]
    new = fleet.train()
    threading.Thread(target=lambda: _quietly(victim.admin, "POST", "/admin/reload"),
                     daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            lease = json.loads(fleet.read_lease())
        except Exception:  # not written yet
            lease = {}
        if lease.get("instance") == victim_id:
            break
        time.sleep(0.005)
    else:
        raise AssertionError("the victim never took the selection lease")
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait()
    fleet.loads[0].__exit__(None, None, None)
    fleet.killed.append((fleet.loads.pop(0), time.monotonic()))
    fleet.servers.pop(0)

    # Retried through another instance (as a balancer would): it waits out the
    # lease, then its reload reaches the other instance too.
    started = time.monotonic()
    assert ok(fleet.servers[0].admin("POST", "/admin/reload"))["after"] == new
    assert time.monotonic() - started <= LEASE_SECONDS + 5
    wait_all(fleet, new)
    assert judged(fleet, new) <= 2  # the killed selection's verdict was never written

    # The killed host comes back on its old state folder, on a new port.
    back = Server(Path(victim.env["LINEUP_HOME"]), fleet.env).start()
    fleet.servers.append(back)
    wait_all(fleet, new, 30)
    fleet.loads.append(light_load(back))
    listed = {i["instance"]: i for i in ok(back.admin("GET", "/admin/status"))["instances"]}
    assert victim_id in listed and len(listed) == 4  # the dead one for a minute


def _quietly(call, *args) -> None:
    try:
        call(*args)
    except requests.RequestException:
        pass  # the instance was killed under its caller


def test_the_store_unreachable_keeps_every_instance_serving_and_it_catches_up(fleet):
    serving = fleet.servers[0].admin("GET", "/admin/status").json()["decided_run_id"]
    cut, restore = _cut(fleet)
    cut()
    try:
        time.sleep(3)
        for server in fleet.servers:
            server.wait_for(lambda s=server: (s.admin("GET", "/admin/status").json()
                                              ["last_error"] or {}).get("message"),
                            10, "reporting the unreachable store")
        failed = fleet.servers[1].admin("POST", "/admin/pin", json={"run_id": fleet.runs[0]})
        assert failed.status_code in (502, 503), failed.text
        assert everywhere(fleet, serving)
    finally:
        restore()
    # Back: a command reaches everyone again, and the stale killed instance is flagged.
    ok(fleet.servers[1].admin("POST", "/admin/pin", json={"run_id": fleet.runs[0]}))
    wait_all(fleet, fleet.runs[0])
    ok(fleet.servers[2].admin("POST", "/admin/unpin"))
    wait_all(fleet, serving)
    status = ok(fleet.servers[0].admin("GET", "/admin/status"))
    assert [i["instance"] for i in status["instances"] if i["stale"]] == [fleet.victim], status


def _cut(fleet):
    """Return functions that make the shared store unreachable and bring it back."""
    if fleet.kind == "folder":
        away = fleet.shared.with_name("datastore-away")
        return (lambda: fleet.shared.rename(away)), (lambda: away.rename(fleet.shared))
    from moto.server import ThreadedMotoServer

    def restart() -> None:
        fleet.aws.server = ThreadedMotoServer(ip_address="127.0.0.1", port=fleet.aws.port,
                                              verbose=False)
        fleet.aws.server.start()
    return fleet.aws.server.stop, restart


def test_no_request_failed_at_the_instances_that_stayed_up(fleet):
    for load in fleet.loads:
        load.__exit__(None, None, None)
        assert load.answers and not load.failures, load.failures[:5]
    for load, killed_at in fleet.killed:
        assert all("Connection" in failure and killed_at - 1 <= at <= killed_at + 1
                   for at, failure in load.failures), load.failures[:5]
    shutil.rmtree(fleet.home / "data", ignore_errors=True)
