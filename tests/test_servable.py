"""A second servable, trained by the real flow, passes the gate and serves over HTTP.

``ItemKNNRecommender`` lives in its own module and one registration line; the
loader, the gate, the checks and the API know it only as a ``Servable``.
"""

from __future__ import annotations

import numpy as np

from service import config
from service.knn import ItemKNNRecommender
from service.servable import Servable, schema_problem, servable_class
from service.training.data import Interactions
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


def test_shrinkage_keeps_a_pair_seen_together_once_below_one_seen_by_many():
    # A: users 0-9 and the fan; B: user 0 alone; C: users 1-99. The cosine
    # ranks B above C for the fan (0.30 against 0.27); shrunk, C is far above.
    pairs = [(f"u{u}", "A") for u in range(10)] + [("u0", "B")]
    pairs += [(f"u{u}", "C") for u in range(1, 100)] + [("fan", "A")]
    log = Interactions.from_arrays(*zip(*pairs), timestamp=np.arange(len(pairs), dtype=float))
    ranked = {shrinkage: ItemKNNRecommender(half_life_days=np.inf, popularity_weight=0.0,
                                            shrinkage=shrinkage).fit(log)
              .recommend("fan", 2, as_of=-np.inf).item_ids.tolist()
              for shrinkage in (0.0, 100.0)}
    assert ranked == {0.0: ["B", "C"], 100.0: ["C", "B"]}


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
