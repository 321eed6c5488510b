"""The sample world: deterministic, moving with as_of, shaped like an events business."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np

from service.training import sample_data
from service.training.sample_data import generate, main

SMALL = {"users": 1500, "events": 300, "interactions": 30_000}
DAY = 86_400.0


def _rows(log):
    return set(zip(log.user_id.tolist(), log.item_id.tolist(), log.timestamp.tolist(),
                   log.weight.tolist()))


def test_same_seed_same_world(small_world):
    log, catalogue = generate("2026-11-27", 0, **SMALL)
    assert np.array_equal(log.user_id, small_world[0].user_id)
    assert np.array_equal(log.timestamp, small_world[0].timestamp)
    assert np.array_equal(catalogue.title, small_world[1].title)
    other, _ = generate("2026-11-27", 1, **SMALL)
    assert not np.array_equal(other.item_id[:100], log.item_id[:100])


def test_next_day_keeps_most_and_adds_a_day(small_world):
    log, catalogue = small_world
    later_log, later_catalogue = generate("2026-11-28", 0, **SMALL)
    kept = np.isin(catalogue.item_id, later_catalogue.item_id).mean()
    assert kept > 0.9
    new = later_catalogue.item_id[~np.isin(later_catalogue.item_id, catalogue.item_id)]
    assert new.size and all(i.startswith("ev-20261127-") for i in new.tolist())
    # Days both windows cover hold the very same interactions.
    start = dt.datetime(2026, 10, 3, tzinfo=dt.timezone.utc).timestamp()
    end = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc).timestamp()
    shared = _rows(log.subset((log.timestamp >= start) & (log.timestamp < end)))
    assert shared == _rows(later_log.subset(later_log.timestamp < end))
    assert (later_log.timestamp >= end).sum() > 0


def test_interactions_only_while_listed(small_world):
    log, catalogue = small_world
    at = np.searchsorted(catalogue.item_id, log.item_id)
    assert np.array_equal(catalogue.item_id[at], log.item_id)
    assert (log.timestamp < catalogue.starts_at[at]).all()
    created = np.array([dt.datetime.strptime(i[3:11], "%Y%m%d").replace(
        tzinfo=dt.timezone.utc).timestamp() for i in log.item_id.tolist()])
    assert (log.timestamp >= created).all()
    as_of = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc).timestamp()
    assert log.timestamp.max() < as_of <= log.timestamp.min() + 56 * DAY + 1


def test_fans_follow_their_performers(small_world):
    log, catalogue = small_world
    assert np.unique(catalogue.performer).size > 100 and np.unique(catalogue.venue).size == 30
    performer = catalogue.performer[np.searchsorted(catalogue.item_id, log.item_id)]
    # User codes are user indices (the ids are zero-padded).
    favourites = sample_data._performer_names()[
        sample_data._users(0, SMALL["users"])["favourites"][log.user_codes]]
    on_favourites = (performer[:, None] == favourites).any(axis=1).mean()
    assert on_favourites > 0.24  # 0.29 here; 0.18 when users follow no performer


def test_shaped_like_an_events_business(small_world):
    log, catalogue = small_world
    assert set(log.weight.tolist()) == {1.0, 5.0}
    assert 0.1 < (log.weight == 5.0).mean() < 0.4
    per_user = np.bincount(log.user_codes)
    assert (per_user[per_user > 0] <= 3).mean() > 0.15  # cold users
    per_item = np.sort(np.bincount(log.item_codes))[::-1]
    assert per_item[:len(per_item) // 10].sum() > 0.4 * per_item.sum()  # popular head
    assert (per_item[per_item > 0] <= 3).sum() > 0.1 * per_item.size  # long tail
    # Taste clusters: an active user's interactions concentrate on one category.
    category = catalogue.category[np.searchsorted(catalogue.item_id, log.item_id)]
    shares = []
    for user in np.flatnonzero(per_user >= 20)[:200]:
        _, counts = np.unique(category[log.user_codes == user], return_counts=True)
        shares.append(counts.max() / counts.sum())
    assert np.median(shares) > 0.5
    listed = (catalogue.starts_at > dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
              .timestamp()).sum()
    assert 200 < listed < 400


def test_default_size_is_fast_and_near_target():
    started = time.perf_counter()
    log, catalogue = generate("2026-11-27", 0)
    assert time.perf_counter() - started < 10
    assert 480_000 < len(log) < 520_000
    assert np.unique(log.user_codes).size > 15_000
    as_of = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc).timestamp()
    assert 4_500 < (catalogue.starts_at > as_of).sum() < 5_500


def test_cli_writes_both_files(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--as-of", "2026-11-27", "--seed", "2",
                 "--users", "100", "--events", "40", "--interactions", "1000"]) == 0
    interactions, items = (tmp_path / "interactions.csv", tmp_path / "items.csv")
    assert capsys.readouterr().out.split() == [str(interactions), str(items)]
    assert interactions.read_text().startswith("user_id,item_id,timestamp,weight,interaction\n")
    assert items.read_text().startswith("item_id,title,category,city,starts_at,performer,venue\n")
    first = interactions.read_text().splitlines()[1].split(",")
    assert first[2].endswith("Z") and dt.datetime.fromisoformat(first[2])
    assert sample_data.CATEGORIES.size >= 6
