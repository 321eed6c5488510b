"""Unit tests for sanity_tests: every check on a healthy and a deliberately broken candidate."""

from __future__ import annotations

import copy
import json
import math
import platform
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import sklearn

import sanity_tests
from sanity_tests import (
    MODEL_CHECKS,
    RUN_CHECKS,
    CheckFailure,
    CheckResult,
    Report,
    RunContext,
    Thresholds,
    checks_fingerprint,
    run_checks,
)
from service.recommender import EventRecommender
from service.servable import SERVABLES, servable_class
from tests.flows import damage_model

HOLDOUT = {"precision@10": 0.08, "recall@10": 0.3, "ndcg@10": 0.2, "coverage": 0.6}
BASELINE = {"precision@10": 0.04, "recall@10": 0.15, "ndcg@10": 0.1, "coverage": 0.05}
VERSIONS = {"python": platform.python_version(), "numpy": np.__version__,
            "scikit-learn": sklearn.__version__}
#: Well-formed probes for the run checks (the model checks build real ones).
PROBES = {"users": [f"u{i}" for i in range(25)], "items": [["e1"]] * 25, "model": [0.5] * 25,
          "popularity": [0.2] * 25}


def make_context(**changes) -> RunContext:
    """Build a healthy run context (no golden users), with ``changes`` applied."""
    context = RunContext(run_id="42", pathspec="LineupTrainFlow/42", holdout_metrics=HOLDOUT,
                         baseline_metrics=BASELINE, library_versions=VERSIONS, golden_users=(),
                         schema_version=EventRecommender.SCHEMA_VERSION, as_of=0.0,
                         probes=PROBES)
    return replace(context, **changes)


def bump(version: str, index: int) -> str:
    """Return ``version`` with its ``index``-th number increased by one."""
    parts = version.split(".")
    parts[index] = str(int(parts[index]) + 1)
    return ".".join(parts)


# --- context ---------------------------------------------------------------------------------

def test_thresholds_from_settings_reads_config_keys():
    thresholds = Thresholds.from_settings(
        {"NDCG_FLOOR": 0.1, "REGRESSION_TOLERANCE": 0.05, "LATENCY_BUDGET_MS": 20, "OTHER": 1})
    assert thresholds == Thresholds(ndcg_floor=0.1, regression_tolerance=0.05,
                                    latency_budget_ms=20.0)


def test_thresholds_from_settings_defaults_match_config():
    from service import config

    assert Thresholds.from_settings(config.load({})) == Thresholds()
    assert Thresholds.from_settings({}) == Thresholds()


# --- run checks (metrics only, model is None) ---------------------------------------------

def test_healthy_run_passes_every_run_check():
    report = run_checks(RUN_CHECKS, None, make_context())
    assert report.passed, report.format()


@pytest.mark.parametrize("changes, failing, words", [
    # Without an ndcg@10 the checks that compare it cannot pass either.
    ({"holdout_metrics": None}, ["check_metrics_present", "check_ndcg_floor",
                                 "check_beats_baseline"], "holdout_metrics is missing"),
    ({"holdout_metrics": {**HOLDOUT, "ndcg@10": math.nan}},
     ["check_metrics_present", "check_ndcg_floor", "check_beats_baseline"],
     "non-finite ndcg@10=nan"),
    ({"baseline_metrics": {}}, ["check_metrics_present", "check_beats_baseline"],
     "baseline_metrics lacks ndcg@10"),
    ({"holdout_metrics": {k: v for k, v in HOLDOUT.items() if k != "coverage"}},
     "check_metrics_present", "lacks coverage"),
    ({"holdout_metrics": {**HOLDOUT, "ndcg@10": 0.015},
      "baseline_metrics": {**BASELINE, "ndcg@10": 0.01}},
     "check_ndcg_floor", "0.0150 is below the floor 0.0200"),
    ({"holdout_metrics": {**HOLDOUT, "ndcg@10": 0.1}}, "check_beats_baseline",
     "does not beat the popularity baseline 0.1000"),
    ({"baseline_difference": {"ndcg@10": {"mean": -0.02, "low": -0.05, "high": -0.01}}},
     "check_beats_baseline",
     "the paired difference -0.0200 [-0.0500, -0.0100] does not lie above 0"),
    ({"probes": None}, "check_probes_present", "stored no gate_probes"),
    ({"probes": {**PROBES, "model": [0.5]}}, "check_probes_present",
     "inconsistent: 25 users but 25 items, 1 model, 25 popularity"),
    ({"probes": {k: v[:5] for k, v in PROBES.items()}}, "check_probes_present",
     "holds 5 users, fewer than 20"),
    ({"library_versions": None}, "check_library_versions", "no library_versions"),
    ({"library_versions": {**VERSIONS, "scikit-learn": bump(sklearn.__version__, 1)}},
     "check_library_versions", f"scikit-learn trained {bump(sklearn.__version__, 1)}"),
    ({"library_versions": {**VERSIONS, "numpy": bump(np.__version__, 0)}},
     "check_library_versions", "numpy trained"),
    ({"library_versions": {**VERSIONS, "python": bump(platform.python_version(), 1)}},
     "check_library_versions", "python trained"),
    ({"library_versions": {"python": platform.python_version()}},
     "check_library_versions", "numpy not recorded; scikit-learn not recorded"),
    ({"schema_version": 99}, "check_run_schema_version", "schema_version 99"),
])
def test_broken_run_fails_exactly_its_run_check(changes, failing, words):
    report = run_checks(RUN_CHECKS, None, make_context(**changes))
    assert report.failed_names == ([failing] if isinstance(failing, str) else failing), \
        report.format()
    assert words in report.failed[0].message


