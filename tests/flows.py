"""Make real training runs for the serving tests: good, damaged, failed, corrupt, unfinished."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from service.config import metaflow_environment
from service.training import runner
from service.training.runner import TrainingFailed
from service.training.sample_data import write_sample

REPO = Path(__file__).resolve().parent.parent
DAMAGE_FLOW = Path(__file__).with_name("damage_flow.py")

#: Small enough for a run in seconds, large enough for the model to beat popularity.
WORLD = {"users": 1500, "events": 300, "interactions": 40_000}
#: A short hyperparameter search: these runs test serving, not tuning.
SHORT_SEARCH = ("--search_seconds", "2", "--search_passes", "0", "--search_tasks", "1")


def sample(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write a small sample world (as of today) and return its CSV paths."""
    return write_sample(directory, seed=seed, **WORLD)


def ratings(directory: Path, seed: int = 0) -> Path:
    """Write the small sample world as a MovieLens-style ratings file, and return its path.

    ``userId,movieId,rating,timestamp`` with epoch seconds and no interaction
    column, so every row is seen; no items file, so no item has metadata.
    """
    interactions, _ = sample(directory, seed)
    with open(interactions, newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = directory / "ratings.csv"
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["userId", "movieId", "rating", "timestamp"])
        writer.writerows([row["user_id"], row["item_id"], row["weight"],
                          int(datetime.fromisoformat(row["timestamp"]).timestamp())]
                         for row in rows)
    return out


def damage(interactions: Path, out: Path, seed: int = 0) -> Path:
    """Shuffle the user column: counts survive, every taste signal is gone."""
    with open(interactions, newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    users = [row[0] for row in body]
    random.Random(seed).shuffle(users)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([user, *row[1:]] for user, row in zip(users, body, strict=True))
    return out


#: One grid point: the fewest flow tasks, for tests that train many runs.
ONE_GRID_POINT = ("--grid", "16", "--half_lives", "14", "--user_half_lives", "inf",
                  "--popularity_weights", "0.1", "--weightings", "log", *SHORT_SEARCH)


#: Runs started this close together may get one run id (below).
_STAGGER_SECONDS = 0.5
_launches = threading.Lock()
_last_launch = [0.0]


def _stagger() -> None:
    """Start flow runs at least half a second apart.

    Metaflow's local run ids are the start time in microseconds. Two runs
    that tests started at the same instant from two threads once got one id
    and wrote into one run (a CI run's fleet fixture found a single run for
    its two trainings), so each launch waits for the previous one's head start.
    """
    with _launches:
        time.sleep(max(0.0, _last_launch[0] + _STAGGER_SECONDS - time.monotonic()))
        _last_launch[0] = time.monotonic()


def train(settings: Mapping[str, Any], **options: Any) -> str:
    """Train through ``runner.train``, staggered (:func:`_stagger`)."""
    _stagger()
    return runner.train(settings, **options)


def recent_runs(settings: Mapping[str, Any], count: int) -> list[str]:
    """Train ``count`` good runs on small sample worlds of different seeds and recent dates.

    Run i has seed i and is as of i days ago, so each has upcoming events
    now; returns the run ids, oldest date first. Two train at a time: a
    small run's time is mostly its tasks starting up.
    """
    today = datetime.now(UTC).date()

    def one(i: int) -> str:
        pathspec = train(settings, as_of=(today - timedelta(days=i)).isoformat(), seed=i,
                         sample_size=WORLD, extra_args=ONE_GRID_POINT)
        return pathspec.rsplit("/", 1)[-1]

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, reversed(range(count))))


def good_run(settings: Mapping[str, Any], data: tuple[Path, Path]) -> str:
    """Train on good data; return the run id."""
    return train(settings, interactions=str(data[0]), items=str(data[1]),
                 extra_args=SHORT_SEARCH).rsplit("/", 1)[-1]


def damaged_run(settings: Mapping[str, Any], data: tuple[Path, Path], workdir: Path) -> str:
    """Train on shuffled interactions: the run succeeds, its model is bad."""
    broken = damage(data[0], workdir / "damaged.csv")
    return train(settings, interactions=str(broken), items=str(data[1]),
                 extra_args=SHORT_SEARCH).rsplit("/", 1)[-1]


def _rerank(model: Any) -> Any:
    """Rebuild the fit-time ranking from the (damaged) factors, so the two agree."""
    model._rank_users()
    return model


def _permute_users(model: Any, share: float) -> Any:
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(model.user_ids_.size, int(model.user_ids_.size * share),
                                replace=False))
    factors = np.array(model.user_factors_)
    factors[chosen] = factors[np.roll(chosen, 1)]  # a cycle: every chosen user moves
    model.user_factors_ = factors
    return _rerank(model)


def _permute_items(model: Any) -> Any:
    model.item_factors_ = np.array(model.item_factors_)[
        np.random.default_rng(0).permutation(model.item_ids_.size)]
    return _rerank(model)


