"""One JSON error shape for every error the service answers with.

``{"error": {"status": 404, "code": "not_found", "message": "..."}}``: a 4xx
for the caller's mistakes, 503 only while no model is ready. Internals never
reach the caller; an unexpected exception is logged here with its traceback.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answer with a status, a stable code and a message for people."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> Response:
    """Build the one error shape."""
    response = jsonify(error={"status": status, "code": code, "message": message})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _code_for(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


def init_app(app: Flask) -> None:
    """Answer every error, expected or not, in the one shape."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        headers = dict(exc.get_response().headers)
        allow = {k: v for k, v in headers.items() if k.lower() == "allow"}
        return error_response(exc.code or 500, _code_for(exc), exc.description or "", allow)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        logger.exception("unexpected error")
        return error_response(500, "internal_error", "the service failed to answer; see its log")
