"""A second servable, trained by the real flow, passes the gate and serves over HTTP.

``ItemKNNRecommender`` lives in its own module and one registration line; the
loader, the gate, the checks and the API know it only as a ``Servable``.
"""

from __future__ import annotations

from service import config
from service.knn import ItemKNNRecommender
from service.servable import Servable, schema_problem, servable_class
from service.training.runner import train
from tests import flows
from tests.server import Server


def test_item_knn_is_a_servable(small_world):
    log, catalogue = small_world
    model = ItemKNNRecommender(n_neighbors=20).fit(log, items=catalogue)
    assert isinstance(model, Servable) and servable_class("item_knn") is ItemKNNRecommender
    assert schema_problem(model) is None and model.consistency_problems() == []
    known = str(model.user_ids_[0])
    rec = model.recommend(known, 10, as_of=model.fitted_as_of_ - 86_400)
    assert rec.strategy == "personalised" and len(rec.items) == 10
    assert model.recommend("nobody-at-all", 5).strategy == "cold_start"


def test_a_flow_run_of_the_second_servable_serves_over_http(tmp_path):
    home = tmp_path / "home"
    trainer = config.load({"LINEUP_HOME": str(home), "METAFLOW_USER": "lineup-trainer"})
    interactions, items = flows.sample(tmp_path / "data")
    run_id = train(trainer, interactions=str(interactions), items=str(items),
                   extra_args=["--model", "item_knn"]).rsplit("/", 1)[-1]
    server = Server(home)
    server.start()
    try:
        assert server.admin("POST", "/admin/reload").json()["after"] == run_id
        verdicts = server.admin("GET", "/admin/status").json()["verdicts"]
        assert [(v["run_id"], v["passed"]) for v in verdicts] == [(run_id, True)], verdicts
        server.wait_for(lambda: server.all_workers_serve(run_id), 5, f"serving {run_id}")
        answer = server.get("/recommendations?user_id=u-000001&n=5")
        assert answer.status_code == 200 and answer.headers["X-Model-Run"] == run_id
        body = answer.json()
        assert body["strategy"] == "personalised" and len(body["items"]) == 5
    finally:
        server.stop()