def _forget_seen(model: Any) -> Any:
    """Forget what every user bought or rated, as a fit that lost the seen column would."""
    model.seen_indptr_ = np.zeros_like(model.seen_indptr_)
    model.seen_indices_ = model.seen_indices_[:0]
    return _rerank(model)


def _cut_catalogue(model: Any) -> Any:
    """Keep every tenth item, every item array and the seen matrix cut alike."""
    from scipy import sparse

    keep = np.arange(0, model.item_ids_.size, 10)
    seen = sparse.csr_matrix(
        (np.ones(model.seen_indices_.size), model.seen_indices_, model.seen_indptr_),
        shape=(model.user_ids_.size, model.item_ids_.size))[:, keep].tocsr()
    for name in ("item_ids_", "item_titles_", "item_categories_", "item_cities_",
                 "item_starts_at_", "item_popularity_", "item_factors_", "item_bias_"):
        setattr(model, name, np.array(getattr(model, name))[keep])
    model.cluster_item_scores_ = np.array(model.cluster_item_scores_)[:, keep]
    model.seen_indptr_ = seen.indptr.astype(np.int64)
    model.seen_indices_ = seen.indices.astype(np.int32)
    model.n_items_ = keep.size
    return _rerank(model)


#: How a model can be damaged after evaluation; each must be rejected by the gate.
DAMAGES = ("users", "half_users", "items", "other_data", "cut_catalogue", "popularity", "seen",
           "starts")


def damage_model(model: Any, kind: str, *, log: Any, catalogue: Any, donor: Any) -> Any:
    """Return ``model`` damaged as ``kind`` (one of DAMAGES) says."""
    from service.recommender import PopularityRecommender

    if kind == "users":
        return _permute_users(model, 1.0)
    if kind == "half_users":
        return _permute_users(model, 0.5)
    if kind == "items":
        return _permute_items(model)
    if kind == "other_data":
        return donor
    if kind == "cut_catalogue":
        return _cut_catalogue(model)
    if kind == "popularity":
        return PopularityRecommender().fit(log, items=catalogue)
    if kind == "seen":
        return _forget_seen(model)
    if kind == "starts":
        model.item_starts_at_ = np.asarray(model.item_starts_at_) + 30 * 86_400.0
        return _rerank(model)  # events that started this month look upcoming
    raise ValueError(f"unknown damage {kind!r}; one of {', '.join(DAMAGES)}")


def model_damaged_run(settings: Mapping[str, Any], good: str, kind: str,
                      donor: str = "") -> str:
    """Store good run ``good``'s artifacts with its model damaged as a new run; return its id."""
    flow = settings["FLOW_NAME"]
    with tempfile.TemporaryDirectory() as scratch:
        run_id_file = Path(scratch) / "run-id"
        argv = [sys.executable, str(DAMAGE_FLOW), "--no-pylint", "run",
                "--source_run", f"{flow}/{good}", "--damage", kind,
                "--donor_run", f"{flow}/{donor}" if donor else "",
                "--run-id-file", str(run_id_file)]
        env = {**os.environ, **metaflow_environment(settings), "PYTHONPATH": str(REPO),
               "LINEUP_FLOW_NAME": flow}
        _stagger()
        done = subprocess.run(argv, cwd=settings["DATASTORE_ROOT"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert done.returncode == 0, done.stdout[-3000:]
        return run_id_file.read_text().strip()


def failed_run(settings: Mapping[str, Any], workdir: Path) -> None:
    """Train on a malformed CSV: the run fails in its first step."""
    bad = workdir / "malformed.csv"
    bad.write_text("user_id,item_id,timestamp\nu1,e1,not-a-time\n")
    try:
        train(settings, interactions=str(bad))
    except TrainingFailed:
        return
    raise AssertionError("a run on malformed data succeeded")


def corrupt_model(settings: Mapping[str, Any], run_id: str) -> None:
    """Overwrite the stored blob of a run's model artifact with garbage."""
    from service.config import apply_metaflow

    apply_metaflow(settings)
    import metaflow

    artifact = metaflow.Run(f"{settings['FLOW_NAME']}/{run_id}")["end"].task["model"]
    blobs = list(Path(settings["DATASTORE_ROOT"]).glob(f".metaflow/**/{artifact.sha}"))
    assert blobs, f"no blob {artifact.sha} for run {run_id}"
    for blob in blobs:
        blob.write_bytes(b"this is not a pickle")


def unfinished_run(settings: Mapping[str, Any], data: tuple[Path, Path]) -> None:
    """Start a run and kill it mid-flight: it stays 'running' with no data."""
    argv, env = runner.command(settings, interactions=str(data[0]), items=str(data[1]))
    process = subprocess.Popen(argv, env={**os.environ, **env}, cwd=settings["DATASTORE_ROOT"],
                               start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    flow_dir = Path(settings["DATASTORE_ROOT"]) / ".metaflow" / settings["FLOW_NAME"]
    before = set(flow_dir.iterdir()) if flow_dir.exists() else set()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            started = [p for p in flow_dir.glob("*/start") if p.parent not in before]
            if started:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the run never started")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
