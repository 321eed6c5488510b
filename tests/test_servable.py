"""Every servable, on events and on ratings, trained by the flow, passes the gate and serves.

``ItemKNNRecommender`` and ``EASERecommender`` live in their own modules and
one registration line each; the loader, the gate, the checks and the API
know them only as ``Servable``.
"""

from __future__ import annotations

import numpy as np

from service import config
import pytest

from service.ease import EASERecommender
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


@pytest.mark.parametrize("servable, params", [
    ("event", {"n_components": 16, "n_clusters": 4}), ("item_knn", {"n_neighbors": 20}),
    ("ease", {"max_items": 500})])
def test_score_catalogue_gives_the_scores_recommend_ranks(small_world, servable, params):
    log, catalogue = small_world
    model = servable_class(servable)(**params).fit(log, items=catalogue)
    users = [str(user) for user in model.user_ids_[::97][:20]] + ["nobody-at-all"]
    scores = model.score_catalogue(users)
    assert scores.shape == (len(users), model.item_ids_.size)
    for user, row in zip(users, scores):
        rec = model.recommend(user, 10, as_of=-np.inf, use_ranking=False)
        np.testing.assert_allclose(rec.scores, row[rec.items], rtol=1e-5, atol=1e-6)
    # A user's seen items keep their scores (recommend sets them aside): the gate
    # measures the model on them.
    seen = model.seen_indices_[model.seen_indptr_[0]:model.seen_indptr_[1]]
    own = model.score_catalogue([str(model.user_ids_[0])])[0]
    assert seen.size and np.isfinite(own[seen]).all()
    np.testing.assert_array_equal(scores[-1], model.item_popularity_.astype(np.float32))


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


def test_ease_is_a_servable(small_world):
    log, catalogue = small_world
    model = EASERecommender(max_items=500).fit(log, items=catalogue)
    assert isinstance(model, Servable) and servable_class("ease") is EASERecommender
    assert schema_problem(model) is None and model.consistency_problems() == []
    assert model.weighted_items_.size == 500 and model.item_weights_.shape == (500, 500)
    known = str(model.user_ids_[0])
    rec = model.recommend(known, 10, as_of=model.fitted_as_of_ - 86_400)
    assert rec.strategy == "personalised" and len(rec.items) == 10
    model.item_position_ = np.roll(model.item_position_, 1)
    assert model.consistency_problems() == ["item_position_ does not index weighted_items_"]


def test_ease_weights_are_each_items_ridge_regression_on_the_others():
    """The closed form against its definition: item j regressed on every other item."""
    rng = np.random.default_rng(0)
    pairs = {(f"u{u}", f"i{i}")
             for u, i in zip(rng.integers(0, 40, 300), rng.integers(0, 12, 300))}
    users, items = zip(*sorted(pairs))
    log = Interactions.from_arrays(users, items, timestamp=np.zeros(len(users)))
    model = EASERecommender(l2=3.0, half_life_days=np.inf, user_half_life=np.inf).fit(log)
    matrix = np.zeros((model.user_ids_.size, model.item_ids_.size))
    for user, item in pairs:
        matrix[model.user_ids_.searchsorted(user), model.item_ids_.searchsorted(item)] = np.log(2)
    for j in range(matrix.shape[1]):
        others = np.delete(matrix, j, axis=1)
        ridge = np.linalg.solve(others.T @ others + 3.0 * np.eye(others.shape[1]),
                                others.T @ matrix[:, j])
        np.testing.assert_allclose(np.delete(model.item_weights_[:, j], j), ridge, atol=1e-6)
        assert model.item_weights_[j, j] == 0.0


def test_ease_scores_only_its_most_interacted_items_and_refuses_no_penalty():
    pairs = [("a", "hit"), ("b", "hit"), ("c", "hit"), ("d", "hit"), ("a", "mid"), ("b", "mid"),
             ("c", "rare")]
    log = Interactions.from_arrays(*zip(*pairs), timestamp=np.zeros(len(pairs)))
    model = EASERecommender(max_items=2, popularity_weight=0.0).fit(log)
    assert model.item_ids_[model.weighted_items_].tolist() == ["hit", "mid"]
    rec = model.recommend("d", 3, as_of=-np.inf)
    assert rec.item_ids.tolist() == ["mid", "rare"] and rec.scores[0] > 0 == rec.scores[1]
    with pytest.raises(ValueError, match="l2 0.0 must be positive"):
        EASERecommender(l2=0.0).fit(log)


@pytest.mark.parametrize("servable, data", [
    ("item_knn", "events"), ("ease", "events"),
    # A ratings file: every row seen, no items file. Each probe user's own items are
    # seen and no new item has metadata; the gate once rejected every such run.
    ("ease", "ratings"), ("event", "ratings")])
def test_a_flow_run_of_each_servable_and_kind_of_data_serves_over_http(
        tmp_path, servable, data):
    home = tmp_path / "home"
    trainer = config.load({"LINEUP_HOME": str(home), "METAFLOW_USER": "lineup-trainer"})
    if data == "events":
        interactions, items = flows.sample(tmp_path / "data")
    else:
        interactions, items = flows.ratings(tmp_path / "data"), None
    run_id = train(trainer, interactions=str(interactions), items=items and str(items),
                   extra_args=["--model", servable, *flows.SHORT_SEARCH]).rsplit("/", 1)[-1]
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