@pytest.mark.parametrize("versions", [
    {**VERSIONS, "numpy": bump(np.__version__, 1)},                    # numpy minor may differ
    {**VERSIONS, "scikit-learn": bump(sklearn.__version__, 2)},        # sklearn patch may differ
    {**VERSIONS, "python": bump(platform.python_version(), 2)},        # python patch may differ
])
def test_library_versions_tolerate_compatible_differences(versions):
    sanity_tests.check_library_versions(None, make_context(library_versions=versions))


def test_beats_baseline_judges_by_the_paired_interval_when_stored():
    # Point estimates below popularity, but the paired interval lies above it: passes.
    context = make_context(
        holdout_metrics={**HOLDOUT, "ndcg@10": 0.09},
        baseline_difference={"ndcg@10": {"mean": 0.02, "low": 0.01, "high": 0.04}})
    measures = sanity_tests.check_beats_baseline(None, context)
    assert (measures[0].low, measures[0].high, measures[0].claimed) == (0.01, 0.04, 0.02)
    # A gain the interval cannot tell from none (the taste signal lost): rejected.
    unsure = replace(context, baseline_difference={
        "ndcg@10": {"mean": 0.01, "low": -0.004, "high": 0.02}})
    with pytest.raises(CheckFailure, match=r"\[-0.0040, \+0.0200\] does not lie above 0"):
        sanity_tests.check_beats_baseline(None, unsure)
    strict = replace(context, thresholds=Thresholds(baseline_margin=0.03))
    with pytest.raises(CheckFailure, match=r"\[\+0.0100, \+0.0400\] does not lie above 0.03"):
        sanity_tests.check_beats_baseline(None, strict)


def test_no_regression_needs_a_serving_model():
    assert sanity_tests.check_no_regression(None, make_context(serving_model=None)) == []


def test_ndcg_floor_follows_thresholds():
    strict = make_context(thresholds=Thresholds(ndcg_floor=0.5))
    with pytest.raises(CheckFailure, match="below the floor 0.5000"):
        sanity_tests.check_ndcg_floor(None, strict)


# --- runner ----------------------------------------------------------------------------------

def check_passes(model, context):
    """Pass."""


def check_fails(model, context):
    """Fail with an operator's message."""
    raise CheckFailure("3 of 50 golden users got fewer than 10 items")


def check_has_a_bug(model, context):
    """Crash, as a buggy check would."""
    raise ValueError("boom")


def test_run_checks_captures_failures_and_exceptions():
    report = run_checks([check_passes, check_fails, check_has_a_bug], None, make_context())
    assert [r.name for r in report.results] == ["check_passes", "check_fails", "check_has_a_bug"]
    assert not report.passed
    assert report.failed_names == ["check_fails", "check_has_a_bug"]
    assert report.results[0] == CheckResult("check_passes", True, "", report.results[0].seconds)
    assert report.results[1].message == "3 of 50 golden users got fewer than 10 items"
    assert report.results[2].message == "raised ValueError: boom"


def test_run_checks_stop_on_failure():
    report = run_checks([check_fails, check_passes], None, make_context(), stop_on_failure=True)
    assert report.failed_names == ["check_fails"]
    assert len(report.results) == 1


def test_run_checks_times_each_check(monkeypatch):
    ticks = iter([10.0, 10.25, 20.0, 21.0])
    monkeypatch.setattr("sanity_tests.runner.time.perf_counter", lambda: next(ticks))
    report = run_checks([check_passes, check_fails], None, make_context())
    assert [r.seconds for r in report.results] == [0.25, 1.0]


