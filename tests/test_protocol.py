"""The evaluation protocol, the bootstrap and the search, on small hand-made data."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from service.training import bootstrap, evaluation, protocol, search
from service.training.data import Interactions

DAY = 86_400.0


def _log(rows):
    """Build Interactions from (user, item, day, seen) rows."""
    users, items, days, seen = zip(*rows)
    return Interactions.from_arrays(users, items, np.array(days) * DAY, seen=seen)


def test_last_k_holds_out_each_users_last_seen_rows_and_what_follows():
    log = _log([("a", "i1", 1, True), ("a", "i2", 2, True), ("a", "i3", 3, False),
                ("a", "i4", 4, True), ("a", "i5", 5, False),
                ("b", "i1", 1, True), ("b", "i2", 2, True),  # only 2 seen: not held out
                ("c", "i2", 1, True), ("c", "i3", 2, True), ("c", "i2", 3, True)])  # repeat
    split = protocol.last_k(log, 2)
    assert sorted(zip(split.train.user_id.tolist(), split.train.item_id.tolist())) == [
        ("a", "i1"), ("b", "i1"), ("b", "i2"), ("c", "i2")]
    # a's held-out view i3 comes after its second-last seen row, so it is held out but not
    # truth; c saw i2 before, so only i3 is new.
    assert {user: items.tolist() for user, items in split.truth.items()} == {
        "a": ["i2", "i4"], "c": ["i3"]}
    assert split.as_of == -math.inf and split.description == {"kind": "last_k", "k": 2}


def test_time_window_grows_until_it_has_enough_users():
    rows = [(f"u{n}", "old", 0, True) for n in range(10)]
    rows += [(f"u{n}", f"new{n}", 30 - 3 * n, True) for n in range(10)]  # one user every 3 days
    log = _log(rows)
    split = protocol.choose(log, 31 * DAY, holdout_days=2, min_users=4, k=1, max_share=0.5)
    assert split.description["kind"] == "time_window"
    assert split.description["days"] == 16 and split.description["users"] == 6
    assert split.as_of == 15 * DAY and len(split.truth) == 6


def test_choose_falls_back_to_last_k_when_no_window_has_enough_users():
    rows = [(f"u{n}", f"i{j}", 3 * n + j, True) for n in range(6) for j in range(3)]
    split = protocol.choose(_log(rows), 20 * DAY, holdout_days=1, min_users=5, k=1,
                            max_share=0.2)
    assert split.description["kind"] == "last_k" and split.description["users"] == 6
    validation = protocol.nested(split, holdout_days=1, min_users=5, k=1, max_share=0.2)
    assert validation.description["kind"] == "last_k" and len(validation.truth) == 6
    assert len(validation.train) == len(split.train) - 6


def test_the_validation_window_grows_anew_within_the_share_not_from_the_tests_length():
    # Busy days 0 and 21, then a thin tail: u0-u5 on days 49, 45, ..., 29. The holdout
    # grows to 16 days (4 users); 16 days before it would hold the busy day 21, 60 of the
    # 82 training rows, over max_share: the validation grows from 1 day again, reaches 2
    # users within the share, and falls back to each user's last row.
    rows = [(f"u{n}", f"old{n}", 0, True) for n in range(20)]
    rows += [(f"u{n}", f"mid{n}{j}", 21, True) for n in range(20) for j in range(3)]
    rows += [(f"u{n}", f"late{n}", 49 - 4 * n, True) for n in range(6)]
    test = protocol.choose(_log(rows), 50 * DAY, holdout_days=1, min_users=4, k=1,
                           max_share=0.5)
    assert test.description["kind"] == "time_window" and test.description["days"] == 16
    validation = protocol.nested(test, holdout_days=1, min_users=4, k=1, max_share=0.5)
    assert validation.description["kind"] == "last_k" and len(validation.truth) == 20
    assert validation.description["held_out_rows"] <= 0.5 * len(test.train)


def test_each_validation_split_asks_the_holdouts_question():
    # 12 users rate a{n} on day 0 and b{n} on day 1; users 0-5 also rate c{n} on day 20 + n
    # and d{n} on day 40. No window within 10% of the rows reaches 10 users, so the holdout
    # is each user's last rating (d{n} or b{n}).
    rows = [(f"u{n}", f"{item}{n}", day, True) for n in range(12) for item, day in
            (("a", 0), ("b", 1)) + ((("c", 20 + n), ("d", 40)) if n < 6 else ())]
    log = _log(rows)
    test = protocol.choose(log, 41 * DAY, holdout_days=1, min_users=10, k=1, max_share=0.1)
    assert test.description["kind"] == "last_k" and len(test.truth) == 12
    splits = protocol.validations(test, holdout_days=1, min_users=10, k=1, max_share=0.5,
                                  min_window_users=2)
    assert [split.description["kind"] for split in splits] == ["last_k", "time_window"]
    # The window is carved from the holdout's training rows (it ends after c5, not d5) and
    # grown from 1 day (c5 alone) to 2 days (c4 and c5).
    window = splits[1]
    assert window.description["days"] == 2 and window.description["min_users"] == 2
    assert {user: items.tolist() for user, items in window.truth.items()} == {
        "u4": ["c4"], "u5": ["c5"]}
    assert len(window.train) == len(test.train) - 2
    # Too few users in any window within the share: last_k alone.
    alone = protocol.validations(test, holdout_days=1, min_users=10, k=1, max_share=0.5,
                                 min_window_users=50)
    assert [split.description["kind"] for split in alone] == ["last_k"]
    # A time-window holdout keeps its single nested window.
    windowed = protocol.choose(log, 41 * DAY, holdout_days=1, min_users=2, k=1, max_share=0.1)
    assert windowed.description["kind"] == "time_window"
    assert len(protocol.validations(windowed, holdout_days=1, min_users=2, k=1, max_share=0.1,
                                    min_window_users=1)) == 1
    # A time-window holdout (d0-d5) whose nested window cannot reach 6 users asks the time
    # question alone: it validates on the thin window (c4 and c5), not on each user's last.
    windowed = protocol.choose(log, 41 * DAY, holdout_days=1, min_users=6, k=1, max_share=0.1)
    assert windowed.description["kind"] == "time_window" and len(windowed.truth) == 6
    splits = protocol.validations(windowed, holdout_days=1, min_users=6, k=1, max_share=0.1,
                                  min_window_users=2)
    assert [split.description["kind"] for split in splits] == ["time_window"]
    assert sorted(splits[0].truth) == ["u4", "u5"] and splits[0].description["min_users"] == 2
    # No thin window reaches its users either: each user's last, the only split there is.
    assert [split.description["kind"] for split in protocol.validations(
        windowed, holdout_days=1, min_users=6, k=1, max_share=0.1,
        min_window_users=50)] == ["last_k"]


def test_the_combined_metric_weighs_each_split_by_the_root_of_its_users():
    big = {"ndcg@10": 0.1, "recall@10": 0.3, "users": 900.0}
    thin = {"ndcg@10": 0.4, "recall@10": 0.9, "users": 100.0}
    both = evaluation.combined([big, thin])
    # weights 30 and 10: exp((30 log 0.1 + 10 log 0.4) / 40) = 0.1 * 4 ** 0.25
    assert both["ndcg@10"] == pytest.approx(0.1 * 4 ** 0.25)
    assert both["recall@10"] == 0.3 and both["users"] == 900.0
    assert (both["ndcg@10 0"], both["ndcg@10 1"]) == (0.1, 0.4)
    assert evaluation.combined([thin]) == thin


def test_a_thin_split_scoring_zero_does_not_zero_a_point_better_on_the_other():
    # Ciao's audit: no decay 0.0094 per user and 0 on a 63-user window, against a 14-day
    # half-life's 0.0029 and 0.0086.
    better = evaluation.combined([{"ndcg@10": 0.0094, "users": 654.0},
                                  {"ndcg@10": 0.0, "users": 63.0}])
    worse = evaluation.combined([{"ndcg@10": 0.0029, "users": 654.0},
                                 {"ndcg@10": 0.0086, "users": 63.0}])
    assert better["ndcg@10"] > worse["ndcg@10"] > 0
    # Below one user's worth (1 / 63) the window does not tell the two apart.
    share = math.sqrt(654) / (math.sqrt(654) + math.sqrt(63))
    assert better["ndcg@10"] / worse["ndcg@10"] == pytest.approx((0.0094 / 0.0029) ** share)


def test_bootstrap_intervals_hold_the_mean_and_pairing_narrows_them():
    rng = np.random.default_rng(0)
    difficulty = rng.random(2000)
    model, baseline = difficulty + 0.02, difficulty + rng.normal(0, 0.01, 2000)
    low, high = bootstrap.mean_intervals({"m": model}, seed=1)["m"]
    assert low < model.mean() < high and high - low > 0.02
    diff = bootstrap.paired_difference({"m": model}, {"m": baseline}, seed=1)["m"]
    assert diff["low"] < diff["mean"] < diff["high"]
    assert 0 < diff["low"] and diff["high"] - diff["low"] < 0.002
    assert bootstrap.mean_intervals({"m": model}, seed=1) == bootstrap.mean_intervals(
        {"m": model}, seed=1)


SPACE = {"a": [0, 1, 2, 3], "b": ["x", "y"], "c": [1.0, math.inf]}


def _score(point):
    """A score with its optimum at a=2, b=y, c=inf, reachable one axis at a time."""
    return {"ndcg@10": -abs(point["a"] - 2) + (point["b"] == "y") + (point["c"] == math.inf)}


def test_coordinate_descent_finds_the_optimum_and_scores_no_point_twice():
    start = search.timed(_score, {"a": 0, "b": "x", "c": 1.0})
    found = search.run(SPACE, start, ["a", "b", "c"], _score, 60.0, "ndcg@10")
    best = max(found, key=lambda r: r["ndcg@10"])
    assert (best["a"], best["b"], best["c"]) == (2, "y", math.inf)
    keys = [(r["a"], r["b"], r["c"]) for r in found]
    assert len(keys) == len(set(keys)) and (0, "x", 1.0) not in keys


def test_points_that_make_the_same_model_are_scored_once():
    space = {"user_half_life": [math.inf, 10.0], "user_decay_floor": [0.0, 0.1, 0.3]}
    scored = []

    def score(point):
        scored.append(dict(point))
        return {"ndcg@10": 0.0}

    start = search.timed(score, {"user_half_life": math.inf, "user_decay_floor": 0.0})
    search.run(space, start, ["user_decay_floor", "user_half_life"], score, 60.0, "ndcg@10")
    # Without a half-life every floor is floor 0: the start point; with one, each floor.
    assert scored == [{"user_half_life": math.inf, "user_decay_floor": 0.0},
                      {"user_half_life": 10.0, "user_decay_floor": 0.0}]
    assert search.same_model({"user_half_life": math.inf, "user_decay_floor": 0.3}) == {
        "user_half_life": math.inf, "user_decay_floor": 0.0}


def test_the_walk_carries_its_floor_through_points_without_a_half_life():
    space = {"user_decay_floor": [0.1, 0.3], "user_half_life": [math.inf, 10.0]}
    scored = []

    def score(point):
        scored.append(dict(point))
        return {"ndcg@10": float(math.isfinite(point["user_half_life"]))}

    start = search.timed(score, {"user_decay_floor": 0.1, "user_half_life": math.inf})
    found = search.run(space, start, list(space), score, 60.0, "ndcg@10")
    # The half-life is tried with the walk's floor, never with a floor the space does not hold.
    assert scored[1:] == [{"user_decay_floor": 0.1, "user_half_life": 10.0},
                          {"user_decay_floor": 0.3, "user_half_life": 10.0}]
    assert [r["user_decay_floor"] for r in found] == [0.1, 0.3]


def test_the_budget_stops_the_search_after_the_first_point():
    start = search.timed(_score, {"a": 0, "b": "x", "c": 1.0})
    assert len(search.run(SPACE, start, ["a", "b", "c"], _score, 0.0, "ndcg@10")) == 1


def test_the_budget_counts_the_tasks_cpu_time_not_its_waiting():
    def waiting_score(point):
        time.sleep(0.1)  # as if another process had the core
        return _score(point)

    start = search.timed(_score, {"a": 0, "b": "x", "c": 1.0})
    unbounded = search.run(SPACE, start, ["a", "b", "c"], _score, 60.0, "ndcg@10")
    waited = search.run(SPACE, start, ["a", "b", "c"], waiting_score, 0.25, "ndcg@10")
    assert [r["a"] for r in waited] == [r["a"] for r in unbounded] and len(waited) > 2


def test_the_budget_stops_a_walk_only_after_its_whole_passes():
    start = search.timed(_score, {"a": 0, "b": "x", "c": 1.0})
    one_pass = search.run(SPACE, start, ["a", "b", "c"], _score, 0.0, "ndcg@10", min_passes=1)
    # Every value of every axis tried once, then the budget (spent) stops the second pass.
    tried = {axis: {r[axis] for r in one_pass} for axis in SPACE}
    assert all(tried[axis] >= set(SPACE[axis]) - {start[axis]} for axis in SPACE)
    assert len(one_pass) == sum(len(values) - 1 for values in SPACE.values())
    unbounded = search.run(SPACE, start, ["a", "b", "c"], _score, 60.0, "ndcg@10")
    assert len(unbounded) > len(one_pass)


def test_a_whole_pass_is_the_minimum_only_on_ratings():
    assert search.min_passes("auto", items_expire=False) == 1
    assert search.min_passes("auto", items_expire=True) == 0
    assert search.min_passes(" 2 ", items_expire=True) == 2
    for text in ("-1", "one", "1.5", ""):
        with pytest.raises(ValueError, match="not a count of passes"):
            search.min_passes(text, items_expire=False)


def test_search_axes_and_half_lives():
    assert search.orders(SPACE, 2) == [["a", "b", "c"], ["b", "c", "a"]]
    assert search.half_lives("auto", 40.0) == [7.0, 14.0, 30.0, math.inf]
    assert search.half_lives("3, inf", 40.0) == [3.0, math.inf]
    assert search.parse_list("16,32", int) == [16, 32]
    assert search.weightings("raw, log") == ["raw", "log"]


def test_count_exponents_are_searched_only_where_items_do_not_expire():
    assert search.count_exponents("auto", False, 0.35) == [0.0, 0.2, 0.35, 0.5]
    assert search.count_exponents("auto", True, 0.35) == [0.35]
    assert search.count_exponents("0.1, 0.2", True, 0.35) == [0.1, 0.2]


def test_the_walk_starts_without_decay_only_where_items_do_not_expire():
    defaults = {"half_life_days": 14.0, "popularity_weight": 0.15, "l2": 100.0}
    space = {"half_life_days": [7.0, 14.0, math.inf], "popularity_weight": [0.0, 0.15]}
    assert search.start(defaults, space, True) == {"half_life_days": 14.0,
                                                   "popularity_weight": 0.15}
    assert search.start(defaults, space, False) == {"half_life_days": math.inf,
                                                    "popularity_weight": 0.15}
    # Half-lives listed without inf: the walk starts where the defaults are.
    listed = {**space, "half_life_days": [7.0, 14.0]}
    assert search.start(defaults, listed, False)["half_life_days"] == 14.0
    assert search.start(defaults, {"popularity_weight": [0.0]}, False) == {
        "popularity_weight": 0.15}


def test_every_servable_is_searched_only_where_items_do_not_expire():
    assert search.servables("auto", False) == ["event", "item_knn", "ease"]
    assert search.servables("auto", True) == ["event"]
    assert search.servables("item_knn", True) == ["item_knn"]
    with pytest.raises(ValueError, match="'svd': not a registered servable"):
        search.servables("svd", False)


def _point(model, value, *splits, components=None, users=(1000, 100)):
    """A search result: the combined NDCG@10 and, with splits, each one's and its users."""
    if not splits:
        return {"model": model, "ndcg@10": value, "users": users[0]}
    point = {"model": model, "ndcg@10": value,
             **{f"ndcg@10 {i}": v for i, v in enumerate(splits)},
             **{f"users {i}": n for i, n in enumerate(users)}}
    return point if components is None else {**point, "n_components": components}


