"""How new events fare: NDCG@10 and slot shares on the sample world's next days.

The models are fitted on the sample world as of day D. Each of the next days
``t`` is then replayed: the live catalogue holds every event listed by day
``D + t`` (``service.catalogue``), each user who bought something new that
day is recommended 10 events as of the day's start, and the purchases of
that day are the truth. Two slices of events matter: those listed in the 2
days before the fit (the model knows them, with few interactions) and those
listed after it (only the metadata map can score them). Figures in
docs/training.md::

    python -m service.training.freshness --as-of 2026-11-27
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable

import numpy as np

from service.catalogue import overlay
from service.catalogue_view import build_view, recommend
from service.recommender import EventRecommender, PopularityRecommender
from service.training.data import Catalogue
from service.training.sample_data import generate

_DAY = 86_400.0
K = 10
_DISCOUNTS = 1.0 / np.log2(np.arange(2, K + 2))


def _created_day(item_ids: np.ndarray) -> np.ndarray:
    """Return each sample event's listing day number, from its id ``ev-<yyyymmdd>-<k>``."""
    dates = np.array([f"{i[3:7]}-{i[7:9]}-{i[9:11]}" for i in item_ids.tolist()],
                     dtype="datetime64[D]")
    return dates.astype(np.int64)


def _subset(catalogue: Catalogue, keep: np.ndarray) -> Catalogue:
    return Catalogue(*(None if value is None else value[keep] for value in (
        catalogue.item_id, catalogue.title, catalogue.category, catalogue.starts_at,
        catalogue.city, catalogue.performer, catalogue.venue, catalogue.available)))


def _favourite_lister(model: PopularityRecommender, log, catalogue: Catalogue
                      ) -> Callable[[str, float], np.ndarray]:
    """The most popular upcoming events in the user's favourite category and city, then category."""
    at = np.searchsorted(catalogue.item_id, log.item_vocab[log.item_codes])
    category, city = catalogue.category[at], catalogue.city[at]
    favourite = {}
    for values in (category, city):
        names, codes = np.unique(values, return_inverse=True)
        counts = np.zeros((log.user_vocab.size, names.size))
        np.add.at(counts, (log.user_codes, codes.ravel()), log.weight)
        best = names[np.argmax(counts, axis=1)]
        for user, name in zip(log.user_vocab.tolist(), best.tolist()):
            favourite.setdefault(user, []).append(name)
    popularity = model.item_popularity_ / max(float(model.item_popularity_.max()), 1e-12)

    def lister(user: str, as_of: float) -> np.ndarray:
        first = model._first_upcoming(as_of)
        cat, place = favourite.get(user, ("", ""))
        in_category = model.item_categories_[first:] == cat
        scores = popularity[first:] + in_category + 2.0 * (
            in_category & (model.item_cities_[first:] == place))
        return model._finish(scores, first, model._user_row(user), K, "popular").item_ids

    return lister


def _ndcg(listed: np.ndarray, relevant: np.ndarray) -> float:
    hits = np.isin(listed[:K], relevant)
    return float(_DISCOUNTS[:hits.size][hits].sum() / _DISCOUNTS[:min(relevant.size, K)].sum())