def test_report_to_dict_is_json_and_format_is_a_table():
    report = Report((CheckResult("check_a", True, "", 0.0012),
                     CheckResult("check_bb", False, "too slow", 0.5)))
    data = json.loads(json.dumps(report.to_dict()))
    assert data == {"passed": False, "failed": ["check_bb"], "results": [
        {"name": "check_a", "passed": True, "message": "", "seconds": 0.0012, "measures": []},
        {"name": "check_bb", "passed": False, "message": "too slow", "seconds": 0.5,
         "measures": []}]}
    lines = report.format().splitlines()
    assert lines[1].split() == ["PASS", "check_a", "1.2"]
    assert lines[2].split() == ["FAIL", "check_bb", "500.0", "too", "slow"]
    assert lines[-1] == "1 of 2 checks passed"


def test_empty_report_passes():
    assert Report(()).passed and Report(()).failed == ()


def test_checks_fingerprint_changes_with_thresholds_only():
    base = checks_fingerprint(Thresholds())
    assert base == checks_fingerprint(Thresholds())
    assert len(base) == 64
    assert checks_fingerprint(Thresholds(ndcg_floor=0.03)) != base
    assert checks_fingerprint(Thresholds(latency_calls=10)) != base


def test_checks_fingerprint_covers_check_source(monkeypatch, tmp_path):
    import shutil

    import sanity_tests.runner as runner

    package = tmp_path / "sanity_tests"
    shutil.copytree(Path(runner.__file__).parent, package)
    monkeypatch.setattr(runner, "__file__", str(package / "runner.py"))
    before = checks_fingerprint(Thresholds())
    with open(package / "quality.py", "a") as handle:
        handle.write("\n# a changed check\n")
    changed = checks_fingerprint(Thresholds())
    assert changed != before
    (package / "fairness.py").write_text("def check_new(model, context):\n    pass\n")
    assert checks_fingerprint(Thresholds()) not in (before, changed)  # a new module counts


def test_every_check_is_exported():
    for check in sanity_tests.RUN_CHECKS + sanity_tests.MODEL_CHECKS:
        assert getattr(sanity_tests, check.__name__) is check
        assert check.__doc__, check.__name__


# --- model checks on a small fitted EventRecommender ------------------------------------

AS_OF = datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()


@pytest.fixture(scope="module")
def world():
    """A small sample world as of AS_OF: (interactions, catalogue)."""
    from service.training.sample_data import generate

    return generate(as_of="2026-03-01", users=400, events=300, interactions=8000)


@pytest.fixture(scope="module")
def fitted(world):
    """Fit one small EventRecommender on the world."""
    interactions, catalogue = world
    return EventRecommender(n_components=8, n_clusters=4).fit(interactions, items=catalogue)


@pytest.fixture(scope="module")
def golden_context(fitted, world):
    """A healthy run context with 20 golden users and the fitted model's probes, as of AS_OF."""
    from service.training.probes import build_probes

    golden = [{"user_id": str(u), "holdout_items": []} for u in fitted.user_ids_[::18][:20]]
    return make_context(golden_users=golden, as_of=AS_OF,
                        schema_version=EventRecommender.SCHEMA_VERSION,
                        thresholds=Thresholds(latency_calls=100),
                        probes=build_probes(fitted, world[0], golden, count=100))


@pytest.fixture
def model(fitted):
    """A private copy of the fitted model, for a test to break."""
    return copy.deepcopy(fitted)


def patch_recommend(model, change, known_only=False):
    """Make ``model.recommend`` return ``change(rec, user_id)`` (for known users only)."""
    original = model.recommend

    def recommend(user_id, n=10, as_of=None, **options):
        rec = original(user_id, n, as_of, **options)
        if known_only and not model.known_user(user_id):
            return rec
        return change(rec, user_id)

    model.recommend = recommend
    return model


def with_first_repeated(model):
    return patch_recommend(model, lambda rec, _: rec._replace(
        items=np.r_[rec.items[:1], rec.items[:-1]],
        item_ids=np.r_[rec.item_ids[:1], rec.item_ids[:-1]]), known_only=True)


def with_ghost_item(model):
    return patch_recommend(model, lambda rec, _: rec._replace(
        item_ids=np.r_[["ev-ghost"], rec.item_ids[1:]]), known_only=True)


def with_nan_scores(model):
    return patch_recommend(model, lambda rec, _: rec._replace(
        scores=np.full(rec.scores.shape, np.nan)), known_only=True)


def with_noisy_scores(model):
    noise = np.random.default_rng(0)
    return patch_recommend(model, lambda rec, _: rec._replace(
        scores=rec.scores + noise.random(rec.scores.shape)))


