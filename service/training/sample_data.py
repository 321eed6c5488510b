"""Generate a deterministic sample world that behaves like an events business.

Users belong to taste clusters (classical, rock, jazz, ...) with a secondary
taste and a home city. Events have a category, a city, a title and a start
time, a performer (famous ones draw more interest) and a venue. Users are fans
of two performers of their taste and follow them to any city; an event of a
famous performer has an on-sale spike in its first days, so new events take a
real share of purchases and their metadata predicts it. Every day new events
are listed; an event is listed from its creation day until it starts, and
interactions (ticket purchases, weight 5.0, and page views, weight 1.0) only
happen while it is listed. Event popularity is heavy-tailed (Pareto, Zipf-like)
and user activity is log-normal, so there are cold users with a handful of
interactions and a long tail of events.

The world sits on an absolute day grid: the events created on day ``d`` (ids
``ev-<yyyymmdd>-<k>``) and the interactions of day ``d`` are drawn from a
generator seeded with ``(seed, d)``. Moving ``as_of`` one day forward therefore
keeps almost every event and interaction and adds one new day of each.

Command line (console script ``lineup-sample-data``)::

    lineup-sample-data --out DIR [--as-of YYYY-MM-DD] [--seed N]
                       [--users N --events N --interactions N]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from pathlib import Path

import numpy as np

from service.training.data import Catalogue, Interactions

DEFAULT_USERS = 20_000
DEFAULT_EVENTS = 5_000
DEFAULT_INTERACTIONS = 500_000
HISTORY_DAYS = 56
PURCHASE_WEIGHT = 5.0
VIEW_WEIGHT = 1.0

CATEGORIES = np.array(["classical", "rock", "jazz", "football", "theatre", "comedy", "pop",
                       "electronic"])
CATEGORY_SHARE = np.array([0.10, 0.18, 0.08, 0.16, 0.12, 0.10, 0.16, 0.10])
CITIES = np.array(["London", "Manchester", "Berlin", "Paris", "Madrid", "Amsterdam"])
CITY_SHARE = np.array([0.30, 0.12, 0.18, 0.18, 0.12, 0.10])
#: Events are listed between these many days before they start.
MIN_LISTING_DAYS, MAX_LISTING_DAYS = 5, 56
#: Performers per category, fame Zipf-like by rank; venues per city.
PERFORMERS_PER_CATEGORY, VENUES_PER_CITY = 30, 5
VENUE_KINDS = ("Arena", "Concert Hall", "Theatre", "Club", "Stadium")
#: Share of visits a user spends on their favourite performers' events, and their
#: purchase rate; interest in a famous performer's event in its first days.
FAN_VISITS, FAN_PURCHASE, SPIKE_DAYS = 0.2, 0.45, 2.0
#: Evening start hours per category (football kicks off earlier).
START_HOURS = np.array([19, 20, 20, 15, 19, 21, 20, 22])
_TITLE_WORDS = {
    "classical": (["Beethoven", "Mahler", "Bach", "Brahms", "Mozart", "Sibelius"],
                  ["Symphony Night", "Piano Recital", "Requiem", "Chamber Evening"]),
    "rock": (["The Velvet Echoes", "Iron Harbour", "Static Lions", "Glass Wolves"],
             ["Live", "Arena Tour", "Unplugged", "Reunion Show"]),
    "jazz": (["Blue Note Quartet", "Miles Apart", "The Late Set", "Velvet Brass"],
             ["Club Night", "Big Band Evening", "Trio Session", "Standards"]),
    "football": (["City", "United", "Rovers", "Athletic", "Wanderers", "Albion"],
                 ["Derby", "Cup Tie", "League Match", "Friendly"]),
    "theatre": (["Hamlet", "The Seagull", "Cabaret", "Les Mis", "Macbeth", "Godot"],
                ["Premiere", "Matinee", "Evening Performance", "Revival"]),
    "comedy": (["Stand-up Showcase", "Improv Riot", "Late Laughs", "Open Mic"],
               ["Special", "Tour", "Gala", "Night"]),
    "pop": (["Nova", "Skyline", "Lumen", "Echo Park", "Mara", "Juniper"],
            ["World Tour", "Live", "Album Launch", "Summer Show"]),
    "electronic": (["Pulse", "Subsonic", "Warehouse", "Neon Grid", "Low End"],
                   ["All Night Long", "Rave", "Open Air", "Club Night"]),
}

_DAY = 86_400.0
_EPOCH = dt.date(1970, 1, 1)


def _day_number(date: dt.date) -> int:
    return (date - _EPOCH).days


def _today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


#: A performer's fame by rank within its category (Zipf, exponent 1).
_FAME = 1.0 / np.arange(1, PERFORMERS_PER_CATEGORY + 1)


def _performer_names() -> np.ndarray:
    """Name every performer: the category's title words, numbered past the first round."""
    names = []
    for category in CATEGORIES.tolist():
        words = _TITLE_WORDS[category][0]
        names += [words[j % len(words)] + (f" {j // len(words) + 1}" if j >= len(words) else "")
                  for j in range(PERFORMERS_PER_CATEGORY)]
    return np.array(names)


