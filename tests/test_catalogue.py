"""The live catalogue: new events scored from metadata, sold-out ones gone, bad files refused."""

from __future__ import annotations

import csv
import datetime as dt
import time
from dataclasses import replace

import numpy as np
import pytest

from service import create_app, loader
from service.catalogue import CatalogueRefused, check, overlay
from service.catalogue_view import recommend
from service.filters import ItemFilter
from service.runs import RunRecord
from service.training.data import load_items
from service.training.sample_data import generate
from tests.conftest import SMALL_WORLD

AS_OF = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc).timestamp()


@pytest.fixture(scope="module")
def next_week():
    """The small world's catalogue a week after the fit: about 60 events the model never saw."""
    world = {**SMALL_WORLD, "as_of": "2026-12-04"}
    return generate(**world)[1]


def _write(path, catalogue, sold_out=(), drop=()):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", "title", "category", "city", "starts_at", "performer",
                         "venue", "status"])
        for row in zip(catalogue.item_id.tolist(), catalogue.title.tolist(),
                       catalogue.category.tolist(), catalogue.city.tolist(),
                       catalogue.starts_at.tolist(), catalogue.performer.tolist(),
                       catalogue.venue.tolist()):
            if row[0] not in drop:
                writer.writerow([*row, "sold_out" if row[0] in sold_out else "on_sale"])
    return path


def test_new_events_are_scored_from_metadata_and_sold_out_ones_disappear(
        fitted_model, next_week, tmp_path):
    upcoming = fitted_model.item_ids_[fitted_model.item_starts_at_ > AS_OF]
    popular = fitted_model.recommend("nobody", 5, as_of=AS_OF).item_ids.tolist()
    catalogue = load_items(_write(tmp_path / "items.csv", next_week, sold_out=popular))
    view, rows = overlay(fitted_model, catalogue)
    new_ids = set(catalogue.item_id[rows].tolist())
    assert rows.size > 20 and not new_ids & set(fitted_model.item_ids_.tolist())
    assert np.isfinite(view.new.factors).all() and np.isfinite(view.new.bias).all()
    reached, users = set(), fitted_model.user_ids_[::10].tolist()
    for user_id in users + ["nobody"]:
        got = recommend(fitted_model, view, user_id, 10, AS_OF)
        assert not set(got.item_ids.tolist()) & set(popular)  # sold out: never
        assert set(got.item_ids.tolist()) <= set(upcoming.tolist()) | new_ids
        reached |= set(got.item_ids.tolist()) & new_ids
    assert len(reached) >= 3, "new events never reach anyone"
    # Filters hold for new events too.
    london = ItemFilter(cities=("london",))
    for user_id in users[:20]:
        got = recommend(fitted_model, view, user_id, 20, AS_OF, item_filter=london)
        cities = np.concatenate([fitted_model.item_cities_, catalogue.city[rows]])[got.items]
        assert set(np.char.lower(cities).tolist()) <= {"london"}


def test_a_new_item_without_a_start_is_always_upcoming(fitted_model, next_week):
    # An items file may give no start (+inf: always listed), as a ratings file's movies do.
    new = ~np.isin(next_week.item_id, fitted_model.item_ids_)
    undated = replace(next_week, starts_at=np.where(new, np.inf, next_week.starts_at))
    view, rows = overlay(fitted_model, undated)
    new_ids = set(undated.item_id[rows].tolist())
    assert new_ids == set(next_week.item_id[new].tolist())
    reached = set()
    for user_id in fitted_model.user_ids_[::10].tolist():
        reached |= set(recommend(fitted_model, view, user_id, 10, AS_OF).item_ids.tolist())
    assert reached & new_ids, "new items without a start never reach anyone"
    # A bound on the start leaves them out, as it leaves out known items without one.
    soon = ItemFilter(starts_before=AS_OF + 30 * 86_400)
    got = recommend(fitted_model, view, fitted_model.user_ids_[0], 50, AS_OF, item_filter=soon)
    assert not set(got.item_ids.tolist()) & new_ids


def _qualifying(view, item_filter):
    """Which model and new items (in that order) are upcoming, available and in the filter."""
    new = view.new
    starts = np.concatenate([view.starts_at, new.starts_at])
    ok = ((starts > max(AS_OF, item_filter.starts_after)) & (starts < item_filter.starts_before)
          & np.concatenate([view.available, np.ones(len(new), dtype=bool)]))
    for names, vocabulary, codes in (
            (item_filter.cities, view.cities, [view.city_codes, new.city_codes]),
            (item_filter.categories, view.categories, [view.category_codes, new.category_codes])):
        if names:
            ok &= np.isin(np.concatenate(codes), [vocabulary[name] for name in names])
    return ok


@pytest.mark.parametrize("item_filter", [
    ItemFilter(), ItemFilter(cities=("london",)),
    ItemFilter(categories=("rock", "jazz"), starts_before=AS_OF + 10 * 86_400)])
def test_a_cold_start_list_is_the_most_popular_of_the_model_and_new_events(
        fitted_model, next_week, tmp_path, item_filter):
    # Brute force over both parts of the catalogue: every event that is upcoming,
    # available and in the filter, by popularity, equal ones in catalogue order.
    popular = fitted_model.recommend("nobody", 5, as_of=AS_OF).item_ids.tolist()
    view, _ = overlay(fitted_model, load_items(_write(tmp_path / "items.csv", next_week,
                                                      sold_out=popular)))
    scores = np.concatenate([fitted_model.item_popularity_,
                             view.new.popularity]).astype(np.float64)
    candidates = _qualifying(view, item_filter).nonzero()[0]
    want = candidates[np.lexsort((candidates, -scores[candidates]))][:15]
    got = recommend(fitted_model, view, "nobody", 15, AS_OF, item_filter=item_filter)
    assert got.strategy == "cold_start" and want.size == 15
    assert got.items.tolist() == want.tolist()
    np.testing.assert_array_equal(got.scores, scores[want])