def with_one_list_for_all(model):
    cold = model.recommend(sanity_tests.COLD_PROBE, 10, AS_OF)
    return patch_recommend(model, lambda rec, _: cold._replace(strategy=rec.strategy),
                           known_only=True)


def with_personalised_cold_start(model):
    return patch_recommend(model, lambda rec, user: rec if model.known_user(user)
                           else rec._replace(strategy="personalised"))


def with_short_lists(model):
    return patch_recommend(model, lambda rec, user: rec._replace(
        items=rec.items[:7], item_ids=rec.item_ids[:7], scores=rec.scores[:7]), known_only=True)


def with_nan_in_past_item_factors(model):
    past = np.flatnonzero(model.item_starts_at_ <= AS_OF)
    model.item_factors_[past[:3], 0] = np.nan
    return model


def with_inf_cluster_scores(model):
    model.cluster_item_scores_[1, 5] = np.inf
    return model


def with_nan_start(model):
    past = np.flatnonzero(model.item_starts_at_ <= AS_OF)
    model.item_starts_at_[past[0]] = np.nan
    return model


def with_truncated(name, rows):
    def breaker(model):
        setattr(model, name, getattr(model, name)[:rows])
        return model
    return breaker


def with_rolled(*names, axis):
    """Shift arrays by one along ``axis``: axis 0 gives each user another's rows."""
    def breaker(model):
        for name in names:
            setattr(model, name, np.roll(getattr(model, name), 1, axis=axis))
        return model
    return breaker


def with_wide_item_factors(model):
    model.item_factors_ = np.hstack([model.item_factors_, model.item_factors_[:, :1]])
    return model


def with_seen_out_of_range(model):
    model.seen_indices_ = model.seen_indices_.copy()
    model.seen_indices_[-1] = len(model.item_ids_)
    return model


def with_bad_user_cluster(model):
    model.user_clusters_[0] = len(model.cluster_labels_)
    return model


def with_everything_in_the_past(model):
    model.item_starts_at_[:] = AS_OF - 1.0
    return model


def with_items_out_of_start_order(model):
    upcoming = np.flatnonzero(model.item_starts_at_ > AS_OF)
    model.item_starts_at_[[0, upcoming[-1]]] = model.item_starts_at_[[upcoming[-1], 0]]
    return model


def with_ranking_out_of_range(model):
    model.user_ranking_[3, 0] = len(model.item_ids_)
    return model


def with_city_scores_cut(model):
    model.user_city_ranking_scores_ = model.user_city_ranking_scores_[:, :, :-1]
    return model


def with_nan_feature_weights(model):
    model.feature_weights_ = model.feature_weights_.copy()
    model.feature_weights_[0, 0] = np.nan
    return model


def with_sunk_new_events(model):
    """A metadata map whose intercept buries every new event under the catalogue."""
    model.feature_weights_ = model.feature_weights_.copy()
    model.feature_weights_[-1, -1] = -100.0
    return model


def with_schema_version(model):
    model.schema_version_ = 0
    return model


class Impostor:
    """Everything an EventRecommender has, but not one."""


def as_impostor(model):
    impostor = Impostor()
    impostor.__dict__.update(vars(model))
    impostor.recommend = model.recommend
    impostor.known_user = model.known_user
    return impostor


