"""The OpenAPI 3.1 description of Lineup's HTTP API, served at ``GET /openapi.json``.

The document is built by :func:`document` as plain data. Schemas are JSON
Schema 2020-12 (OpenAPI 3.1), so ``null`` is spelled as a type, and the tests
validate real responses against them with jsonschema as they stand.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from service.config import MAX_RECOMMENDATIONS
from service.filters import MAX_FILTER_VALUES

bp = Blueprint("openapi", __name__)

JSON = "application/json"
SCHEMAS = "#/components/schemas/"
RESPONSES = "#/components/responses/"

#: Every error status the service answers with, and the name of its shared response.
ERROR_RESPONSES = {
    400: ("BadRequest", "The request is malformed: a missing, unknown or invalid parameter."),
    401: ("Unauthorized", "A valid `Authorization: Bearer <token>` header is required."),
    403: ("AdminDisabled", "The admin API is off: `LINEUP_ADMIN_TOKEN` is not set."),
    404: ("NotFound", "No such route, or no such run."),
    405: ("MethodNotAllowed", "The route exists, but not for this method."),
    409: ("Conflict", "Another selection is running, the run is not successful, or no live "
                      "catalogue is configured."),
    422: ("Refused", "The run failed its sanity checks, or the catalogue failed its own."),
    502: ("BadGateway", "The Metaflow datastore or the decision store could not be used."),
    503: ("ModelUnavailable", "No model has passed its sanity checks yet; retry later."),
}

#: Extra headers that come with some error responses.
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"description": "The auth scheme: `Bearer realm=\"lineup-admin\"`.",
                               "schema": {"type": "string"}}},
    405: {"Allow": {"description": "The methods the route accepts.",
                    "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "Seconds to wait before asking again.",
                          "required": True,
                          "schema": {"type": "string", "pattern": "^[0-9]+$"}}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMAS + name}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _ok(description: str, schema: dict[str, Any],
        headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description,
                                "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _errors(*statuses: int) -> dict[str, dict[str, str]]:
    return {str(status): {"$ref": RESPONSES + ERROR_RESPONSES[status][0]} for status in statuses}


NUMBER = {"type": "number"}
EPOCH = {"type": "number", "description": "Seconds since the Unix epoch."}
STRING = {"type": "string"}
STRINGS = {"type": "array", "items": STRING}


def _schemas() -> dict[str, Any]:
    """Return the shared schemas; admin objects stay open to new keys, public ones do not."""
    return {
        "Error": {
            "description": "The one error shape of every 4xx and 5xx answer.",
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {"error": {
                "type": "object",
                "required": ["status", "code", "message"],
                "additionalProperties": False,
                "properties": {
                    "status": {"type": "integer", "minimum": 400, "maximum": 599,
                               "description": "The HTTP status, repeated."},
                    "code": {"type": "string", "description": "A stable, machine-readable code.",
                             "examples": ["invalid_parameter"]},
                    "message": {"type": "string", "description": "What went wrong, for people."},
                },
            }},
        },
        "Item": {
            "type": "object",
            "required": ["item_id", "score", "title", "category", "starts_at"],
            "additionalProperties": False,
            "properties": {
                "item_id": STRING,
                "score": NUMBER,
                "title": {"type": ["string", "null"]},
                "category": {"type": ["string", "null"]},
                "city": {"type": ["string", "null"]},
                "starts_at": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "Recommendations": {
            "type": "object",
            "required": ["user_id", "strategy", "run_id", "exhausted", "items"],
            "additionalProperties": False,
            "properties": {
                "user_id": STRING,
                "exhausted": {"type": "boolean",
                              "description": "True when fewer than `n` events qualify (with "
                                             "the filters), so the list is shorter."},
                "strategy": {"type": "string",
                             "enum": ["personalised", "cold_start", "cold_start_taste"]},
                "run_id": {"type": "string", "description": "The run whose model answered."},
                "items": {"type": "array", "items": _ref("Item"),
                          "maxItems": MAX_RECOMMENDATIONS},
            },
        },
        "Health": {
            "type": "object", "required": ["status"], "additionalProperties": False,
            "properties": {"status": {"const": "ok"}},
        },
        "Ready": {
            "type": "object", "required": ["status", "run_id", "pid"],
            "additionalProperties": False,
            "properties": {"status": {"const": "ready"}, "run_id": STRING,
                           "pid": {"type": "integer"}},
        },
        "Metrics": {
            "description": "Holdout metrics by name, e.g. `ndcg@10`.",
            "type": "object", "additionalProperties": NUMBER,
        },
        "Candidate": {
            "description": "One run a selection looked at, and what it made of it.",
            "type": "object",
            "required": ["run_id", "finished_at", "verdict", "remembered"],
            "properties": {
                "run_id": STRING,
                "finished_at": {"type": ["number", "null"]},
                "verdict": {"type": "string",
                            "enum": ["passed", "rejected", "serving", "forced"]},
                "remembered": {"type": "boolean",
                               "description": "True when the verdict was not evaluated anew."},
                "failed_checks": STRINGS,
                "reason": STRING,
            },
        },
        "Selection": {
            "description": "What one selection (reload, poll, pin or unpin) did.",
            "type": "object",
            "required": ["selection", "reason", "pid", "started_at", "finished_at", "seconds",
                         "before", "after", "changed", "pinned", "candidates", "error"],
            "properties": {
                "selection": {"type": "integer", "description": "The decision's generation."},
                "reason": {"type": "string", "examples": ["admin", "poll", "pin", "unpin"]},
                "pid": {"type": "integer"},
                "instance": {"type": "string", "description": "The instance that selected."},
                "started_at": EPOCH,
                "finished_at": EPOCH,
                "seconds": NUMBER,
                "before": {"type": ["string", "null"]},
                "after": {"type": ["string", "null"]},
                "changed": {"type": "boolean"},
                "pinned": {"type": ["string", "null"]},
                "candidates": {"type": "array", "items": _ref("Candidate")},
                "error": {"type": ["string", "null"]},
                "joined": {"type": "boolean",
                           "description": "Present when this call waited for another's selection "
                                          "and answers with its result."},
            },
        },
        "Pin": {
            "type": "object", "required": ["run_id", "force", "at"],
            "properties": {"run_id": STRING, "force": {"type": "boolean"}, "at": EPOCH},
        },
        "Serving": {
            "description": "The model this worker serves.",
            "type": "object",
            "required": ["run_id", "pathspec", "since", "loaded_at", "finished_at", "forced",
                         "age_seconds", "stale", "holdout_metrics"],
            "properties": {
                "run_id": STRING,
                "pathspec": STRING,
                "since": {"type": ["number", "null"]},
                "loaded_at": EPOCH,
                "finished_at": {"type": ["number", "null"]},
                "forced": {"type": "boolean"},
                "age_seconds": {"type": ["number", "null"]},
                "stale": {"type": "boolean"},
                "holdout_metrics": _ref("Metrics"),
            },
        },
        "VerdictSummary": {
            "type": "object",
            "required": ["run_id", "passed", "failed_checks", "reason", "evaluated_at"],
            "properties": {"run_id": STRING, "passed": {"type": "boolean"},
                           "failed_checks": STRINGS, "reason": STRING, "evaluated_at": EPOCH},
        },
        "Worker": {
            "type": "object",
            "required": ["pid", "run_id", "seen_at", "loaded_at"],
            "properties": {"pid": {"type": "integer"}, "run_id": {"type": ["string", "null"]},
                           "seen_at": EPOCH, "loaded_at": {"type": ["number", "null"]}},
        },
        "Instance": {
            "description": "One instance of the fleet, from its workers' last reports.",
            "type": "object",
            "required": ["instance", "run_ids", "workers", "reported_at", "decision_seen_at",
                         "last_error", "stale", "stale_reason"],
            "properties": {
                "instance": STRING,
                "run_ids": STRINGS,
                "workers": {"type": "array", "items": {"type": "integer"}},
                "reported_at": EPOCH,
                "decision_seen_at": {"type": "number",
                                     "description": "When it last read the decision."},
                "last_error": {"type": ["object", "null"]},
                "stale": {"type": "boolean"},
                "stale_reason": {"type": ["string", "null"]},
            },
        },
        "Status": {
            "type": "object",
            "required": ["ready", "serving", "decided_run_id", "pin", "last_selection",
                         "verdicts", "last_error", "worker_pid", "workers"],
            "properties": {
                "ready": {"type": "boolean"},
                "serving": _nullable(_ref("Serving")),
                "decided_run_id": {"type": ["string", "null"]},
                "pin": _nullable(_ref("Pin")),
                "last_selection": _nullable(_ref("Selection")),
                "verdicts": {"type": "array", "items": _ref("VerdictSummary"), "maxItems": 20},
                "last_error": _nullable({
                    "type": "object", "required": ["at", "message"],
                    "properties": {"at": EPOCH, "message": STRING},
                }),
                "worker_pid": {"type": "integer"},
                "workers": {"type": "array", "items": _ref("Worker")},
                "instance": {"type": "string", "description": "This instance's name."},
                "instances": {"type": "array", "items": _ref("Instance"),
                              "description": "Every instance that reported in the last "
                                             "minute; a stale one is flagged."},
                "catalogue": _ref("Catalogue"),
            },
        },
        "Catalogue": {
            "description": "This worker's live catalogue (LINEUP_CATALOGUE) and its last refusal.",
            "type": "object",
            "required": ["location", "interval_seconds", "serving", "last_read_at", "last_error"],
            "properties": {
                "location": {"type": ["string", "null"]},
                "interval_seconds": NUMBER,
                "serving": _nullable({
                    "type": "object",
                    "required": ["source", "run_id", "loaded_at", "events", "on_sale_upcoming",
                                 "new_events"],
                    "properties": {"source": STRING, "run_id": STRING,
                                   "loaded_at": {"type": "string", "format": "date-time"},
                                   "events": {"type": "integer"},
                                   "on_sale_upcoming": {"type": "integer"},
                                   "new_events": {"type": "integer"}},
                }),
                "last_read_at": {"type": ["string", "null"], "format": "date-time"},
                "last_error": _nullable({
                    "type": "object", "required": ["at", "message"],
                    "properties": {"at": EPOCH, "message": STRING},
                }),
            },
        },
        "Run": {
            "description": "One run of the training flow; metrics only for successful runs.",
            "type": "object",
            "required": ["run_id", "pathspec", "state", "created_at", "finished_at", "verdict"],
            "properties": {
                "run_id": STRING,
                "pathspec": STRING,
                "state": {"type": "string", "enum": ["successful", "failed", "running"]},
                "created_at": {"type": ["number", "null"]},
                "finished_at": {"type": ["number", "null"]},
                "holdout_metrics": _nullable(_ref("Metrics")),
                "baseline_metrics": _nullable(_ref("Metrics")),
                "data_fingerprint": {"type": ["object", "null"]},
                "verdict": {"type": "string",
                            "enum": ["serving", "passed", "rejected", "not evaluated"]},
                "failed_checks": STRINGS,
                "reason": STRING,
                "measures": {"type": "array", "items": _ref("Measure")},
            },
        },
        "Measure": {
            "description": "A number a check judged by: claimed by the run against measured "
                           "by the gate, the 95% interval, the rule and the check's decision.",
            "type": "object",
            "required": ["check", "passed", "name", "measured", "low", "high", "claimed",
                         "rule"],
            "properties": {
                "check": STRING, "passed": {"type": "boolean"}, "name": STRING,
                "measured": {"type": ["number", "null"]}, "low": {"type": ["number", "null"]},
                "high": {"type": ["number", "null"]}, "claimed": {"type": ["number", "null"]},
                "rule": STRING,
            },
        },
        "Runs": {
            "type": "object", "required": ["runs"],
            "properties": {"runs": {"type": "array", "items": _ref("Run"), "maxItems": 200}},
        },
        "PinRequest": {
            "type": "object",
            "required": ["run_id"],
            "properties": {
                "run_id": {
                    "description": "A run id, or the run's pathspec `Flow/id`.",
                    "oneOf": [{"type": "string", "pattern": r"\S"},
                              {"type": "integer"}],
                },
                "force": {"type": "boolean", "default": False,
                          "description": "Skip the run's checks."},
            },
        },
    }


def _error_responses() -> dict[str, Any]:
    responses = {}
    for status, (name, description) in ERROR_RESPONSES.items():
        response = _ok(description, _ref("Error"))
        if status in _ERROR_HEADERS:
            response["headers"] = _ERROR_HEADERS[status]
        responses[name] = response
    return responses


def _filter_parameters() -> list[dict[str, Any]]:
    """The filters of /recommendations (service/filters.py); each one is exact."""
    names = {"type": "array", "maxItems": MAX_FILTER_VALUES,
             "items": {"type": "string", "pattern": r"[^,\s]"}}
    instant = {"type": "string", "format": "date-time"}
    return [
        {"name": "city", "in": "query", "required": False, "style": "form", "explode": True,
         "description": "Only events in these cities (repeat it, or separate with commas; "
                        "any case).", "schema": names},
        {"name": "category", "in": "query", "required": False, "style": "form",
         "explode": True, "description": "Only events of these categories.", "schema": names},
        {"name": "starts_after", "in": "query", "required": False,
         "description": "Only events starting after this instant (ISO 8601; naive is UTC).",
         "schema": instant},
        {"name": "starts_before", "in": "query", "required": False,
         "description": "Only events starting before this instant.", "schema": instant},
    ]


def _paths() -> dict[str, Any]:
    admin = {"tags": ["admin"], "security": [{"adminToken": []}]}
    admin_errors = (401, 403)
    return {
        "/recommendations": {"get": {
            "tags": ["public"],
            "operationId": "recommendations",
            "summary": "Return the top-n upcoming events for a user, and the run that chose them.",
            "parameters": [
                {"name": "user_id", "in": "query", "required": True,
                 "description": "Any user id; unknown users get a cold-start list.",
                 "schema": {"type": "string", "minLength": 1, "maxLength": 256,
                            "pattern": r"\S"}},
                {"name": "n", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_RECOMMENDATIONS,
                            "default": 10}},
                {"name": "taste", "in": "query", "required": False,
                 "description": "A taste cluster for users the model does not know.",
                 "schema": {"type": "string"}},
                *_filter_parameters(),
            ],
            "responses": {
                "200": _ok("The recommendations.", _ref("Recommendations"), {
                    "X-Model-Run": {"description": "The run whose model answered.",
                                    "required": True, "schema": STRING}}),
                **_errors(400, 503),
            },
        }},
        "/healthz": {"get": {
            "tags": ["public"], "operationId": "healthz",
            "summary": "Answer while the process is alive.",
            "responses": {"200": _ok("Alive.", _ref("Health"))},
        }},
        "/readyz": {"get": {
            "tags": ["public"], "operationId": "readyz",
            "summary": "Answer 200 while this worker and every other worker of the instance "
                       "hold a model.",
            "responses": {"200": _ok("Every worker of this instance holds a model.",
                                     _ref("Ready")), **_errors(503)},
        }},
        "/metrics": {"get": {
            "tags": ["public"], "operationId": "metrics",
            "summary": "Serve the Prometheus metrics of every worker.",
            "responses": {"200": {"description": "Prometheus text format.",
                                  "content": {"text/plain": {"schema": STRING}}}},
        }},
        "/openapi.json": {"get": {
            "tags": ["public"], "operationId": "openapi",
            "summary": "Serve this document.",
            "responses": {"200": _ok("The OpenAPI document.", {"type": "object"})},
        }},
        "/admin/reload": {"post": {
            **admin, "operationId": "reload",
            "summary": "Select the newest run that passes its checks now.",
            "responses": {"200": _ok("What the selection looked at and chose.",
                                     _ref("Selection")),
                          **_errors(*admin_errors, 409, 502)},
        }},
        "/admin/catalogue/reload": {"post": {
            **admin, "operationId": "catalogue_reload",
            "summary": "Read the live catalogue now, in every worker; refuse a bad one.",
            "responses": {"200": _ok("The live catalogue now.", _ref("Catalogue")),
                          **_errors(*admin_errors, 409, 422)},
        }},
        "/admin/status": {"get": {
            **admin, "operationId": "status",
            "summary": "Say which run serves, since when, the recent verdicts, and the fleet.",
            "responses": {"200": _ok("The status.", _ref("Status")), **_errors(*admin_errors)},
        }},
        "/admin/runs": {"get": {
            **admin, "operationId": "runs",
            "summary": "List recent runs with metrics, data fingerprint and verdict.",
            "parameters": [{"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 200,
                                       "default": 20}}],
            "responses": {"200": _ok("Recent runs, newest first.", _ref("Runs")),
                          **_errors(400, *admin_errors, 502)},
        }},
        "/admin/pin": {"post": {
            **admin, "operationId": "pin",
            "summary": "Serve exactly one run (after its checks, unless forced) until unpinned.",
            "requestBody": {"required": True,
                            "content": {JSON: {"schema": _ref("PinRequest")}}},
            "responses": {"200": _ok("The selection the pin made.", _ref("Selection")),
                          **_errors(400, *admin_errors, 404, 409, 422, 502)},
        }},
        "/admin/unpin": {"post": {
            **admin, "operationId": "unpin",
            "summary": "Return to automatic selection.",
            "responses": {"200": _ok("The selection the unpin made.", _ref("Selection")),
                          **_errors(*admin_errors, 409, 502)},
        }},
    }


def document() -> dict[str, Any]:
    """Return the OpenAPI document of every public and admin endpoint."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Lineup",
            "version": "1",
            "description": "Event recommendations served from the newest Metaflow run that "
                           "passes its sanity checks. Every error has one shape, `Error`; a "
                           "wrong route is a 404 and a wrong method a 405 (`NotFound`, "
                           "`MethodNotAllowed`).",
        },
        "tags": [{"name": "public"},
                 {"name": "admin", "description": "Operators' API; needs the bearer token."}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": _error_responses(),
            "securitySchemes": {"adminToken": {
                "type": "http", "scheme": "bearer",
                "description": "The value of `LINEUP_ADMIN_TOKEN`.",
            }},
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """Serve the OpenAPI document."""
    return jsonify(document())
