"""The HTTP contract without a model: validation, the error shape, auth."""

from __future__ import annotations

import pytest

from service import create_app


def assert_error(response, status, code):
    assert response.status_code == status
    assert response.is_json, response.data[:200]
    error = response.get_json()["error"]
    assert error["status"] == status
    assert error["code"] == code
    assert error["message"]


def test_healthz_answers_without_a_model(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_and_recommendations_are_503_before_any_model(client):
    assert_error(client.get("/readyz"), 503, "model_unavailable")
    response = client.get("/recommendations?user_id=u1")
    assert_error(response, 503, "model_unavailable")
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("query, code", [
    ("", "missing_parameter"),
    ("user_id=", "missing_parameter"),
    ("user_id=%20%20", "missing_parameter"),
    ("user_id=u1&n=0", "invalid_parameter"),
    ("user_id=u1&n=101", "invalid_parameter"),
    ("user_id=u1&n=ten", "invalid_parameter"),
    ("user_id=u1&n=-3", "invalid_parameter"),
    ("user_id=u1&n=2.5", "invalid_parameter"),
    ("user_id=u1&count=3", "unknown_parameter"),
    ("user_id=u1&user_id=u2", "ambiguous_parameter"),
    ("user_id=" + "x" * 300, "invalid_parameter"),
])
def test_bad_input_gets_400_in_the_error_shape(client, query, code):
    assert_error(client.get(f"/recommendations?{query}"), 400, code)


def test_unknown_route_and_wrong_method_use_the_error_shape(client):
    assert_error(client.get("/nope"), 404, "not_found")
    response = client.post("/recommendations?user_id=u1")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer wrong", "Basic dGVzdA==", "bearer  ", "Bearer test-admin-tokenX",
    "Bearer \x00", "Token test-admin-token",
])
def test_admin_refuses_missing_or_wrong_tokens(client, header):
    headers = {} if header is None else {"Authorization": header}
    for method, path in (("get", "/admin/status"), ("post", "/admin/reload"),
                         ("post", "/admin/pin"), ("get", "/admin/runs")):
        assert_error(getattr(client, method)(path, headers=headers), 401, "unauthorized")


def test_admin_is_disabled_without_a_configured_token(settings, admin_headers):
    client = create_app({**settings, "ADMIN_TOKEN": ""}).test_client()
    assert_error(client.get("/admin/status", headers=admin_headers), 403, "admin_disabled")


def test_status_before_any_model(client, admin_headers):
    status = client.get("/admin/status", headers=admin_headers).get_json()
    assert status["ready"] is False
    assert status["serving"] is None


@pytest.mark.parametrize("body", [None, "not json", {"run": "1"}, {"run_id": None},
                                  {"run_id": "1", "force": "yes"}])
def test_pin_with_a_bad_body_is_400(client, admin_headers, body):
    kwargs = {"json": body} if isinstance(body, dict) else {"data": body or ""}
    assert_error(client.post("/admin/pin", headers=admin_headers, **kwargs), 400, "invalid_body")