@pytest.mark.parametrize("breaker, failing, words", [
    # Not a servable: it declares no arrays to check either.
    (as_impostor, {"check_fitted_estimator", "check_array_shapes", "check_finite_arrays",
                   "check_ranking_matches_scoring", "check_new_events_recommended",
                   "check_measured_quality", "check_list_changes"},
     "test_sanity_checks.Impostor, not a service.recommender.EventRecommender"),
    (with_schema_version, {"check_schema_version"},
     f"model.schema_version_ is 0, expected {EventRecommender.SCHEMA_VERSION}"),
    (with_nan_in_past_item_factors, {"check_finite_arrays"},
     "item_factors_ has 3 non-finite value(s) at"),
    (with_inf_cluster_scores, {"check_finite_arrays", "check_taste_labels"},
     "cluster_item_scores_ has 1 non-finite value(s) at (1, 5)"),
    (with_nan_start, {"check_finite_arrays"}, "item_starts_at_ has 1 NaN value(s)"),
    (with_nan_feature_weights, {"check_finite_arrays", "check_new_events_scored"},
     "feature_weights_ has 1 non-finite value(s) at (0, 0)"),
    (with_sunk_new_events, {"check_new_events_recommended"},
     "none of 20 golden users ranks any of 100 new events copied"),
    (with_truncated("item_categories_", 10), {"check_array_shapes",
                                              "check_ranking_matches_scoring",
                                              "check_taste_labels",
                                              "check_new_events_scored",
                                              "check_new_events_recommended"},
     "item_categories_ has shape (10,), expected (833,)"),
    # Requests read the fit-time ranking, so broken factors show when the
    # catalogue is scored; the shape check names the cause.
    (with_wide_item_factors, {"check_array_shapes", "check_ranking_matches_scoring",
                              "check_measured_quality", "check_new_events_recommended"},
     # 8 collaborative + 32 content + 48 segment factors
     "item_factors_ has shape (833, 89), expected (833, 88) (factors 88 as in"),
    # Filtered lists read popularity too (a block's popularity order).
    (with_truncated("item_popularity_", 10), {"check_array_shapes", "check_cold_start",
                                              "check_measured_quality",
                                              "check_ranking_matches_scoring",
                                              "check_new_events_recommended"},
     "item_popularity_ has shape (10,), expected (833,)"),
    (with_truncated("cluster_labels_", 3), {"check_array_shapes"},
     "cluster_item_scores_ has shape (4, 833), expected (3, 833)"),
    # The last user's bought items reach past the catalogue: scoring raises for them.
    (with_seen_out_of_range, {"check_array_shapes", "check_ranking_matches_scoring"},
     "seen_indices_ spans"),
    (with_bad_user_cluster, {"check_array_shapes"}, "user_clusters_ spans [0, 4], outside [0, 4)"),
    (with_items_out_of_start_order, {"check_array_shapes", "check_golden_users_lists"},
     "item_starts_at_ is not ascending"),
    (with_rolled("user_ranking_", "user_ranking_scores_", axis=0),
     {"check_ranking_matches_scoring"},
     "100 of 100 golden and probe users got ranked scores that scoring does not give"),
    (with_ranking_out_of_range, {"check_array_shapes"},
     "user_ranking_ spans [539, 833], outside [539, 833) and padding -1"),
    (with_rolled("user_city_ranking_", axis=0), {"check_ranking_matches_scoring"},
     "the per-city ranking (user_city_ranking_ or user_city_category_ranking_) disagrees"),
    (with_rolled("user_city_ranking_", axis=1),
     {"check_array_shapes", "check_ranking_matches_scoring"},
     "user_city_ranking_ holds"),
    # A one-city list is read with its stored scores.
    (with_rolled("user_city_ranking_scores_", axis=0), {"check_ranking_matches_scoring"},
     "got ranked scores that scoring does not give in"),
    (with_city_scores_cut, {"check_array_shapes"}, "user_city_ranking_scores_ has shape ("),
    # A city and category's list is read from its row, and its few items scored.
    (with_rolled("user_city_category_ranking_", axis=0),
     {"check_ranking_matches_scoring"},
     "that scoring does not give in "),
    (with_rolled("user_city_category_ranking_", axis=2),
     {"check_array_shapes", "check_ranking_matches_scoring"},
     "user_city_category_ranking_ holds"),
    (with_first_repeated, {"check_golden_users_lists"},
     "20 of 20 golden users got duplicate items"),
    (with_short_lists, {"check_golden_users_lists"},
     "20 of 20 golden users got a wrong-length list (want 10), all with "),
    (with_ghost_item, {"check_golden_users_lists"}, "20 of 20 golden users got unknown items"),
    (with_nan_scores, {"check_golden_users_lists", "check_ranking_matches_scoring"},
     "20 of 20 golden users got non-finite scores, all with 10"),
    (with_noisy_scores, {"check_deterministic", "check_ranking_matches_scoring"},
     "got a different list the second time"),
    (with_personalised_cold_start, {"check_cold_start"},
     "strategy: 'personalised', expected 'cold_start'"),
    (with_one_list_for_all, {"check_lists_differ"}, "all 20 golden users got the identical list"),
    # With no upcoming event every list is empty, so the lists are also all alike.
    (with_everything_in_the_past, {"check_golden_users_lists", "check_cold_start",
                                   "check_lists_differ", "check_new_events_scored",
                                   "check_new_events_recommended"},
     "20 of 20 golden users got a wrong-length list (want 10), all with "),
])
def test_broken_model_fails_exactly_its_check(model, golden_context, breaker, failing, words):
    report = run_checks(MODEL_CHECKS, breaker(model), golden_context)
    assert set(report.failed_names) == failing, report.format()
    assert words in report.failed[0].message, report.format()


def test_healthy_model_passes_every_check(model, golden_context):
    report = run_checks(RUN_CHECKS + MODEL_CHECKS, model, golden_context)
    assert report.passed, report.format()


