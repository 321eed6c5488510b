"""The gate measures the model it is about to serve, on real runs.

Ten good runs of other seeds and dates are all accepted, each compared with
the one before as the serving model; every damage made to a good run's model
after evaluation (tests/damage_flow.py: the run keeps the good run's claims
and probes) is rejected, each for its own reason.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from sanity_tests import flat_measures
from service import config, create_app
from service.gate import evaluate
from service.backends import run_source
from service.runs import RunSource
from service.slot import ServedModel
from tests import flows

#: Eighteen small runs are made for this module (about 3 minutes on 2 idle cores).
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="session")
def gate_history(tmp_path_factory):
    """A datastore with ten good runs (seeds 0-9, as of 0-9 days ago) and one run per damage."""
    home = tmp_path_factory.mktemp("gate")
    trainer = config.load({"LINEUP_HOME": str(home), "METAFLOW_USER": "lineup-trainer"})
    good = flows.recent_runs(trainer, 10)
    newest, oldest = good[-1], good[0]
    with ThreadPoolExecutor(max_workers=2) as pool:
        made = pool.map(lambda kind: flows.model_damaged_run(
            trainer, newest, kind, donor=oldest if kind == "other_data" else ""), flows.DAMAGES)
        damaged = dict(zip(flows.DAMAGES, made, strict=True))
    return SimpleNamespace(datastore=trainer["DATASTORE_ROOT"], good=good, damaged=damaged)


@pytest.fixture
def gate_settings(settings, gate_history):
    """Settings reading the gate's run history, with state of their own."""
    return {**settings, "DATASTORE_ROOT": gate_history.datastore}


def served(source: RunSource, run_id: str, model) -> ServedModel:
    """Wrap a run's passed model as the slot would serve it."""
    record = source.get(run_id)
    return ServedModel(model=model, run_id=run_id, pathspec=record.pathspec,
                       loaded_at=time.time(), finished_at=record.finished_at)


def test_ten_good_runs_of_other_seeds_and_dates_are_all_accepted(gate_history, gate_settings):
    source = run_source(gate_settings)
    serving = None
    for run_id in gate_history.good:
        evaluation = evaluate(source, source.get(run_id), gate_settings, serving)
        verdict = evaluation.verdict
        assert verdict.passed, f"run {run_id}: {verdict.reason}"
        measured = {m["name"]: m for m in flat_measures(verdict.checks)}
        probe = measured["probe ndcg@10"]
        assert probe["measured"] == pytest.approx(probe["claimed"], abs=1e-5)
        if serving is not None:
            assert "overlap@10 with serving" in measured
        serving = served(source, run_id, evaluation.model)


@pytest.mark.parametrize("kind, failing, words", [
    ("users", "check_measured_quality", "is far below the"),
    ("half_users", "check_measured_quality", "is far below the"),
    ("items", "check_measured_quality", "does not beat popularity's"),
    ("other_data", "check_probes_known", "are unknown to the model"),
    ("cut_catalogue", "check_probes_known", "probe items"),
    ("popularity", "check_fitted_estimator", "is a service.popularity.PopularityRecommender"),
    ("seen", "check_golden_users_lists", "items they already bought or rated"),
    ("starts", "check_catalogue_matches_run", "items' starts_at differ"),
])
def test_a_model_damaged_after_evaluation_is_rejected(gate_history, gate_settings,
                                                      kind, failing, words):
    source = run_source(gate_settings)
    newest = gate_history.good[-1]
    good = evaluate(source, source.get(newest), gate_settings)
    for serving in (None, served(source, newest, good.model)):
        verdict = evaluate(source, source.get(gate_history.damaged[kind]), gate_settings,
                           serving).verdict
        assert not verdict.passed
        assert failing in verdict.failed_checks, verdict.reason
        assert words in verdict.reason
        # The run's own claims pass: only measuring the artifact finds the damage.
        assert not {"check_ndcg_floor", "check_beats_baseline"} & set(verdict.failed_checks)


def test_a_damaged_model_shows_claimed_against_measured(gate_history, gate_settings):
    source = run_source(gate_settings)
    verdict = evaluate(source, source.get(gate_history.damaged["half_users"]),
                       gate_settings).verdict
    probe = {m["name"]: m for m in flat_measures(verdict.checks)}["probe ndcg@10"]
    assert probe["measured"] < probe["claimed"] * 0.8
    assert probe["low"] <= probe["measured"] <= probe["high"]
    assert f"{probe['claimed']:.4f} the run claims" in verdict.reason


def test_lineup_check_prints_claimed_and_measured_side_by_side(
        gate_history, gate_settings, monkeypatch, capsys):
    from service.cli import main

    monkeypatch.setenv("LINEUP_HOME", gate_settings["HOME"])
    monkeypatch.setenv("LINEUP_DATASTORE_ROOT", gate_history.datastore)
    assert main(["check", gate_history.damaged["users"]]) == 1
    out = capsys.readouterr().out
    table = out.split("claimed against measured (serving run: none)\n", 1)[1].splitlines()
    assert table[0].split()[:6] == ["check", "measure", "claimed", "measured", "95%", "interval"]
    row = next(line for line in table if line.startswith("check_measured_quality")
               and "measured - claimed" in line)
    assert "FAIL" in row and "LINEUP_CLAIM_TOLERANCE" in row
    assert main(["--json", "check", gate_history.good[-1]]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert any(m["name"] == "probe ndcg@10" for check in verdict["checks"]
               for m in check["measures"])


def test_admin_runs_shows_each_verdicts_measures(gate_history, gate_settings, admin_headers):
    app = create_app(gate_settings)
    client = app.test_client()
    assert client.post("/admin/reload", headers=admin_headers).status_code == 200
    runs = {run["run_id"]: run for run in
            client.get("/admin/runs?limit=50", headers=admin_headers).get_json()["runs"]}
    judged = [run for run in runs.values() if run.get("measures")]
    assert judged, runs
    names = {m["name"] for run in judged for m in run["measures"]}
    assert "probe ndcg@10" in names
