"""The operators' API under /admin, behind a bearer token."""

from __future__ import annotations

import hmac
import time

from flask import Blueprint, Response, current_app, jsonify, request

from service.api import bounded_int, manager
from service.decisions import DecisionStoreError, SelectionBusy
from service.history import run_history
from service.errors import ApiError
from service.selection import PinRefused, SelectionError
from service.runs import StoreUnavailable

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def require_token() -> None:
    """Refuse every admin call without the configured bearer token."""
    expected = current_app.config["ADMIN_TOKEN"]
    if not expected:
        raise ApiError(403, "admin_disabled",
                       "the admin API is disabled: set LINEUP_ADMIN_TOKEN to enable it")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest takes time independent of where the strings differ.
    if not (scheme.lower() == "bearer"
            and hmac.compare_digest(given.strip().encode(), expected.encode())):
        raise ApiError(401, "unauthorized", "a valid 'Authorization: Bearer <token>' is required",
                       {"WWW-Authenticate": 'Bearer realm="lineup-admin"'})


def _selection_wait() -> float:
    config = current_app.config
    return float(config["CHECK_TIMEOUT"]) * (int(config["MAX_WALKBACK"]) + 1)


def _steer(action, *args, **kwargs) -> Response:
    try:
        return jsonify(action(*args, **kwargs))
    except SelectionBusy as exc:
        raise ApiError(409, "selection_busy", str(exc)) from exc
    except SelectionError as exc:
        raise ApiError(502, "selection_failed", str(exc)) from exc
    except StoreUnavailable as exc:  # a pin reads its run before any selection starts
        raise ApiError(502, "datastore_unavailable", str(exc)) from exc
    except DecisionStoreError as exc:  # the fleet's shared decision store is unreachable
        raise ApiError(502, "decision_store_unavailable", str(exc)) from exc


@bp.post("/reload")
def reload() -> Response:
    """Select the newest run that passes its checks now, and say what was looked at."""
    return _steer(manager().reload, reason="admin", wait=_selection_wait())


@bp.get("/status")
def status() -> Response:
    """Say which run serves, since when, the recent verdicts, the fleet and the live catalogue."""
    return jsonify({**manager().status(),
                    "catalogue": current_app.extensions["lineup_catalogue"].status()})


@bp.post("/catalogue/reload")
def catalogue_reload() -> Response:
    """Read the live catalogue now in every worker; say what serves and any refusal."""
    follower = current_app.extensions["lineup_catalogue"]
    if not follower.enabled:
        raise ApiError(409, "catalogue_disabled",
                       "no live catalogue: set LINEUP_CATALOGUE to a path or an s3:// URL")
    asked = time.time()
    status = follower.request_reload()
    error = status["last_error"]
    if error is not None and error["at"] >= asked:
        raise ApiError(422, "catalogue_refused",
                       f"the catalogue was refused and the one serving stays: {error['message']}")
    return jsonify(status)


@bp.post("/pin")
def pin() -> Response:
    """Serve exactly one run (after its checks, unless forced) until unpinned."""
    body = request.get_json(silent=True)
    run_id = body.get("run_id") if isinstance(body, dict) else None
    # bool is an int in Python, but true is no run id.
    if isinstance(run_id, bool) or not isinstance(run_id, str | int) or not str(run_id).strip():
        raise ApiError(400, "invalid_body", 'expected a JSON body like {"run_id": "123"}')
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise ApiError(400, "invalid_body", "force must be true or false")
    try:
        return _steer(manager().pin, str(run_id).strip(), force=force)
    except PinRefused as exc:
        raise ApiError(exc.status, "pin_refused", str(exc)) from exc


@bp.post("/unpin")
def unpin() -> Response:
    """Return to automatic selection."""
    return _steer(manager().unpin)


@bp.get("/runs")
def runs() -> Response:
    """List recent runs of the training flow with metrics, fingerprint and verdict."""
    unknown = sorted(set(request.args) - {"limit"})
    if unknown:  # as /recommendations does: a mistyped ?limt= must not pass silently
        raise ApiError(400, "unknown_parameter",
                       f"unknown parameter {unknown[0]!r}; allowed: limit")
    raw = request.args.get("limit", "20")
    limit = bounded_int(raw, 1, 200)
    if limit is None:
        raise ApiError(400, "invalid_parameter", f"limit must be 1 to 200, got {raw[:20]!r}")
    current = manager()
    try:
        history = run_history(current.source, current.store, limit=limit)
    except StoreUnavailable as exc:
        raise ApiError(502, "datastore_unavailable", str(exc)) from exc
    return jsonify(runs=history)