@pytest.mark.parametrize("servable", sorted(SERVABLES))
def test_a_healthy_model_of_ratings_passes_every_check(world, servable):
    # A ratings file: every row is seen and no items file says anything of the items.
    # Each probe user's own items are then all seen, and the probe events all alike.
    from service.training.data import Interactions
    from service.training.probes import build_probes

    log = world[0]
    ratings = Interactions.from_arrays(log.user_id, log.item_id, log.timestamp, log.weight)
    params = {"event": {"n_components": 8, "n_clusters": 4}, "ease": {"max_items": 200},
              "item_knn": {"n_neighbors": 20}}[servable]
    model = servable_class(servable)(**params).fit(ratings)
    golden = [{"user_id": str(u), "holdout_items": []} for u in model.user_ids_[::18][:20]]
    context = make_context(golden_users=golden, as_of=float(log.timestamp.max()) + 1.0,
                           schema_version=model.SCHEMA_VERSION, model_class=servable,
                           thresholds=Thresholds(latency_calls=100),
                           probes=build_probes(model, ratings, golden, count=100))
    report = run_checks(RUN_CHECKS + MODEL_CHECKS, model, context)
    assert report.passed, report.format()
    # And the measure still tells a scrambled model from this one: items' factors, or the
    # items of users' profiles, moved to other items.
    damaged = copy.deepcopy(model)
    moved = np.random.default_rng(0).permutation(model.item_ids_.size)
    if servable == "event":
        damaged.item_factors_ = model.item_factors_[moved]
    else:
        damaged.profile_indices_ = moved[model.profile_indices_].astype(np.int32)
    with pytest.raises(CheckFailure, match="is far below the"):
        sanity_tests.check_measured_quality(damaged, context)


def test_golden_failure_names_users_and_counts(model, golden_context):
    first, second = (user["user_id"] for user in golden_context.golden_users[:2])
    keep = {first: 7, second: 4}
    patch_recommend(model, lambda rec, user: rec._replace(
        items=rec.items[:keep[user]], item_ids=rec.item_ids[:keep[user]],
        scores=rec.scores[:keep[user]]) if user in keep else rec)
    with pytest.raises(CheckFailure) as caught:
        sanity_tests.check_golden_users_lists(model, golden_context)
    assert str(caught.value) == (
        f"2 of 20 golden users got a wrong-length list (want 10): {first} (7 items), "
        f"{second} (4 items) (n=10, as of 2026-03-01T00:00:00Z)")


def test_golden_failure_says_a_shared_cause_once(model, golden_context):
    with_short_lists(model)
    with pytest.raises(CheckFailure) as caught:
        sanity_tests.check_golden_users_lists(model, golden_context)
    message = str(caught.value)
    assert message.startswith("20 of 20 golden users got a wrong-length list (want 10), "
                              "all with 7 items: u-000000, ")
    assert message.count("7 items") == 1 and "and 15 more" in message


def test_past_events_are_reported_when_recommend_ignores_as_of(model, golden_context):
    later = replace(golden_context, as_of=AS_OF + 30 * 86_400)
    patch_recommend(model, lambda rec, _: rec)  # keep the real lists, judged later
    original = model.recommend
    model.recommend = lambda user_id, n=10, as_of=None, **kw: original(user_id, n, AS_OF, **kw)
    with pytest.raises(CheckFailure, match="golden users got events that are not upcoming"):
        sanity_tests.check_golden_users_lists(model, later)


def damaged(kind):
    """The damage the gate's real-run tests make (tests/flows.py), as a breaker."""
    return lambda model: damage_model(model, kind, log=None, catalogue=None, donor=None)


def test_a_model_that_forgot_what_users_bought_fails_the_golden_lists(
        model, fitted, golden_context):
    def bought(user_id):  # what the fitted model holds as seen: its fit's holdout items
        row = fitted._user_row(user_id)
        return [str(fitted.item_ids_[i]) for i in
                fitted.seen_indices_[fitted.seen_indptr_[row]:fitted.seen_indptr_[row + 1]]]

    golden = [{**user, "holdout_items": bought(user["user_id"])}
              for user in golden_context.golden_users]
    context = replace(golden_context, golden_users=golden)
    sanity_tests.check_golden_users_lists(fitted, context)
    forgot = damaged("seen")(model)
    with pytest.raises(CheckFailure, match=r"of 20 golden users got items they already "
                                           r"bought or rated"):
        sanity_tests.check_golden_users_lists(forgot, context)


def with_facts_permuted(name):
    def breaker(model):
        setattr(model, name, getattr(model, name)[
            np.random.default_rng(0).permutation(model.item_ids_.size)])
        return model
    return breaker