@pytest.mark.parametrize("use_ranking", [True, None, False], ids=["rankings", "requests", "block"])
@pytest.mark.parametrize("item_filter", [
    ItemFilter(), ItemFilter(cities=("london",)),
    ItemFilter(cities=("london",), starts_before=AS_OF + 10 * 86_400),
    ItemFilter(cities=("london",), categories=("rock",))])
def test_a_known_users_list_is_the_top_n_of_the_model_and_new_events(
        fitted_model, next_week, tmp_path, item_filter, use_ranking):
    # Brute force: score every qualifying model and new event with the user's
    # factors, leave out what they bought, take the best 10.
    popular = fitted_model.recommend("nobody", 5, as_of=AS_OF).item_ids.tolist()
    view, _ = overlay(fitted_model, load_items(_write(tmp_path / "items.csv", next_week,
                                                      sold_out=popular)))
    qualifying = _qualifying(view, item_filter)
    model = fitted_model
    for user_id in model.user_ids_[::97][:12].tolist():
        row = model._user_row(user_id)
        factors = model.user_factors_[row]
        scores = np.concatenate([model.item_factors_ @ factors + model.item_bias_,
                                 view.new.factors @ factors + view.new.bias]).astype(np.float64)
        allowed = qualifying.copy()
        allowed[model.seen_indices_[model.seen_indptr_[row]:model.seen_indptr_[row + 1]]] = False
        candidates = allowed.nonzero()[0]
        want = candidates[np.argsort(-scores[candidates], kind="stable")][:10]
        got = recommend(model, view, user_id, 10, AS_OF, item_filter=item_filter,
                        use_ranking=use_ranking)
        assert got.strategy == "personalised" and len(got.items) == want.size == 10
        np.testing.assert_allclose(got.scores, scores[want], rtol=1e-5, atol=1e-5)


def test_check_refuses_a_catalogue_that_shrinks_too_much(fitted_model, next_week, tmp_path):
    full = load_items(_write(tmp_path / "full.csv", next_week))
    before = int((full.starts_at > AS_OF).sum())
    check(full, AS_OF, before, 0.5)
    kept = set(full.item_id[::10].tolist())
    cut = load_items(_write(tmp_path / "cut.csv", next_week,
                            drop=set(full.item_id.tolist()) - kept))
    with pytest.raises(CatalogueRefused, match="drop of 9"):
        check(cut, AS_OF, before, 0.5)
    gone = load_items(_write(tmp_path / "gone.csv", next_week, sold_out=set(full.item_id)))
    with pytest.raises(CatalogueRefused, match="none is upcoming"):
        check(gone, AS_OF, None, 0.5)


def test_the_service_swaps_catalogues_and_keeps_the_last_good_one(
        settings, fitted_model, next_week, tmp_path, admin_headers):
    path = tmp_path / "live.csv"
    app = create_app({**settings, "CATALOGUE": str(path)})
    served = loader.serve(fitted_model, RunRecord(run_id="7", pathspec="F/7", state="successful",
                                                  created_at=None, finished_at=None), {})
    app.extensions["lineup"].slot.swap(served)
    client = app.test_client()
    user = "u-000001"
    sold = client.get(f"/recommendations?user_id={user}&n=3").get_json()["items"]
    assert client.post("/admin/catalogue/reload").status_code == 401
    _write(path, next_week, sold_out={item["item_id"] for item in sold})
    response = client.post("/admin/catalogue/reload", headers=admin_headers)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["serving"]["run_id"] == "7" and body["serving"]["new_events"] > 20
    after = client.get(f"/recommendations?user_id={user}&n=50").get_json()["items"]
    assert not {i["item_id"] for i in after} & {i["item_id"] for i in sold}
    # A file cut to a tenth is refused with 422; the good catalogue keeps serving.
    _write(path, next_week, drop=set(next_week.item_id[next_week.item_id != next_week.item_id[0]]
                                     .tolist()))
    refused = client.post("/admin/catalogue/reload", headers=admin_headers)
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == \
        "catalogue_refused"
    status = client.get("/admin/status", headers=admin_headers).get_json()["catalogue"]
    assert status["serving"]["new_events"] == body["serving"]["new_events"]
    assert "refusing it" in status["last_error"]["message"]
    again = client.get(f"/recommendations?user_id={user}&n=50").get_json()["items"]
    assert again == after


def test_a_reload_asked_of_one_worker_reaches_every_worker(
        settings, fitted_model, next_week, tmp_path):
    from service.catalogue_follower import CatalogueFollower
    from service.slot import ModelSlot

    path = _write(tmp_path / "live.csv", next_week)
    slot = ModelSlot()
    record = RunRecord(run_id="7", pathspec="F/7", state="successful", created_at=None,
                       finished_at=None)
    slot.swap(loader.serve(fitted_model, record, {}))
    workers = [CatalogueFollower({**settings, "CATALOGUE": str(path),
                                  "CATALOGUE_INTERVAL": 3600.0}, slot) for _ in range(2)]
    for worker in workers:
        worker.tick()  # the first read
    first = workers[1].get()
    assert first is not None and first.new_events > 20
    upcoming = next_week.item_id[next_week.starts_at > time.time()]
    _write(path, next_week, sold_out=set(upcoming[:5].tolist()))
    workers[1].tick()
    assert workers[1].get() is first  # an hour to go: no read of its own
    workers[0].request_reload()
    workers[1].tick()  # sees the signal file
    assert workers[1].get() is not first and workers[1].get().on_sale < first.on_sale
