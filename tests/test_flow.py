"""The real training flow on a small world, read back with the Metaflow client."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service import config
from service.contract import METRIC_KEYS, SEARCH_RESULTS_ARTIFACT, SUMMARY_ARTIFACTS
from service.recommender import EventRecommender
from service.servable import SERVABLES, servable_name
from service.training import search
from service.training.runner import TrainingFailed, train
from tests import flows

SMALL = (1500, 300, 30_000)
DAY = 86_400.0


@pytest.fixture
def trainer_settings(tmp_path):
    """Settings whose Metaflow store lives in this test's temporary folder."""
    return config.load({"LINEUP_HOME": str(tmp_path / "home"), "METAFLOW_USER": "test"})


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run the client from an unrelated working directory."""
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    return other


def _client(settings):
    config.apply_metaflow(settings)
    import metaflow

    return metaflow


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """One flow run on the small world with a short search, read back with the client."""
    settings = config.load({"LINEUP_HOME": str(tmp_path_factory.mktemp("home")),
                            "METAFLOW_USER": "test"})
    pathspec = train(settings, as_of="2026-11-27", seed=0, sample_size=SMALL,
                     extra_args=["--search_seconds", "4"])
    return _client(settings).Run(pathspec)


def test_flow_trains_a_model_that_beats_popularity(small_run):
    assert small_run.pathspec.startswith("LineupTrainFlow/")
    assert small_run.successful
    data = small_run.data
    for name in ("model", "holdout_metrics", "baseline_metrics", "data_fingerprint",
                 "library_versions", "golden_users", "holdout_start", "as_of",
                 "schema_version", "best_params", *SUMMARY_ARTIFACTS, SEARCH_RESULTS_ARTIFACT):
        assert hasattr(data, name), name
    assert set(data.holdout_metrics) == set(data.baseline_metrics) == {*METRIC_KEYS, "users"}
    assert data.holdout_metrics["ndcg@10"] > 1.5 * data.baseline_metrics["ndcg@10"]
    assert isinstance(data.model, EventRecommender)
    assert data.schema_version == data.model.schema_version_ == EventRecommender.SCHEMA_VERSION
    golden = data.golden_users[0]
    assert set(golden) == {"user_id", "holdout_items"} and golden["holdout_items"]
    assert 10 <= len(data.golden_users) <= 50
    assert set(data.data_fingerprint) >= {"interactions", "users", "items", "first_timestamp",
                                          "last_timestamp", "sha256", "source"}
    assert set(data.library_versions) == {"python", "numpy", "scikit-learn"}
    rec = data.model.recommend(golden["user_id"], 10, data.as_of)
    assert rec.strategy == "personalised" and len(rec.items) == 10


def test_flow_stores_its_protocol_intervals_and_search(small_run):
    data = small_run.data
    protocol = data.evaluation_protocol
    assert protocol["kind"] == "time_window" and protocol["users"] >= 100
    assert protocol["holdout_start"] == data.holdout_start == data.as_of - protocol["days"] * DAY
    assert protocol["users"] == data.holdout_metrics["users"] == data.baseline_metrics["users"]
    assert protocol["validation"]["holdout_start"] < data.holdout_start
    for metric in ("ndcg@10", "recall@10"):
        low, high = data.holdout_intervals[metric]
        assert low < data.holdout_metrics[metric] < high
        diff = data.baseline_difference[metric]
        assert diff["low"] < diff["mean"] < diff["high"] and diff["low"] > 0
        assert diff["mean"] == pytest.approx(
            data.holdout_metrics[metric] - data.baseline_metrics[metric])
    axes = {"n_components", "half_life_days", "user_half_life", "user_decay_floor",
            "popularity_weight", "count_exponent", "weighting"}
    assert set(data.best_params) == axes
    # Events expire: the damping that ranks new events against old hits is not tuned away.
    assert data.search_space["count_exponent"] == [EventRecommender().count_exponent]
    assert len(data.search_results) >= 3
    assert all(set(result) >= axes | {"ndcg@10", "seconds"} for result in data.search_results)
    best = max(data.search_results, key=lambda result: result["ndcg@10"])
    assert {axis: best[axis] for axis in axes} == data.best_params
    # Events expire: "auto" searches the event model alone.
    assert {result["model"] for result in data.search_results} == {"event"}
    assert data.model_class == "event"


def test_the_stored_metric_agrees_with_an_independent_protocol(small_run, small_world):
    """Re-split the same world, refit the chosen point, score it with audit's own NDCG."""
    from service.training import audit

    data = small_run.data
    log, catalogue = small_world
    train, truth = audit.split_log(log, "time10", start=data.holdout_start)
    assert len(truth) == data.evaluation_protocol["users"]
    model = EventRecommender(**data.best_params, random_state=0)
    model.fit(log.subset(train), items=catalogue)
    users = sorted(truth)
    scores = np.array([audit.ndcg_at_10(
        model.recommend(user, 10, data.holdout_start).item_ids.tolist(), truth[user])
        for user in users])
    low, high = audit.interval(scores)
    assert low <= data.holdout_metrics["ndcg@10"] <= high
    assert data.holdout_metrics["ndcg@10"] == pytest.approx(scores.mean(), abs=1e-9)