def _events_of_day(seed: int, day: int, per_day: float) -> dict[str, np.ndarray]:
    """Draw the events created on absolute day ``day`` (depends only on seed, day, rate)."""
    rng = np.random.default_rng([seed, day, 1])
    count = int(rng.poisson(per_day))
    category = rng.choice(len(CATEGORIES), size=count, p=CATEGORY_SHARE)
    city = rng.choice(len(CITIES), size=count, p=CITY_SHARE)
    listing = rng.integers(MIN_LISTING_DAYS, MAX_LISTING_DAYS + 1, size=count)
    starts_at = (day + listing) * _DAY + START_HOURS[category] * 3600.0
    popularity = np.minimum(rng.pareto(1.3, size=count) + 0.05, 300.0)
    first = rng.integers(0, 6, size=count)
    second = rng.integers(0, 4, size=count)
    # Drawn after the older columns, so those keep their values.
    rank = rng.choice(PERFORMERS_PER_CATEGORY, size=count, p=_FAME / _FAME.sum())
    performer = category * PERFORMERS_PER_CATEGORY + rank
    venue = city * VENUES_PER_CITY + rng.integers(0, VENUES_PER_CITY, size=count)
    popularity = popularity * _FAME[rank] * PERFORMERS_PER_CATEGORY / _FAME.sum()
    return {"day": np.full(count, day), "k": np.arange(count), "category": category,
            "city": city, "starts_at": starts_at, "popularity": popularity,
            "first": first, "second": second, "performer": performer, "venue": venue}


def _users(seed: int, users: int) -> dict[str, np.ndarray]:
    """Draw every user's tastes, home city and activity level (depends on seed only)."""
    rng = np.random.default_rng([seed, 0, 0])
    primary = rng.choice(len(CATEGORIES), size=users, p=CATEGORY_SHARE)
    secondary = (primary + rng.integers(1, len(CATEGORIES), size=users)) % len(CATEGORIES)
    city = rng.choice(len(CITIES), size=users, p=CITY_SHARE)
    activity = rng.lognormal(0.0, 1.1, size=users)
    activity[rng.random(users) < 0.25] *= 0.08  # occasional visitors: cold users
    # Two favourite performers of the primary taste, famous ones more often.
    fame = _FAME / _FAME.sum()
    favourites = (primary[:, None] * PERFORMERS_PER_CATEGORY
                  + rng.choice(PERFORMERS_PER_CATEGORY, size=(users, 2), p=fame))
    return {"primary": primary, "secondary": secondary, "city": city,
            "activity_cdf": np.cumsum(activity) / activity.sum(), "favourites": favourites}


