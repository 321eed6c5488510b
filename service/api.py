"""The public API: recommendations, liveness and readiness."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request

from service import catalogue_view, readiness
from service.config import MAX_RECOMMENDATIONS
from service.errors import ApiError
from service.filters import FILTER_PARAMETERS, FilterError, ItemFilter, parse_filter
from service.manager import ModelManager
from service.metrics import count_recommendation

bp = Blueprint("api", __name__)

PARAMETERS = ("user_id", "n", "taste") + FILTER_PARAMETERS
#: Parameters that may be given more than once (each value, or comma-separated values).
LISTS = frozenset({"city", "category"})
MAX_ID_LENGTH = 256


def manager() -> ModelManager:
    """Return the app's model manager."""
    return current_app.extensions["lineup"]


def _model_unavailable(reason: str | None = None) -> ApiError:
    retry = max(1, min(int(current_app.config["POLL_INTERVAL"]), 60))
    reason = reason or manager().why_not_ready()
    return ApiError(503, "model_unavailable", f"no model is ready yet ({reason}); try again later",
                    {"Retry-After": str(retry)})


def bounded_int(raw: str, low: int, high: int) -> int | None:
    """Return ``raw`` as an integer from ``low`` to ``high``, or None if it is not one."""
    # Only ASCII digits: str.isdigit() also takes "²", which int() refuses, and
    # int() refuses more than 4300 digits; both used to answer 500.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:
        return None
    value = int(raw)
    return value if low <= value <= high else None


def _parameters() -> tuple[str, int, str | None, ItemFilter | None]:
    given = dict(request.args.lists())
    unknown = sorted(given.keys() - set(PARAMETERS))
    if unknown:
        raise ApiError(400, "unknown_parameter",
                       f"unknown parameter {unknown[0]!r}; allowed: {', '.join(PARAMETERS)}")
    repeated = [name for name in PARAMETERS
                if name not in LISTS and len(given.get(name, ())) > 1]
    if repeated:
        raise ApiError(400, "ambiguous_parameter", f"parameter {repeated[0]!r} given twice")
    args = {name: values[0] for name, values in given.items()}
    user_id = args.get("user_id", "").strip()
    if not user_id:
        raise ApiError(400, "missing_parameter", "user_id is required")
    if len(user_id) > MAX_ID_LENGTH:
        raise ApiError(400, "invalid_parameter",
                       f"user_id is longer than {MAX_ID_LENGTH} characters")
    raw_n = args.get("n", "").strip() or str(current_app.config["DEFAULT_N"])
    n = bounded_int(raw_n, 1, MAX_RECOMMENDATIONS)
    if n is None:
        raise ApiError(400, "invalid_parameter",
                       f"n must be an integer from 1 to {MAX_RECOMMENDATIONS}, got {raw_n[:20]!r}")
    taste = args.get("taste", "").strip() or None
    try:
        item_filter = parse_filter(given)
    except FilterError as exc:
        raise ApiError(400, "invalid_parameter", str(exc)) from exc
    return user_id, n, taste, item_filter


def _dumps(value: Any) -> str:
    """Encode as compact JSON, as the app's jsonify would."""
    return json.dumps(value, separators=(",", ":"))


@bp.get("/recommendations")
def recommendations() -> Response:
    """Return the top-n upcoming events for a user, and which run's model chose them.

    Unfiltered, with no live catalogue, the model answers alone (its fit-time
    ranking); a filter or a live catalogue goes through the catalogue view.
    """
    user_id, n, taste, item_filter = _parameters()
    served = manager().slot.get()  # read once: this request finishes on this model
    if served is None:
        raise _model_unavailable()
    view, item_json = served.view, served.item_json
    live = current_app.extensions["lineup_catalogue"].get()
    if live is not None and live.run_id == served.run_id:
        view, item_json = live.view, live.item_json
    if item_filter is None and view.plain:
        chosen = served.model.recommend(user_id, n, as_of=time.time(), taste=taste)
    else:
        chosen = catalogue_view.recommend(served.model, view, user_id, n, time.time(),
                                          taste=taste, item_filter=item_filter)
    count_recommendation(chosen.strategy)
    # Each item's fields were encoded once, when the model was loaded; a
    # request only adds the scores. They are finite (the sanity gate checks
    # it), so a float's repr is its JSON.
    items = ",".join(f"{item_json[index]}{score!r}}}"
                     for index, score in zip(chosen.items.tolist(),
                                             np.round(chosen.scores, 6).tolist(), strict=True))
    exhausted = "true" if len(chosen.items) < n else "false"
    body = (f'{{"user_id":{_dumps(user_id)},"strategy":{_dumps(chosen.strategy)},'
            f'"run_id":{_dumps(served.run_id)},"exhausted":{exhausted},"items":[{items}]}}\n')
    response = current_app.response_class(body, mimetype=current_app.json.mimetype)
    response.headers["X-Model-Run"] = served.run_id
    return response


@bp.get("/healthz")
def healthz() -> Response:
    """Answer while the process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """Answer 200 while this worker and every other worker of the instance hold a model."""
    served = manager().slot.get()
    if served is None:
        raise _model_unavailable()
    expected = int(current_app.config.get("GUNICORN_WORKERS", 0))
    siblings = readiness.sibling_pids() if expected else None
    if siblings is not None:  # under gunicorn; a bare app is one worker
        # Any age: a live worker's slot never empties once it holds a model, so
        # its last report stands even while a full state folder stops new ones.
        missing = readiness.workers_without_a_model(
            manager().store.workers(max_age=float("inf")), siblings, expected)
        if missing:
            raise _model_unavailable(f"this instance is not ready: {', '.join(missing)} "
                                     "has no model yet")
    return jsonify(status="ready", run_id=served.run_id, pid=os.getpid())