def test_malformed_data_fails_the_run_with_a_one_line_cause(trainer_settings, tmp_path,
                                                            elsewhere):
    bad = tmp_path / "interactions.csv"
    bad.write_text("user_id,item_id,timestamp\nu1,e1,1700000000\nu2,e1,yesterday\n")
    with pytest.raises(TrainingFailed) as caught:
        train(trainer_settings, interactions=bad)
    output = str(caught.value)
    assert ("interactions.csv, row 3: timestamp 'yesterday' is not ISO 8601 or epoch seconds"
            in output)
    assert "Bad training data" in output and "Traceback" not in output
    metaflow = _client(trainer_settings)
    runs = list(metaflow.Flow("LineupTrainFlow").runs())
    assert runs and not any(run.successful for run in runs)


@pytest.mark.parametrize("option, value, cause", [
    ("--model", "svd", "--model 'svd': not a registered servable"),
    ("--grid", "16,3x", "--grid '16,3x': invalid literal for int()"),
    ("--half_lives", "7,never", "--half_lives '7,never': could not convert string to float"),
    ("--weightings", "raw,sqrt", "--weightings 'raw,sqrt': sqrt: not one of raw, binary, log"),
    ("--search_passes", "-1", "--search_passes '-1': not a count of passes"),
])
def test_a_bad_parameter_stops_the_run_in_start(trainer_settings, option, value, cause):
    """A typo in a search option is caught before the data is read, in one line."""
    with pytest.raises(TrainingFailed) as caught:
        train(trainer_settings, extra_args=(option, value))
    output = str(caught.value)
    assert "Bad parameter" in output and cause in output and "Traceback" not in output
    run = next(iter(_client(trainer_settings).Flow("LineupTrainFlow").runs()))
    assert [step.id for step in run] == ["start"] and not run.successful


def test_a_renamed_flow_is_trained_and_served(tmp_path, admin_headers):
    """LINEUP_FLOW_NAME names the flow the trainer writes and the service reads."""
    import os
    import subprocess
    import sys

    from service import create_app
    from tests import flows

    env = {"LINEUP_HOME": str(tmp_path / "home"), "METAFLOW_USER": "test",
           "LINEUP_FLOW_NAME": "EventsOfTomorrowFlow"}
    interactions, items = flows.sample(tmp_path / "data")
    done = subprocess.run([sys.executable, "-m", "service.cli", "--json", "train",
                           "--interactions", str(interactions), "--items", str(items)],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    pathspec = json.loads(done.stdout)["pathspec"]
    assert pathspec.startswith("EventsOfTomorrowFlow/")

    settings = config.load({**env, "LINEUP_ADMIN_TOKEN": "test-admin-token"})
    client = create_app(settings).test_client()
    assert client.post("/admin/reload", headers=admin_headers).get_json()["after"] == \
        pathspec.split("/")[1]
    answer = client.get("/recommendations?user_id=u-000001")
    assert answer.status_code == 200 and answer.headers["X-Model-Run"] == pathspec.split("/")[1]


def test_on_ratings_every_servable_is_searched_and_the_best_one_is_served(
        trainer_settings, tmp_path):
    interactions, _ = flows.sample(tmp_path / "data")  # without items: no start times
    pathspec = train(trainer_settings, interactions=str(interactions), seed=0,
                     extra_args=["--search_seconds", "0"])
    run = _client(trainer_settings).Run(pathspec)
    data = run.data
    assert {result["model"] for result in data.search_results} == set(SERVABLES)
    # A budget spent at once still lets each walk complete its pass over every axis (a
    # floor without a user half-life makes the same model: it is not scored again).
    assert data.search_min_passes == 1
    for task in run["train"].tasks():
        servable = task.data.results[0]["model"]
        tried = [data.search_starts[servable], *task.data.results]
        for axis, values in data.search_spaces[servable].items():
            if axis != "user_decay_floor":
                assert {point[axis] for point in tried} >= set(values), (servable, axis)
    best = search.choose(data.search_results, "ndcg@10")
    assert data.model_class == best["model"] == servable_name(data.model)
    assert set(data.best_params) == set(data.search_space) == set(
        data.search_spaces[data.model_class])
    assert data.best_params == {axis: best[axis] for axis in data.search_space}
    assert data.model.get_params() == {**data.model.get_params(), **data.best_params}