def _interactions_of_day(seed: int, day: int, per_day: float, people: dict, listed: dict
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw the interactions of absolute day ``day`` over the events listed that day."""
    rng = np.random.default_rng([seed, day, 2])
    count = int(rng.poisson(per_day))
    user = np.searchsorted(people["activity_cdf"], rng.random(count), side="right")
    user = np.minimum(user, people["activity_cdf"].size - 1)
    roll = rng.random(count)
    n_cat, n_city = len(CATEGORIES), len(CITIES)
    # Taste of this visit: the primary taste, the secondary one, or anything (n_cat).
    taste = np.where(roll < 0.7, people["primary"][user],
                     np.where(roll < 0.9, people["secondary"][user], n_cat))
    city = np.where(rng.random(count) < 0.85, people["city"][user], n_city)
    # Interest grows as the start approaches.
    days_left = (listed["starts_at"] - day * _DAY) / _DAY
    weight = listed["popularity"] * (1.0 + 2.0 * np.exp(-days_left / 7.0))
    # On-sale spike: a famous performer's event draws a crowd in its first days.
    famous = _FAME[listed["performer"] % PERFORMERS_PER_CATEGORY] >= _FAME[2]
    weight = weight * np.where(famous, 1.0 + 2.0 * np.exp(-(day - listed["day"]) / SPIKE_DAYS),
                               1.0)
    cat_match = np.vstack([np.where(listed["category"] == c, 1.0, 0.02) for c in range(n_cat)]
                          + [np.ones(listed["category"].size)])
    city_match = np.vstack([np.where(listed["city"] == c, 1.0, 0.05) for c in range(n_city)]
                           + [np.ones(listed["city"].size)])
    group = taste * (n_city + 1) + city
    item = np.empty(count, dtype=np.int64)
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        cdf = np.cumsum(weight * cat_match[g // (n_city + 1)] * city_match[g % (n_city + 1)])
        pick = np.searchsorted(cdf, rng.random(rows.size) * cdf[-1], side="right")
        item[rows] = np.minimum(pick, cdf.size - 1)
    loyal = taste == people["primary"][user]
    purchase_roll = rng.random(count)
    minute = rng.integers(0, 24 * 60, size=count)
    fan = _fan_visits(rng, user, people, listed, weight, item)
    purchase = purchase_roll < np.where(fan, FAN_PURCHASE, np.where(loyal, 0.3, 0.15))
    timestamp = day * _DAY + minute * 60.0
    timestamp = np.minimum(timestamp, listed["starts_at"][item] - 60.0)
    return user, item, timestamp, np.where(purchase, PURCHASE_WEIGHT, VIEW_WEIGHT)


def _fan_visits(rng: np.random.Generator, user: np.ndarray, people: dict, listed: dict,
                weight: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Send some visits to a favourite performer's listed events (in place); return which."""
    fan = rng.random(user.size) < FAN_VISITS
    performer = people["favourites"][user, rng.integers(0, 2, size=user.size)]
    roll = rng.random(user.size)
    for p in np.unique(performer[fan]):
        events = np.flatnonzero(listed["performer"] == p)
        rows = np.flatnonzero(fan & (performer == p))
        if not events.size:
            fan[rows] = False  # nothing of theirs listed: an ordinary visit
            continue
        cdf = np.cumsum(weight[events])
        item[rows] = events[np.minimum(np.searchsorted(cdf, roll[rows] * cdf[-1], "right"),
                                       events.size - 1)]
    return fan


def generate(as_of: dt.date | str | None = None, seed: int = 0, users: int = DEFAULT_USERS,
             events: int = DEFAULT_EVENTS, interactions: int = DEFAULT_INTERACTIONS,
             history_days: int = HISTORY_DAYS) -> tuple[Interactions, Catalogue]:
    """Return the sample world as of midnight UTC starting ``as_of`` (default today).

    ``events`` is the number of events listed at ``as_of``; the catalogue also
    holds the events listed at any time in the ``history_days`` of history.
    """
    if as_of is None:
        as_of = _today()
    elif isinstance(as_of, str):
        as_of = dt.date.fromisoformat(as_of)
    end = _day_number(as_of)
    first = end - history_days
    mean_listing = (MIN_LISTING_DAYS + MAX_LISTING_DAYS) / 2.0
    per_day_events = events / mean_listing
    parts = [_events_of_day(seed, d, per_day_events)
             for d in range(first - MAX_LISTING_DAYS, end)]
    world = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    keep = world["starts_at"] > first * _DAY
    world = {key: value[keep] for key, value in world.items()}

    people = _users(seed, users)
    per_day = interactions / history_days
    chunks = []
    for d in range(first, end):
        listed_ix = np.flatnonzero((world["day"] <= d) & (world["starts_at"] > (d + 1) * _DAY))
        listed = {key: world[key][listed_ix]
                  for key in ("category", "city", "starts_at", "popularity", "performer", "day")}
        user, item, timestamp, weight = _interactions_of_day(seed, d, per_day, people, listed)
        chunks.append((user, listed_ix[item], timestamp, weight))
    user, item, timestamp, weight = (np.concatenate(c) for c in zip(*chunks))
    order = np.argsort(timestamp, kind="stable")

    dates = (world["day"].astype("datetime64[D]").astype(str))
    item_ids = np.array([f"ev-{date.replace('-', '')}-{k:04d}"
                         for date, k in zip(dates.tolist(), world["k"].tolist())])
    performers = _performer_names()[world["performer"]]
    venues = np.char.add(np.char.add(CITIES[world["venue"] // VENUES_PER_CITY], " "),
                         np.array(VENUE_KINDS)[world["venue"] % VENUES_PER_CITY])
    titles = np.array([
        f"{name}: {_TITLE_WORDS[c][1][b % len(_TITLE_WORDS[c][1])]} ({CITIES[m]})"
        for name, c, b, m in zip(performers.tolist(), CATEGORIES[world["category"]].tolist(),
                                 world["second"].tolist(), world["city"].tolist())])
    user_ids = np.array([f"u-{i:06d}" for i in range(users)])
    # Ids are zero-padded, so index order is sorted order and the codes need no remap.
    catalogue = Catalogue(item_ids, titles, CATEGORIES[world["category"]],
                          world["starts_at"].astype(np.float64), CITIES[world["city"]],
                          performer=performers, venue=venues)
    log = Interactions(user[order].astype(np.int32), user_ids, item[order].astype(np.int32),
                       item_ids, timestamp[order], weight[order].astype(np.float32),
                       weight[order] >= PURCHASE_WEIGHT)
    return log, catalogue


def _iso(epoch: np.ndarray) -> np.ndarray:
    text = np.datetime_as_string(epoch.astype("datetime64[s]"), unit="s")
    return np.char.add(text, "Z")


def write_sample(directory: str | Path, as_of: dt.date | str | None = None, seed: int = 0,
                 users: int = DEFAULT_USERS, events: int = DEFAULT_EVENTS,
                 interactions: int = DEFAULT_INTERACTIONS) -> tuple[Path, Path]:
    """Write ``interactions.csv`` and ``items.csv`` into ``directory``; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    log, catalogue = generate(as_of, seed, users, events, interactions)
    interactions_path = directory / "interactions.csv"
    items_path = directory / "items.csv"
    weight = np.where(log.seen, "5.0", "1.0")
    kind = np.where(log.seen, "purchase", "view")
    lines = map(",".join, zip(log.user_vocab[log.user_codes].tolist(),
                              log.item_vocab[log.item_codes].tolist(),
                              _iso(log.timestamp).tolist(), weight.tolist(), kind.tolist()))
    with open(interactions_path, "w", newline="") as handle:
        handle.write("user_id,item_id,timestamp,weight,interaction\n")
        handle.write("\n".join(lines))
        handle.write("\n")
    with open(items_path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["item_id", "title", "category", "city", "starts_at", "performer",
                         "venue"])
        writer.writerows(zip(catalogue.item_id.tolist(), catalogue.title.tolist(),
                             catalogue.category.tolist(), catalogue.city.tolist(),
                             _iso(catalogue.starts_at).tolist(), catalogue.performer.tolist(),
                             catalogue.venue.tolist()))
    return interactions_path, items_path


def main(argv: list[str] | None = None) -> int:
    """Write a sample world to ``--out`` (the ``lineup-sample-data`` command)."""
    parser = argparse.ArgumentParser(prog="lineup-sample-data", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory for interactions.csv, items.csv")
    parser.add_argument("--as-of", default=None, help="the world's date, YYYY-MM-DD (today UTC)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--users", type=int, default=DEFAULT_USERS, help="number of users")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS,
                        help="number of events listed as of the date")
    parser.add_argument("--interactions", type=int, default=DEFAULT_INTERACTIONS,
                        help="number of interactions over the history")
    args = parser.parse_args(argv)
    try:
        as_of = dt.date.fromisoformat(args.as_of) if args.as_of else None
    except ValueError:
        parser.error(f"--as-of {args.as_of!r} is not a YYYY-MM-DD date")
    paths = write_sample(args.out, as_of, args.seed, args.users, args.events, args.interactions)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
