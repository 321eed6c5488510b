"""Selection over real Metaflow runs: walk-back, verdict memory, pins and failures."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from service import create_app, gate, loader, selection as selection_module
from service.selection import SelectionError
from service.recommender import EventRecommender


def manager_of(app):
    return app.extensions["lineup"]


def test_walks_back_past_bad_runs_to_the_newest_good_one(history_app, history, admin_headers):
    client = history_app.test_client()
    result = client.post("/admin/reload", headers=admin_headers).get_json()
    assert (result["before"], result["after"]) == (None, history.good[1])
    verdicts = {c["run_id"]: c for c in result["candidates"]}
    assert list(verdicts) == [history.corrupt, history.damaged, history.good[1]]
    assert verdicts[history.corrupt]["failed_checks"] == ["load_model"]
    assert verdicts[history.damaged]["verdict"] == "rejected"
    assert "check_beats_baseline" in verdicts[history.damaged]["failed_checks"]
    assert verdicts[history.good[1]]["verdict"] == "passed"

    response = client.get("/recommendations?user_id=u-000001&n=5")
    body = response.get_json()
    assert response.status_code == 200
    assert response.headers["X-Model-Run"] == body["run_id"] == history.good[1]
    assert body["strategy"] == "personalised"
    assert len(body["items"]) == 5
    assert set(body["items"][0]) == {"item_id", "title", "category", "city", "starts_at", "score"}

    cold = client.get("/recommendations?user_id=somebody-new").get_json()
    assert cold["strategy"] == "cold_start" and len(cold["items"]) == 10


def test_the_reasons_for_rejections_are_in_the_status(history_app, history, admin_headers):
    client = history_app.test_client()
    client.post("/admin/reload", headers=admin_headers)
    status = client.get("/admin/status", headers=admin_headers).get_json()
    assert status["serving"]["run_id"] == history.good[1]
    reasons = {v["run_id"]: v["reason"] for v in status["verdicts"]}
    assert "ndcg" in reasons[history.damaged].lower()
    assert "could not be loaded" in reasons[history.corrupt]


def test_failed_and_unfinished_runs_are_not_candidates(history_app, history):
    source = manager_of(history_app).source
    states = [record.state for record in source.recent()]
    assert states.count("failed") == 1 and states.count("running") == 1
    candidates = [record.run_id for record in source.candidates()]
    assert candidates == [history.corrupt, history.damaged, history.good[1], history.good[0]]


def test_verdicts_are_remembered_across_reloads_and_restarts(history_settings, history,
                                                             monkeypatch):
    manager_of(create_app(history_settings)).reload()

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a remembered verdict was evaluated again")

    monkeypatch.setattr(selection_module, "evaluate_within", no_evaluation)
    restarted = manager_of(create_app(history_settings))  # a new worker, same state folder
    assert restarted.sync() and restarted.slot.get().run_id == history.good[1]
    result = restarted.reload()
    assert [c["remembered"] for c in result["candidates"]] == [True, True, True]


def test_changed_checks_are_evaluated_again(history_settings, history):
    manager_of(create_app(history_settings)).reload()
    stricter = manager_of(create_app({**history_settings, "NDCG_FLOOR": 0.9}))
    result = stricter.reload()
    assert not any(c["remembered"] for c in result["candidates"][:2])


@pytest.mark.parametrize("walkback, after", [(1, None), (2, None), (3, "good")])
def test_the_walk_stops_at_max_walkback(history_settings, history, walkback, after):
    app = create_app({**history_settings, "MAX_WALKBACK": walkback})
    result = manager_of(app).reload()
    assert len(result["candidates"]) == walkback
    assert result["after"] == (history.good[1] if after else None)
    client = app.test_client()
    expected = 200 if after else 503
    assert client.get("/recommendations?user_id=u-000001").status_code == expected
    assert client.get("/readyz").status_code == expected


def test_an_exception_inside_the_gate_rejects_only_that_candidate(history_settings, history,
                                                                  monkeypatch):
    real = gate.evaluate

    def flaky(source, record, settings, serving=None):
        if record.run_id == history.corrupt:
            raise RuntimeError("boom")
        return real(source, record, settings, serving)

    monkeypatch.setattr(gate, "evaluate", flaky)
    result = manager_of(create_app(history_settings)).reload()
    assert result["candidates"][0]["failed_checks"] == ["evaluation"]
    assert result["after"] == history.good[1]


def test_a_hanging_candidate_is_rejected_at_the_time_limit(history_settings, history,
                                                           monkeypatch):
    real = gate.evaluate

    def hang_on_corrupt(source, record, settings, serving=None):
        if record.run_id == history.corrupt:
            import time
            time.sleep(60)
        return real(source, record, settings, serving)

    monkeypatch.setattr(gate, "evaluate", hang_on_corrupt)
    app = create_app({**history_settings, "CHECK_TIMEOUT": 5.0})
    result = manager_of(app).reload()
    assert result["candidates"][0]["failed_checks"] == ["time_limit"]
    assert result["after"] == history.good[1]

    # A time limit says more about that moment than about the run: judge it again.
    monkeypatch.setattr(gate, "evaluate", real)
    again = manager_of(app).reload()
    assert again["candidates"][0]["remembered"] is False
    assert again["candidates"][0]["failed_checks"] == ["load_model"]


def test_a_reload_that_waited_for_a_failed_selection_fails_too(history_settings, history):
    import threading
    import time

    from service.records import Decision, Selection

    manager = manager_of(create_app(history_settings))
    outcome = {}
    with manager.store.selection_lock(timeout=None):
        waiter = threading.Thread(target=lambda: outcome.update(
            error=pytest.raises(SelectionError, manager.reload).value))
        waiter.start()
        time.sleep(0.3)
        now = time.time()
        manager.store.write(Decision(generation=1, last_selection=Selection(
            selection=1, reason="admin", pid=0, started_at=now, finished_at=now, seconds=0.0,
            before=None, after=None, changed=False, pinned=None, candidates=[],
            error="StoreUnavailable: gone")))
    waiter.join(10)
    assert "still serving run None: StoreUnavailable: gone" in str(outcome["error"])


def test_a_store_that_goes_away_keeps_the_model_serving(history_settings, history, tmp_path,
                                                        admin_headers):
    link = tmp_path / "store"
    link.symlink_to(history.datastore)
    app = create_app({**history_settings, "DATASTORE_ROOT": str(link)})
    client = app.test_client()
    assert client.post("/admin/reload", headers=admin_headers).status_code == 200
    link.unlink()
    try:
        response = client.post("/admin/reload", headers=admin_headers)
        assert response.status_code == 502
        assert "missing or unreadable" in response.get_json()["error"]["message"]
        assert client.get("/recommendations?user_id=u-000001").status_code == 200
        status = client.get("/admin/status", headers=admin_headers).get_json()
        assert "missing or unreadable" in status["last_error"]["message"]
        with pytest.raises(SelectionError):
            manager_of(app).reload()
    finally:
        link.symlink_to(history.datastore)
    assert client.post("/admin/reload", headers=admin_headers).status_code == 200
    assert client.get("/admin/status", headers=admin_headers).get_json()["last_error"] is None


def test_pin_serves_an_older_run_and_survives_a_restart(history_settings, history,
                                                        admin_headers):
    client = create_app(history_settings).test_client()
    client.post("/admin/reload", headers=admin_headers)
    response = client.post("/admin/pin", json={"run_id": history.good[0]}, headers=admin_headers)
    assert response.status_code == 200 and response.get_json()["after"] == history.good[0]
    assert client.post("/admin/reload", headers=admin_headers).get_json()["after"] == \
        history.good[0]

    restarted = create_app(history_settings)
    manager_of(restarted).sync()
    assert restarted.test_client().get("/recommendations?user_id=u-1").headers["X-Model-Run"] \
        == history.good[0]
    assert client.post("/admin/unpin", headers=admin_headers).get_json()["after"] == \
        history.good[1]


@pytest.mark.parametrize("run, status", [("123", 404), ("damaged", 422), ("corrupt", 422)])
def test_a_bad_pin_changes_nothing(history_settings, history, admin_headers, run, status):
    client = create_app(history_settings).test_client()
    client.post("/admin/reload", headers=admin_headers)
    run_id = getattr(history, run, run)
    response = client.post("/admin/pin", json={"run_id": run_id}, headers=admin_headers)
    assert response.status_code == status, response.get_json()
    assert response.get_json()["error"]["code"] == "pin_refused"
    after = client.get("/admin/status", headers=admin_headers).get_json()
    assert after["pin"] is None and after["serving"]["run_id"] == history.good[1]


def test_force_pins_a_run_that_fails_its_checks(history_settings, history, admin_headers):
    client = create_app(history_settings).test_client()
    response = client.post("/admin/pin", json={"run_id": history.damaged, "force": True},
                           headers=admin_headers)
    assert response.get_json()["after"] == history.damaged
    status = client.get("/admin/status", headers=admin_headers).get_json()
    assert status["serving"]["forced"] is True and status["pin"]["force"] is True


def test_run_history_shows_every_state_and_verdict(history_app, history, admin_headers):
    client = history_app.test_client()
    client.post("/admin/reload", headers=admin_headers)
    runs = client.get("/admin/runs", headers=admin_headers).get_json()["runs"]
    by_state = {}
    for run in runs:
        by_state.setdefault(run["state"], []).append(run)
    assert {r["verdict"] for r in by_state["failed"] + by_state["running"]} == {"not evaluated"}
    verdicts = {r["run_id"]: r["verdict"] for r in by_state["successful"]}
    assert verdicts == {history.corrupt: "rejected", history.damaged: "rejected",
                        history.good[1]: "serving", history.good[0]: "not evaluated"}
    good = next(r for r in runs if r["run_id"] == history.good[1])
    assert good["holdout_metrics"]["ndcg@10"] > good["baseline_metrics"]["ndcg@10"]
    assert good["data_fingerprint"]["interactions"] > 0


def test_an_old_model_is_stale_but_still_ready(history_settings, history, admin_headers):
    app = create_app({**history_settings, "STALE_AFTER_HOURS": 1 / 3600})
    client = app.test_client()
    client.post("/admin/reload", headers=admin_headers)
    serving = client.get("/admin/status", headers=admin_headers).get_json()["serving"]
    assert serving["stale"] is True and serving["age_seconds"] > 1
    assert client.get("/readyz").status_code == 200

    fresh = create_app(history_settings).test_client()
    fresh.post("/admin/reload", headers=admin_headers)
    assert fresh.get("/admin/status", headers=admin_headers).get_json()["serving"]["stale"] \
        is False


def test_an_instance_is_ready_only_when_every_worker_holds_a_model(
        history_app, admin_headers, monkeypatch):
    from service import readiness
    from service.records import WorkerReport

    assert os.getpid() in readiness.sibling_pids()  # this process, as its parent's child
    client = history_app.test_client()
    client.post("/admin/reload", headers=admin_headers)
    manager_of(history_app).reporter.report()
    # Under gunicorn, with a sibling that has not reported a model yet.
    history_app.config["GUNICORN_WORKERS"] = 2
    sibling = os.getpid() + 100_000
    monkeypatch.setattr(readiness, "sibling_pids", lambda: {os.getpid(), sibling})
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert f"worker {sibling} has no model" in answer.get_json()["error"]["message"]
    manager_of(history_app).store.write_worker(
        WorkerReport(pid=sibling, run_id="7", seen_at=time.time(), loaded_at=0, last_error=None))
    assert client.get("/readyz").status_code == 200
    monkeypatch.setattr(readiness, "sibling_pids", lambda: {os.getpid()})  # one not started
    assert "1 worker(s) not started" in client.get("/readyz").get_json()["error"]["message"]


def test_the_serving_run_is_judged_again_when_the_checks_change(history_settings, history):
    manager_of(create_app(history_settings)).reload()
    stricter = manager_of(create_app({**history_settings, "NDCG_FLOOR": 0.9}))
    assert stricter.sync()
    result = stricter.reload()
    judged = {c["run_id"]: c for c in result["candidates"]}
    assert judged[history.good[1]]["remembered"] is False
    assert judged[history.good[1]]["verdict"] == "rejected"
    # Nothing passes the stricter checks: the serving model is kept, never dropped.
    assert result["after"] == history.good[1] and stricter.slot.get().run_id == history.good[1]


def test_a_decided_run_of_another_model_schema_is_not_served(history_settings, history):
    manager_of(create_app(history_settings)).reload()
    for copy in (Path(history_settings["STATE_DIR"]) / "models").glob("*.joblib"):
        model = loader.open_shared_copy(copy)
        model.schema_version_ = EventRecommender.SCHEMA_VERSION - 1  # the previous release's
        copy.unlink()
        loader.write_shared_copy(model, copy)
    restarted = manager_of(create_app(history_settings))
    assert not restarted.sync() and restarted.slot.get() is None
    old, new = EventRecommender.SCHEMA_VERSION - 1, EventRecommender.SCHEMA_VERSION
    assert f"schema {old}, and this Lineup serves schema {new}" in restarted.last_error["message"]