@pytest.mark.parametrize("breaker, words", [
    (damaged("starts"), r"^833 of 833 items' starts_at differ, e\.g\. 'ev-20251113-0008': "
                        r"2026-02-03T20:00:00Z in the model, 2026-01-04T20:00:00Z in the run's"),
    (with_facts_permuted("item_cities_"), "items' city differ"),
    (with_facts_permuted("item_categories_"), "items' category differ"),
    (with_facts_permuted("item_titles_"), "items' title differ"),
    (damaged("cut_catalogue"), r"catalogue items are not in the model \(ev-"),
])
def test_a_model_whose_item_facts_moved_fails_the_catalogue_check(
        model, fitted, world, golden_context, breaker, words):
    context = replace(golden_context, catalogue=world[1])
    sanity_tests.check_catalogue_matches_run(fitted, context)
    sanity_tests.check_catalogue_matches_run(breaker(model), golden_context)  # none: a ratings run
    with pytest.raises(CheckFailure, match=words):
        sanity_tests.check_catalogue_matches_run(model, context)


def with_labels_rolled(model):
    model.cluster_labels_ = np.roll(model.cluster_labels_, 1)
    return model


def with_cluster_scores_permuted(model):
    model.cluster_item_scores_ = model.cluster_item_scores_[
        :, np.random.default_rng(0).permutation(model.item_ids_.size)]
    return model


def test_taste_labels_may_be_categories_that_look_like_suffixes(model, golden_context):
    """A category "under-18" or "cluster-7" is a label of its own, not a suffix or a stand-in."""
    renamed = dict(zip(model.cluster_labels_[:2].tolist(), ("under-18", "cluster-7")))
    model.item_categories_ = np.array([renamed.get(c, c) for c in model.item_categories_.tolist()])
    model.cluster_labels_ = np.array([renamed.get(c, c) for c in model.cluster_labels_.tolist()])
    sanity_tests.check_taste_labels(model, golden_context)


@pytest.mark.parametrize("breaker", [with_labels_rolled, with_cluster_scores_permuted])
def test_mislabelled_taste_clusters_fail_the_taste_check(model, fitted, golden_context, breaker):
    sanity_tests.check_taste_labels(fitted, golden_context)
    with pytest.raises(CheckFailure, match=r"^\d of 4 taste clusters are mislabelled: '"):
        sanity_tests.check_taste_labels(breaker(model), golden_context)


def test_unfitted_and_wrong_models_fail_the_estimator_check(fitted, golden_context):
    from service.recommender import PopularityRecommender

    with pytest.raises(CheckFailure, match="model is not fitted"):
        sanity_tests.check_fitted_estimator(EventRecommender(), golden_context)
    with pytest.raises(CheckFailure, match="is a service.popularity.PopularityRecommender"):
        sanity_tests.check_fitted_estimator(PopularityRecommender(), golden_context)


def test_run_schema_version_mismatch_fails_schema_check(model, golden_context):
    report = run_checks(MODEL_CHECKS, model, replace(golden_context, schema_version=1))
    assert report.failed_names == ["check_schema_version"]
    assert "run artifact schema_version is 1" in report.failed[0].message


@pytest.mark.parametrize("warnings, words", [
    (("InconsistentVersionWarning: Trying to unpickle estimator KMeans from version 1.4.0 "
      "when using version 1.9.1.",), "scikit-learn versions differ"),
    (("UserWarning: something odd",), "may not behave as trained"),
])
def test_load_warnings_fail_the_warnings_check(model, golden_context, warnings, words):
    report = run_checks(MODEL_CHECKS, model, replace(golden_context, load_warnings=warnings))
    assert report.failed_names == ["check_no_load_warnings"]
    assert words in report.failed[0].message
    assert warnings[0][:40] in report.failed[0].message


def test_behaviour_checks_need_golden_users(model, golden_context):
    with pytest.raises(CheckFailure, match="stored no golden users"):
        sanity_tests.check_golden_users_lists(model, replace(golden_context, golden_users=()))


def test_slow_recommend_fails_latency_early(model, golden_context):
    original = model.recommend
    calls = []

    def slow(user_id, n=10, as_of=None, **kw):
        calls.append(user_id)
        time.sleep(0.003)
        return original(user_id, n, as_of, **kw)

    model.recommend = slow
    context = replace(golden_context, thresholds=Thresholds(latency_budget_ms=1.0,
                                                            latency_calls=300))
    report = run_checks([sanity_tests.check_latency], model, context)
    assert report.failed_names == ["check_latency"]
    assert "calls took over 1.0 ms" in report.failed[0].message
    assert "stopped early" in report.failed[0].message
    assert len(calls) < 30  # gave up long before 300 slow calls


