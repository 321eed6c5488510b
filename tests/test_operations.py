"""Operations over real gunicorn: the lineup CLI, the daily retrain and /metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service import config
from tests import flows
from tests.conftest import ADMIN_TOKEN
from tests.server import Server


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    """A datastore with one good run, and gunicorn serving it."""
    home = tmp_path_factory.mktemp("ops")
    trainer = config.load({"LINEUP_HOME": str(home), "METAFLOW_USER": "lineup-trainer"})
    worlds = [flows.sample(home / f"data-{seed}", seed=seed) for seed in range(2)]
    first = flows.good_run(trainer, worlds[0])
    server = Server(home)
    server.start()
    try:
        server.wait_for(lambda: server.get("/readyz").status_code == 200, 30, "ready")
        yield server, trainer, worlds, first
    finally:
        server.stop()


def lineup(server: Server, *args: str) -> subprocess.CompletedProcess:
    """Run the lineup command against the test server."""
    env = {**server.env, "LINEUP_SERVICE_URL": server.url, "LINEUP_ADMIN_TOKEN": ADMIN_TOKEN}
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def serving(server: Server) -> str:
    """Return the run that every worker serves, waiting up to 2 s for a swap to spread."""
    decided = server.admin("GET", "/admin/status").json()["decided_run_id"]
    server.wait_for(lambda: server.all_workers_serve(decided), 2.0, f"serving {decided}")
    return decided


def test_retrain_makes_the_new_run_serve(ops):
    server, _, worlds, first = ops
    done = lineup(server, "retrain", "--interactions", str(worlds[1][0]),
                  "--items", str(worlds[1][1]))
    assert done.returncode == 0, done.stderr
    new = serving(server)
    assert new != first and f"run {first} -> run {new}" in done.stdout


def test_retrain_on_damaged_data_exits_non_zero_and_keeps_serving(ops, tmp_path):
    server, _, worlds, _ = ops
    before = serving(server)
    damaged = flows.damage(worlds[0][0], tmp_path / "damaged.csv")
    done = lineup(server, "retrain", "--interactions", str(damaged), "--items",
                  str(worlds[0][1]))
    assert done.returncode == 1
    assert "did not take run" in done.stderr and "check_beats_baseline" in done.stderr
    assert serving(server) == before


def test_retrain_with_a_failing_flow_exits_non_zero(ops, tmp_path):
    server, _, _, _ = ops
    before = serving(server)
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\n")
    done = lineup(server, "retrain", "--interactions", str(bad))
    assert done.returncode == 1 and "training failed" in done.stderr
    assert "bad.csv" in done.stderr
    assert serving(server) == before


def test_status_runs_and_check_for_people_and_scripts(ops):
    server, _, _, _ = ops
    status = json.loads(lineup(server, "--json", "status").stdout)
    assert status["serving"]["run_id"] == serving(server)
    table = lineup(server, "status").stdout
    assert f"serving: run {serving(server)}" in table

    runs = json.loads(lineup(server, "--json", "runs").stdout)
    verdicts = [run["verdict"] for run in runs]
    assert verdicts.count("serving") == 1 and "rejected" in verdicts
    text = lineup(server, "runs").stdout
    assert re.search(r"ndcg@10\s+baseline\s+verdict", text)

    rejected = next(run["run_id"] for run in runs if run["verdict"] == "rejected")
    check = lineup(server, "check", rejected)
    assert check.returncode == 1 and "FAIL  check_beats_baseline" in check.stdout
    passed = lineup(server, "check", f"LineupTrainFlow/{serving(server)}")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "checks passed" in passed.stdout and "FAIL" not in passed.stdout


def _samples(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_requests_across_both_workers(ops):
    server, _, _, _ = ops
    before = server.get("/metrics").text
    pids = set()
    for i in range(60):
        response = server.get("/recommendations", params={"user_id": f"u-{i:06d}"},
                              headers={"Connection": "close"})
        assert response.status_code == 200
        pids.add(server.get("/readyz", headers={"Connection": "close"}).json()["pid"])
    after = server.get("/metrics").text
    labels = {"endpoint": "/recommendations", "status": "200"}
    counted = (_samples(after, "lineup_http_requests_total", **labels)
               - _samples(before, "lineup_http_requests_total", **labels))
    assert counted == 60
    assert len(pids) == 2, "requests reached only one worker"
    assert (_samples(after, "lineup_recommendations_total")
            - _samples(before, "lineup_recommendations_total")) == 60
    assert f'lineup_serving_run_info{{run_id="{serving(server)}"}} 1.0' in after
    # The damaged retrain above was rejected.
    assert _samples(after, "lineup_candidate_rejections_total",
                    check="check_beats_baseline") >= 1
    assert "lineup_model_age_seconds" in after
    assert "lineup_selection_duration_seconds_count" in after
    assert Path(server.env["LINEUP_HOME"], "metrics").is_dir()


def test_pin_and_unpin_from_the_command_line_and_across_a_restart(ops):
    # Last in the module: the restart starts /metrics afresh.
    server, _, _, first = ops
    newest = serving(server)
    assert lineup(server, "pin", first).returncode == 0
    assert serving(server) == first
    assert lineup(server, "reload").returncode == 0
    assert serving(server) == first, "a reload moved off the pin"

    server.stop()
    server.start()
    server.wait_for(lambda: server.all_workers_serve(first), 30, f"serving pinned {first}")
    assert server.admin("GET", "/admin/status").json()["pin"]["run_id"] == first

    assert lineup(server, "unpin").returncode == 0
    assert serving(server) == newest
    missing = lineup(server, "pin", "42")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
