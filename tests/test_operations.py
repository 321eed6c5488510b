"""Operations over real gunicorn: the lineup CLI, the daily retrain and /metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service import config
from tests import browser, flows
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
    # The serving run judged again, compared with itself as serving: no comparison rows.
    passed = lineup(server, "check", f"LineupTrainFlow/{serving(server)}")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "checks passed" in passed.stdout and "FAIL" not in passed.stdout
    assert f"claimed against measured (serving run: {serving(server)})" in passed.stdout


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


#: The Grafana dashboard in the repository (docs/dashboards.md).
DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "lineup.json"


def _series(text: str) -> dict[str, list[str]]:
    """Map each sample name in a /metrics page to its samples' label strings."""
    series: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            name = name.split(" ")[0]
            series.setdefault(name, []).append(rest.rsplit("}", 1)[0] if rest else "")
    return series


def test_every_metric_and_label_the_dashboard_queries_is_in_metrics(ops):
    # After the tests above: a rejected retrain, selections, checks and requests.
    server, _, _, _ = ops
    assert server.get("/recommendations", params={"user_id": "u-000001"}).status_code == 200
    exposed = _series(server.get("/metrics").text)
    exprs = [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"]
             for target in panel.get("targets", [])]
    assert len(exprs) >= 10
    for expr in exprs:
        names = set(re.findall(r"\b(lineup_[a-z_]+)\b", expr))
        assert names, f"no Lineup metric in {expr}"
        grouped = {label.strip() for by in re.findall(r"by \(([^)]*)\)", expr)
                   for label in by.split(",")} - {"le", ""}
        selected = dict(re.findall(r'(\w+)=~?"([^"]*)"', expr))
        for name in names:
            assert name in exposed, f"{name} (queried by {expr}) is not in /metrics"
            for label in grouped | set(selected):
                assert any(f'{label}="' in sample for sample in exposed[name]), (
                    f"no {name} sample has the label {label} that {expr} uses")
            for label, pattern in selected.items():
                assert any(re.search(f'{label}="({pattern})"', sample)
                           for sample in exposed[name]), f"{name}: nothing matches {label}"


def test_check_writes_a_self_contained_html_report_that_draws_in_chromium(ops, tmp_path):
    server, _, _, _ = ops
    runs = json.loads(lineup(server, "--json", "runs").stdout)
    rejected = next(run["run_id"] for run in runs if run["verdict"] == "rejected")
    page = tmp_path / "report.html"
    check = lineup(server, "check", rejected, "--html", str(page))
    assert check.returncode == 1 and "FAIL  check_beats_baseline" in check.stdout
    text = page.read_text()
    assert "REJECTED" in text and "check_beats_baseline" in text
    assert not re.search(r"\b(src|href)=|@import|url\(|<script", text), "not self-contained"
    load = browser.open_page(page, "document.querySelectorAll('svg.chart rect').length",
                             tmp_path / "report.png")
    assert load.errors == [] and load.failed_loads == []
    assert [url for url in load.requests if not url.startswith("file:")] == []
    assert load.ready >= 2 and load.screenshot.stat().st_size > 20_000


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
