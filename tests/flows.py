"""Make real training runs for the serving tests: good, damaged, failed, corrupt, unfinished."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.training import runner
from service.training.runner import TrainingFailed, train
from service.training.sample_data import write_sample

#: Small enough for a run in seconds, large enough for the model to beat popularity.
WORLD = {"users": 1500, "events": 300, "interactions": 40_000}
#: A short hyperparameter search: these runs test serving, not tuning.
SHORT_SEARCH = ("--search_seconds", "2", "--search_tasks", "1")


def sample(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write a small sample world (as of today) and return its CSV paths."""
    return write_sample(directory, seed=seed, **WORLD)


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


def good_run(settings: Mapping[str, Any], data: tuple[Path, Path]) -> str:
    """Train on good data; return the run id."""
    return train(settings, interactions=str(data[0]), items=str(data[1]),
                 extra_args=SHORT_SEARCH).rsplit("/", 1)[-1]


def damaged_run(settings: Mapping[str, Any], data: tuple[Path, Path], workdir: Path) -> str:
    """Train on shuffled interactions: the run succeeds, its model is bad."""
    broken = damage(data[0], workdir / "damaged.csv")
    return train(settings, interactions=str(broken), items=str(data[1]),
                 extra_args=SHORT_SEARCH).rsplit("/", 1)[-1]


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