def test_latency_reports_p50_and_p99(model, golden_context):
    context = replace(golden_context, thresholds=Thresholds(latency_budget_ms=0.0,
                                                            latency_calls=1))
    with pytest.raises(CheckFailure, match=r"p99 \d+\.\d ms over the 0\.0 ms budget \(p50"):
        sanity_tests.check_latency(model, context)


# --- measuring the model on its probes, and against the serving model ------------------------

def with_users_permuted(model):
    model.user_factors_ = model.user_factors_[np.roll(np.arange(model.user_ids_.size), 1)]
    model._rank_users()  # the ranking follows the damaged factors, as a refit would
    return model


def test_probe_measure_of_the_fitted_model_is_its_claim(fitted, golden_context):
    measures = sanity_tests.check_measured_quality(fitted, golden_context)
    probe, versus_claim, versus_popularity, popularity_versus_claim = measures
    assert probe.measured == pytest.approx(probe.claimed, abs=1e-5)
    assert probe.low <= probe.measured <= probe.high
    assert versus_popularity.low > 0
    assert popularity_versus_claim.measured == pytest.approx(0.0, abs=1e-6)


def with_noised_users(model):
    """Noise as large as the users' factors: lists change, the measure drops a little."""
    factors = np.array(model.user_factors_)
    noise = np.random.default_rng(0).normal(0.0, factors.std(), factors.shape)
    model.user_factors_ = (factors + noise).astype(factors.dtype)
    model._rank_users()
    return model


def with_popularity_permuted(model):
    """Every cold-start list scrambled; known users' lists unchanged."""
    model.item_popularity_ = model.item_popularity_[
        np.random.default_rng(0).permutation(model.item_ids_.size)]
    return model


@pytest.mark.parametrize("breaker, words", [
    (with_noised_users, "is far below the"),
    (with_popularity_permuted, "the model's popularity ranks the probe users' items at"),
])
def test_measured_quality_holds_the_artifact_to_its_claims(model, golden_context,
                                                           breaker, words):
    with pytest.raises(CheckFailure, match=words):
        sanity_tests.check_measured_quality(breaker(model), golden_context)


def test_probe_measure_counts_ties_and_unknown_items_against_the_model(fitted):
    from service.training import probes

    flat = copy.deepcopy(fitted)
    flat.user_factors_ = np.zeros_like(flat.user_factors_)
    flat.item_bias_ = np.zeros_like(flat.item_bias_)
    users = [str(u) for u in fitted.user_ids_[:5]]
    items = [[str(fitted.item_ids_[0])]] * 4 + [["ev-not-in-the-catalogue"]]
    assert probes.measure(flat, users, items)[0].tolist() == [0.0] * 5
    assert probes.measure(fitted, users, items)[0][-1] == 0.0


def test_bootstrap_interval_brackets_the_mean_and_is_deterministic():
    from service.training.probes import bootstrap_interval

    values = np.random.default_rng(1).random(300)
    low, high = bootstrap_interval(values)
    assert low < values.mean() < high and high - low < 0.1
    assert bootstrap_interval(values) == (low, high)


def test_a_model_worse_than_the_serving_one_regresses_and_changes_lists(
        model, fitted, golden_context):
    context = replace(golden_context, serving_model=fitted, memo={},
                      thresholds=Thresholds(min_overlap=0.5))
    report = run_checks([sanity_tests.check_no_regression, sanity_tests.check_list_changes],
                        with_users_permuted(model), context)
    assert report.failed_names == ["check_no_regression", "check_list_changes"]
    assert "regresses from the serving model" in report.failed[0].message
    assert "without a measured gain" in report.failed[1].message
    names = [m.name for m in report.failed[1].measures]
    assert {"overlap@10 with serving", "cold-start share rise",
            "catalogue coverage@10 (candidate)"} <= set(names)


def test_lists_may_change_with_a_measured_gain(model, fitted, golden_context):
    context = replace(golden_context, serving_model=with_users_permuted(model), memo={},
                      thresholds=Thresholds(min_overlap=0.5))
    measures = sanity_tests.check_list_changes(fitted, context)
    by_name = {m.name: m for m in measures}
    assert by_name["overlap@10 with serving"].measured < 0.5
    assert by_name["probe ndcg@10 candidate - serving"].low > 0


def test_measures_reach_the_report_and_its_table(fitted, golden_context):
    report = run_checks(RUN_CHECKS + MODEL_CHECKS, fitted, golden_context)
    rows = sanity_tests.flat_measures(report.to_dict()["results"])
    assert {"check", "passed", "name", "measured", "low", "high", "claimed", "rule"} <= set(rows[0])
    table = report.format_measures().splitlines()
    assert table[0].split()[:4] == ["check", "measure", "claimed", "measured"]
    assert any(line.startswith("check_measured_quality") and "PASS" in line for line in table)
