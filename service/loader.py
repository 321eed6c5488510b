"""The loader: bring a run's model into memory, once per machine.

The model is unpickled from the Metaflow artifact once, by the worker that
evaluates it. After it passes, that worker writes a plain joblib copy into the
state folder; every worker then opens that copy with ``mmap_mode="r"``, so N
workers share one copy of the arrays in the page cache.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from service.catalogue_view import build_view
from service.contract import MODEL_ARTIFACT, iso_timestamp
from service.servable import schema_problem
from service.runs import RunRecord, RunSource
from service.slot import ServedModel

logger = logging.getLogger(__name__)


class LoadError(RuntimeError):
    """The model of a run could not be loaded."""


def load_from_run(source: RunSource, record: RunRecord) -> tuple[Any, list[str]]:
    """Unpickle the run's model and return it with the warnings it raised.

    Warnings are recorded, not raised: an InconsistentVersionWarning from
    scikit-learn is evidence for the integrity checks to judge.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = source.artifact(record, MODEL_ARTIFACT)
        except Exception as exc:
            raise LoadError(f"artifact 'model' of run {record.run_id} could not be loaded: "
                            f"{type(exc).__name__}: {exc}") from exc
    return model, [f"{w.category.__name__}: {w.message}" for w in caught]


def shared_copy_path(state_dir: str | os.PathLike[str], run_id: str) -> Path:
    """Return where the memory-mappable copy of a run's model lives."""
    return Path(state_dir) / "models" / f"{run_id}.joblib"


def write_shared_copy(model: Any, path: Path) -> None:
    """Write the model as an uncompressed joblib file, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".joblib", dir=path.parent)
    os.close(fd)
    try:
        joblib.dump(model, tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def open_shared_copy(path: Path) -> Any:
    """Open a shared copy with its arrays memory-mapped read-only.

    A model of another class or schema is refused: this code would misread its arrays
    (a decision made before an upgrade names such a run, even a forced pin).
    Each ``np.memmap`` becomes a plain ndarray view of the same pages: the
    subclass's bookkeeping on every slice cost a request about 10 µs.
    """
    model = joblib.load(path, mmap_mode="r")
    problem = schema_problem(model)
    if problem is not None:
        raise LoadError(f"{path.name}: {problem}")
    for name, value in vars(model).items():
        if isinstance(value, np.memmap):
            setattr(model, name, value.view(np.ndarray))
    return model


def item_json(model: Any) -> tuple[str, ...]:
    """Encode each item's fields once, up to its score, so requests only add scores."""
    return items_json(model.item_ids_, model.item_titles_, model.item_categories_,
                      model.item_cities_, model.item_starts_at_)


def items_json(item_ids, titles, categories, cities, starts_at) -> tuple[str, ...]:
    """Encode items given as parallel arrays, each up to its score (``...,"score":``)."""
    return tuple(
        json.dumps({"item_id": str(item_id), "title": str(title) or None,
                    "category": str(category) or None, "city": str(city) or None,
                    "starts_at": iso_timestamp(float(start))},
                   separators=(",", ":"))[:-1] + ',"score":'
        for item_id, title, category, city, start in zip(
            item_ids, titles, categories, cities, starts_at, strict=True)
    )


def serve(model: Any, record: RunRecord, holdout_metrics: dict[str, float] | None,
          *, forced: bool = False) -> ServedModel:
    """Wrap a loaded model as the immutable value the slot holds."""
    return ServedModel(
        model=model,
        run_id=record.run_id,
        pathspec=record.pathspec,
        loaded_at=time.time(),
        finished_at=record.finished_at,
        holdout_metrics=dict(holdout_metrics or {}),
        forced=forced,
        item_json=item_json(model),
        view=build_view(model),
    )
