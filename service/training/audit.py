"""Audit the flow from outside: its served model against baselines on splits it never saw.

An independent protocol, sharing nothing with the flow's evaluation but the
CSV reader: it splits a data set itself (each user's last 5 seen rows, or the
last 10% of time), trains the flow as shipped on the training part through
:func:`service.training.runner.train`, and scores the stored ``model`` with
its own NDCG@10 against popularity and a truncated SVD, with paired
bootstrap intervals over users. ::

    python -m service.training.audit --interactions ratings.csv [--items items.csv]
        [--split last5|time10] [--seed 0] [--home DIR] [flow options, e.g. --search_seconds 30]

The tests use :func:`ndcg_at_10`, :func:`split_log` and :func:`interval` to
check that the flow's stored metric agrees with this protocol.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from service.training.data import Interactions, load_interactions, load_items

SPLITS = ("last5", "time10")


def split_log(log: Interactions, kind: str, *, start: float | None = None
              ) -> tuple[np.ndarray, dict[str, set[str]]]:
    """Return (training row mask, {user: relevant items}) for a split.

    ``last5``: each user with more than 5 seen rows holds out their last 5
    seen rows and what follows them. ``time10``: rows at or after the 90th
    percentile of time (or ``start``). Relevant items are the held-out seen
    items the user had not seen in training; users without training rows are
    dropped.
    """
    users, items = log.user_id, log.item_id
    if kind == "time10" or start is not None:
        cut = np.quantile(log.timestamp, 0.9) if start is None else start
        train = log.timestamp < cut
    elif kind == "last5":
        train = np.ones(len(log), dtype=bool)
        by_user: dict[str, list[int]] = {}
        for row in np.lexsort((log.timestamp,)):
            by_user.setdefault(str(users[row]), []).append(int(row))
        for rows in by_user.values():
            seen_rows = [row for row in rows if log.seen[row]]
            if len(seen_rows) > 5:
                first = rows.index(seen_rows[-5])
                train[rows[first:]] = False
    else:
        raise ValueError(f"split {kind!r} is not one of {', '.join(SPLITS)}")
    had: dict[str, set[str]] = {}
    for row in np.flatnonzero(train):
        had.setdefault(str(users[row]), set()).update([str(items[row])] if log.seen[row] else [])
    truth: dict[str, set[str]] = {}
    for row in np.flatnonzero(~train & log.seen):
        user, item = str(users[row]), str(items[row])
        if user in had and item not in had[user]:
            truth.setdefault(user, set()).add(item)
    return train, truth


def ndcg_at_10(ranked: list[str], relevant: set[str]) -> float:
    """Return NDCG@10 of one ranked list with binary relevance."""
    dcg = sum(1.0 / np.log2(rank + 2) for rank, item in enumerate(ranked[:10])
              if item in relevant)
    ideal = sum(1.0 / np.log2(rank + 2) for rank in range(min(len(relevant), 10)))
    return dcg / ideal if ideal else 0.0


def interval(values: np.ndarray, seed: int = 1, resamples: int = 2000) -> tuple[float, float]:
    """Return the 95% bootstrap interval of a mean over users."""
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=float)
    means = [values[rng.integers(0, values.size, values.size)].mean()
             for _ in range(resamples)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _matrix(log: Interactions, train: np.ndarray):
    """Return (binary user x item matrix of seen training rows, user index, item ids)."""
    from scipy import sparse

    users, items = log.user_id[train], log.item_id[train]
    user_ids, rows = np.unique(users, return_inverse=True)
    item_ids, cols = np.unique(items, return_inverse=True)
    matrix = sparse.csr_matrix((np.ones(rows.size), (rows, cols)),
                               shape=(user_ids.size, item_ids.size))
    matrix.data[:] = 1.0
    return matrix, {u: i for i, u in enumerate(user_ids.tolist())}, item_ids


def baselines(log: Interactions, train: np.ndarray, users: list[str], upcoming=None,
              ranks: tuple[int, ...] = (16, 32, 64, 128)) -> dict[str, list[list[str]]]:
    """Return top-10 lists of popularity and a truncated SVD of each rank.

    Seen items are excluded, and so are items outside ``upcoming`` (a set of
    ids; None: every item).
    """
    from sklearn.decomposition import TruncatedSVD

    matrix, index, item_ids = _matrix(log, train)
    popularity = np.asarray(matrix.sum(axis=0)).ravel()
    lists: dict[str, list[list[str]]] = {"popularity": []}
    rows = [index[user] for user in users]
    had = matrix[rows].toarray() > 0
    if upcoming is not None:
        had |= ~np.isin(item_ids, list(upcoming))[None, :]
    scores = np.where(had, -np.inf, popularity)
    lists["popularity"] = [item_ids[np.argsort(-s, kind="stable")[:10]].tolist() for s in scores]
    for rank in ranks:
        svd = TruncatedSVD(n_components=min(rank, min(matrix.shape) - 1), random_state=0)
        factors = svd.fit_transform(matrix)
        scores = np.where(had, -np.inf, factors[rows] @ svd.components_)
        lists[f"svd-{rank}"] = [item_ids[np.argsort(-s, kind="stable")[:10]].tolist()
                                for s in scores]
    return lists


def _write_train(log: Interactions, train: np.ndarray, path: Path) -> Path:
    """Write the training rows as an interactions CSV the flow reads."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id", "timestamp", "weight", "interaction"])
        for row in np.flatnonzero(train):
            writer.writerow([log.user_vocab[log.user_codes[row]],
                             log.item_vocab[log.item_codes[row]], repr(float(log.timestamp[row])),
                             repr(float(log.weight[row])),
                             "rating" if log.seen[row] else "view"])
    return path