def measure(as_of: str, days: int = 7, seed: int = 0, slot_users: int = 2000,
            params: dict | None = None, **world: int) -> dict[str, dict[str, float]]:
    """Return per method: NDCG@10 overall and on both slices, and slot vs purchase shares."""
    log, catalogue = generate(as_of, seed, **world)
    later_log, later = generate(dt.date.fromisoformat(as_of) + dt.timedelta(days=days), seed,
                                **world)
    fit_day = int(_created_day(np.array([f"ev-{as_of.replace('-', '')}-0"]))[0])
    listed_on = _created_day(later.item_id)
    recent = later.item_id[(listed_on >= fit_day - 2) & (listed_on < fit_day)]
    fresh = later.item_id[listed_on >= fit_day]
    params = {"n_components": 32, "random_state": seed, **(params or {})}
    model = EventRecommender(**params).fit(log, items=catalogue)
    # Today's model: the collaborative model alone, as on main before metadata scoring
    # (its column scaling, prior and prior weight, whatever the defaults are now).
    today = EventRecommender(**{**params, "metadata_shrinkage": 0, "content_dims": 0,
                                "segment_dims": 0,
                                "prior_per_day": False, "prior_half_life_days": 14.0,
                                "count_exponent": 0.25, "popularity_weight": 0.1,
                                }).fit(log, items=catalogue)
    popular = PopularityRecommender().fit(log, items=catalogue)
    views = {t: overlay(model, _subset(later, listed_on <= fit_day + t))[0] for t in range(days)}
    today_view = build_view(today)
    methods = {
        "popularity": lambda u, t: popular.recommend(u, K, (fit_day + t) * _DAY).item_ids,
        "favourite category and city": _favourite_lister(popular, log, catalogue),
        "today's model": lambda u, t: recommend(today, today_view, u, K,
                                                (fit_day + t) * _DAY).item_ids,
        "metadata model": lambda u, t: recommend(model, views[t], u, K,
                                                 (fit_day + t) * _DAY).item_ids,
    }
    fav = methods["favourite category and city"]
    methods["favourite category and city"] = lambda u, t: fav(u, (fit_day + t) * _DAY)

    bought = log.weight >= 5.0
    before = set(zip(log.user_vocab[log.user_codes[bought]].tolist(),
                     log.item_vocab[log.item_codes[bought]].tolist()))
    future = (later_log.timestamp >= fit_day * _DAY) & (later_log.weight >= 5.0)
    rows = later_log.subset(future)
    users, items = rows.user_vocab[rows.user_codes], rows.item_vocab[rows.item_codes]
    day = (rows.timestamp // _DAY).astype(np.int64) - fit_day
    known = np.isin(users, model.user_ids_)
    new_pair = np.array([(u, i) not in before for u, i in zip(users.tolist(), items.tolist())])
    keep = known & new_pair
    rng = np.random.default_rng(seed)
    active = np.unique(users[keep])
    slot_sample = rng.choice(active, size=min(slot_users, active.size), replace=False)
    out = {}
    for name, lister in methods.items():
        scores = {"overall": [], "recent": [], "after": []}
        for t in range(days):
            rows_of_day = np.flatnonzero(keep & (day == t))
            rows_of_day = rows_of_day[np.argsort(users[rows_of_day], kind="stable")]
            bounds = np.flatnonzero(users[rows_of_day][1:] != users[rows_of_day][:-1]) + 1
            for group in np.split(rows_of_day, bounds):
                if not group.size:
                    continue
                user, relevant = str(users[group[0]]), items[group]
                listed = np.asarray(lister(user, t))
                scores["overall"].append(_ndcg(listed, relevant))
                for label, slice_ids in (("recent", recent), ("after", fresh)):
                    mine = relevant[np.isin(relevant, slice_ids)]
                    if mine.size:
                        scores[label].append(_ndcg(listed, mine))
        first_day = np.concatenate([np.asarray(lister(u, 0)) for u in slot_sample.tolist()])
        last_day = np.concatenate([np.asarray(lister(u, days - 1)) for u in slot_sample.tolist()])
        out[name] = {
            "ndcg@10": float(np.mean(scores["overall"])),
            "ndcg@10 listed 2 days before": float(np.mean(scores["recent"])),
            "ndcg@10 listed after": float(np.mean(scores["after"])),
            "slots listed 2 days before (day 1)": float(np.isin(first_day, recent).mean()),
            f"slots listed after (day {days})": float(np.isin(last_day, fresh).mean()),
        }
    week = items[keep]
    last = items[keep & (day == days - 1)]
    out["purchases"] = {
        "slots listed 2 days before (day 1)": float(np.isin(week, recent).mean()),
        f"slots listed after (day {days})": float(np.isin(last, fresh).mean()),
        "(user, day) pairs": float(np.unique(np.char.add(users[keep], day[keep].astype(str))).size),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the figures as a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--as-of", default="2026-11-27", help="the fit day, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=7, help="days replayed after the fit")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--interactions", type=int, default=500_000)
    args = parser.parse_args(argv)
    out = measure(args.as_of, args.days, users=args.users, events=args.events,
                  interactions=args.interactions)
    columns = list(next(iter(out.values())))
    print("| method | " + " | ".join(columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for name, figures in out.items():
        print(f"| {name} | " + " | ".join(f"{figures.get(c, float('nan')):.4f}"
                                          for c in columns) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
