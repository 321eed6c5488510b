"""The real training flow on a small world, read back with the Metaflow client."""

from __future__ import annotations

import json

import pytest

from service import config
from service.recommender import EventRecommender
from service.training.runner import TrainingFailed, train

SMALL = (1500, 300, 30_000)
METRIC_KEYS = {"precision@10", "recall@10", "ndcg@10", "coverage"}


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


def test_flow_trains_a_model_that_beats_popularity(trainer_settings, elsewhere):
    pathspec = train(trainer_settings, as_of="2026-11-27", seed=0, sample_size=SMALL)
    assert pathspec.startswith("LineupTrainFlow/")
    metaflow = _client(trainer_settings)
    run = metaflow.Run(pathspec)
    assert run.successful
    data = run.data
    for name in ("model", "holdout_metrics", "baseline_metrics", "data_fingerprint",
                 "library_versions", "golden_users", "holdout_start", "as_of",
                 "schema_version", "best_params", "search_results"):
        assert hasattr(data, name), name
    assert set(data.holdout_metrics) == set(data.baseline_metrics) == METRIC_KEYS
    assert data.holdout_metrics["ndcg@10"] > 1.5 * data.baseline_metrics["ndcg@10"]
    assert isinstance(data.model, EventRecommender)
    assert data.schema_version == data.model.schema_version_ == EventRecommender.SCHEMA_VERSION
    assert data.as_of - data.holdout_start == 7 * 86_400
    assert len(data.search_results) == 3 and data.best_params["n_components"] in (16, 32, 64)
    assert 10 <= len(data.golden_users) <= 50
    golden = data.golden_users[0]
    assert set(golden) == {"user_id", "holdout_items"} and golden["holdout_items"]
    assert set(data.data_fingerprint) >= {"interactions", "users", "items", "first_timestamp",
                                          "last_timestamp", "sha256", "source"}
    assert set(data.library_versions) == {"python", "numpy", "scikit-learn"}
    rec = data.model.recommend(golden["user_id"], 10, data.as_of)
    assert rec.strategy == "personalised" and len(rec.items) == 10


def test_malformed_data_fails_the_run_with_a_clear_message(trainer_settings, tmp_path,
                                                           elsewhere):
    bad = tmp_path / "interactions.csv"
    bad.write_text("user_id,item_id,timestamp\nu1,e1,1700000000\nu2,e1,yesterday\n")
    with pytest.raises(TrainingFailed) as caught:
        train(trainer_settings, interactions=bad)
    assert ("interactions.csv, row 3: timestamp 'yesterday' is not ISO 8601 or epoch seconds"
            in str(caught.value))
    metaflow = _client(trainer_settings)
    runs = list(metaflow.Flow("LineupTrainFlow").runs())
    assert runs and not any(run.successful for run in runs)


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