def audit(interactions: str, items: str | None, split: str, seed: int, home: str,
          flow_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train the flow on the split's training rows and score everything on its held-out users."""
    from service import config
    from service.training.runner import train as run_flow

    log = load_interactions(interactions)
    train, truth = split_log(log, split)
    users = sorted(truth)
    settings = config.load({"LINEUP_HOME": home, "METAFLOW_USER": "audit"})
    with tempfile.TemporaryDirectory() as scratch:
        path = _write_train(log, train, Path(scratch) / "train.csv")
        pathspec = run_flow(settings, interactions=str(path), items=items, seed=seed,
                            extra_args=flow_args)
    config.apply_metaflow(settings)
    import metaflow

    run = metaflow.Run(pathspec)
    model = run.data.model
    as_of = -np.inf if split == "last5" or items is None else float(log.timestamp[train].max())
    upcoming = None
    if items and split != "last5":
        catalogue = load_items(items)
        upcoming = set(catalogue.item_id[catalogue.starts_at > as_of].tolist())
    lists = {"lineup": [model.recommend(user, 10, as_of).item_ids.tolist() for user in users],
             **baselines(log, train, users, upcoming)}
    ndcg = {name: np.array([ndcg_at_10(ranked, truth[user]) for ranked, user in
                            zip(got, users)]) for name, got in lists.items()}
    best_svd = max((name for name in ndcg if name.startswith("svd")),
                   key=lambda name: ndcg[name].mean())
    report = {"split": split, "users": len(users), "run": pathspec,
              "best_params": run.data.best_params,
              "flow_holdout": run.data.holdout_metrics,
              "ndcg@10": {name: [float(v.mean()), *interval(v)] for name, v in ndcg.items()}}
    for other in ("popularity", best_svd):
        diff = ndcg["lineup"] - ndcg[other]
        report[f"lineup - {other}"] = [float(diff.mean()), *interval(diff)]
    return report


def main(argv: list[str] | None = None) -> int:
    """Print the audit of one split as JSON (the ``python -m service.training.audit`` command)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interactions", required=True, help="interactions or ratings CSV")
    parser.add_argument("--items", default=None, help="optional items CSV")
    parser.add_argument("--split", choices=SPLITS, default="last5", help="held-out rows")
    parser.add_argument("--seed", type=int, default=0, help="the flow's seed")
    parser.add_argument("--home", default=None, help="LINEUP_HOME for the runs (a temp dir)")
    args, flow_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        report = audit(args.interactions, args.items, args.split, args.seed,
                       args.home or scratch, tuple(flow_args))
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