def test_a_challenger_replaces_the_default_servable_only_when_better_on_every_split():
    event = [_point("event", 0.15, 0.14, 0.19, components=32),
             _point("event", 0.15, 0.15, 0.16, components=16)]
    # Better combined, but not by one user's hit (1/100) on the window: the
    # default's best (fewer components) stays.
    assert search.choose(event + [_point("ease", 0.17, 0.18, 0.165)], "ndcg@10") == event[1]
    # Better on both splits: of the challengers that are, the best wins.
    both = [_point("ease", 0.18, 0.18, 0.175), _point("item_knn", 0.17, 0.17, 0.175)]
    assert search.choose(event + both, "ndcg@10") == both[0]
    # A window where neither scores one user's worth cannot tell them apart.
    blind = [_point("event", 0.01, 0.01, 0.0), _point("ease", 0.03, 0.04, 0.005)]
    assert search.choose(blind, "ndcg@10") == blind[1]
    # One split: better by 1/500 or more; without the default, the best point.
    single = [_point("event", 0.100, users=(500,)), _point("ease", 0.1015, users=(500,))]
    assert search.choose(single, "ndcg@10") == single[0]
    single[1]["ndcg@10"] = 0.103
    assert search.choose(single, "ndcg@10") == single[1]
    assert search.choose([_point("item_knn", 0.09), single[1]], "ndcg@10", "event") == single[1]


@pytest.mark.parametrize("kind", ["time10", "last5"])
def test_the_audit_split_agrees_with_the_protocol(small_world, kind):
    from service.training import audit

    log, _ = small_world
    if kind == "last5":
        ours = protocol.last_k(log, 5)
        train, truth = audit.split_log(log, "last5")
    else:
        start = float(np.quantile(log.timestamp, 0.9))
        ours = protocol.time_window(log, start)
        train, truth = audit.split_log(log, "time10", start=start)
    assert len(ours.train) == int(train.sum())
    assert {user: set(items.tolist()) for user, items in ours.truth.items()} == truth
