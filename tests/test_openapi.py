"""The OpenAPI document: valid itself, true of real responses, and fuzzed with schemathesis."""

from __future__ import annotations


import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from schemathesis.checks import not_a_server_error

from service import config, create_app
from service.openapi import ERROR_RESPONSES, document
from tests.conftest import ADMIN_TOKEN

DOCUMENT = document()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _resolve(node: dict) -> dict:
    """Follow a response-level ``$ref`` inside the document."""
    while "$ref" in node:
        target = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def documented_response(path: str, method: str, status: int) -> dict:
    """Return the resolved response object the document gives for path, method and status."""
    responses = DOCUMENT["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered undocumented {status}"
    return _resolve(responses[str(status)])


def assert_matches(response, schema: dict) -> None:
    """Validate a JSON body against a schema of the document, $refs and formats included."""
    validator = Draft202012Validator({**schema, "components": DOCUMENT["components"]},
                                     format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(response.get_json()), key=lambda e: e.path)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def assert_conforms(response, path: str, method: str = "GET") -> dict:
    """Assert the response is documented and its body and headers match; return the body."""
    documented = documented_response(path, method, response.status_code)
    for name, header in documented.get("headers", {}).items():
        if header.get("required"):
            assert name in response.headers, f"{name} missing from {method} {path}"
    media_type, content = next(iter(documented["content"].items()))
    assert response.mimetype == media_type
    if media_type == "application/json":
        assert_matches(response, content["schema"])
        return response.get_json()
    return {}


def assert_error_shape(response, status: int) -> None:
    """Validate an answer to an undocumented route or method against the shared response."""
    assert response.status_code == status
    name = ERROR_RESPONSES[status][0]
    assert_matches(response, DOCUMENT["components"]["responses"][name]["content"]
                   ["application/json"]["schema"])


# -- the document itself -----------------------------------------------------


def test_the_document_is_valid_openapi(client):
    validate_spec(DOCUMENT)
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.get_json() == DOCUMENT


def test_every_route_is_documented_and_nothing_else(app):
    served = {(rule.rule, method.lower()) for rule in app.url_map.iter_rules()
              if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in DOCUMENT["paths"].items()
                  for method in item}
    assert served == documented


def test_every_error_response_is_the_shared_error_shape():
    components = DOCUMENT["components"]["responses"]
    for name, _ in ERROR_RESPONSES.values():
        schema = components[name]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["$ref"].startswith("#/components/responses/"), (path, status)
            if path.startswith("/admin/"):
                assert operation["security"] == [{"adminToken": []}]
                assert {"401", "403"} <= set(operation["responses"])


# -- real responses validate -------------------------------------------------


def test_responses_without_a_model_match_the_document(client, admin_headers, settings):
    assert_conforms(client.get("/healthz"), "/healthz")
    assert client.get("/readyz").status_code == 503
    assert_conforms(client.get("/readyz"), "/readyz")
    assert_conforms(client.get("/recommendations?user_id=u1"), "/recommendations")
    assert client.get("/metrics").status_code == 200
    assert_conforms(client.get("/metrics"), "/metrics")
    assert_conforms(client.get("/openapi.json"), "/openapi.json")
    for query in ("", "user_id=u1&n=0", "user_id=u1&n=x", "user_id=u1&x=1", "user_id=%20"):
        response = client.get(f"/recommendations?{query}")
        assert response.status_code == 400
        assert_conforms(response, "/recommendations")
    status = assert_conforms(client.get("/admin/status", headers=admin_headers), "/admin/status")
    assert status["serving"] is None and status["last_selection"] is None
    # No datastore at all: the admin calls that read it answer 502, in the error shape.
    for method, path in (("POST", "/admin/reload"), ("GET", "/admin/runs"),
                         ("POST", "/admin/unpin")):
        response = client.open(path, method=method, headers=admin_headers)
        assert response.status_code == 502
        assert_conforms(response, path, method)
    response = client.post("/admin/pin", json={"run_id": "1"}, headers=admin_headers)
    assert response.status_code == 502, response.get_json()
    assert_conforms(response, "/admin/pin", "POST")
    for body in ({}, {"run_id": "1", "force": 1}, {"run_id": " "}, {"run_id": True}):
        response = client.post("/admin/pin", json=body, headers=admin_headers)
        assert response.status_code == 400, body
        assert_conforms(response, "/admin/pin", "POST")
    response = client.get("/admin/runs?limit=201", headers=admin_headers)
    assert response.status_code == 400
    assert_conforms(response, "/admin/runs")
    disabled = create_app({**settings, "ADMIN_TOKEN": ""}).test_client()
    response = disabled.get("/admin/status", headers=admin_headers)
    assert response.status_code == 403
    assert_conforms(response, "/admin/status")


@pytest.mark.parametrize("url", [
    "/recommendations?user_id=u1&n=%C2%B2",  # "²" passes str.isdigit(), not int()
    "/recommendations?user_id=u1&n=%D9%A3",  # an Arabic-Indic three
    "/recommendations?user_id=u1&n=" + "9" * 5000,  # past int()'s digit limit
    "/admin/runs?limit=%C2%B2",
    "/admin/runs?limit=" + "9" * 5000,
    "/admin/runs?limt=5",  # unknown parameters are refused, as on /recommendations
    "/recommendations?user_id=u1&starts_after=tomorrow",
    "/recommendations?user_id=u1&starts_before=1764547200",  # an epoch is no ISO 8601
    "/recommendations?user_id=u1&city=%20,%20",
    "/recommendations?user_id=u1&category=" + ",".join("x" * 51),
])
def test_odd_parameters_are_400_not_500_or_ignored(client, admin_headers, url):
    response = client.get(url, headers=admin_headers)
    assert response.status_code == 400
    assert_conforms(response, url.partition("?")[0])


@pytest.mark.parametrize("method, path", [
    ("GET", "/admin/status"), ("POST", "/admin/reload"), ("GET", "/admin/runs"),
    ("POST", "/admin/pin"), ("POST", "/admin/unpin"),
])
def test_refused_admin_calls_match_the_document(client, method, path):
    response = client.open(path, method=method, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert_conforms(response, path, method)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_routes_and_methods_use_the_shared_error_responses(client):
    assert_error_shape(client.get("/nope"), 404)
    assert_error_shape(client.get("/admin/nope"), 404)
    response = client.delete("/recommendations")
    assert_error_shape(response, 405)
    assert "GET" in response.headers["Allow"]
    assert_error_shape(client.get("/admin/reload"), 405)


def test_responses_over_a_run_history_match_the_document(history_app, history, admin_headers):
    client = history_app.test_client()
    reload = client.post("/admin/reload", headers=admin_headers)
    assert assert_conforms(reload, "/admin/reload", "POST")["after"] == history.good[1]

    for query, strategy in (("user_id=u-000001&n=5", "personalised"),
                            ("user_id=somebody-new", "cold_start"),
                            ("user_id=somebody-new&taste=jazz", None),
                            ("user_id=u-000001&n=100", "personalised"),
                            ("user_id=u-000001&city=London&category=rock,pop", "personalised"),
                            ("user_id=new&city=paris&city=Berlin&starts_after=2020-01-01",
                             "cold_start"),
                            ("user_id=u-000001&n=100&city=Atlantis", "personalised")):
        response = client.get(f"/recommendations?{query}")
        body = assert_conforms(response, "/recommendations")
        assert strategy is None or body["strategy"] == strategy
        if "city" in query:  # exact: nothing from another city, and a short list says so
            cities = {item["city"].lower() for item in body["items"]}
            assert cities <= {"london", "paris", "berlin"}
            assert body["exhausted"] == (len(body["items"]) < 10)
    assert assert_conforms(client.get("/readyz"), "/readyz")["run_id"] == history.good[1]

    status = assert_conforms(client.get("/admin/status", headers=admin_headers), "/admin/status")
    assert status["serving"]["run_id"] == history.good[1] and status["verdicts"]
    runs = assert_conforms(client.get("/admin/runs?limit=200", headers=admin_headers),
                           "/admin/runs")["runs"]
    assert {run["state"] for run in runs} == {"successful", "failed", "running"}

    def pin(run_id, **extra):
        response = client.post("/admin/pin", json={"run_id": run_id, **extra},
                               headers=admin_headers)
        assert_conforms(response, "/admin/pin", "POST")
        return response

    assert pin(history.good[0]).get_json()["after"] == history.good[0]
    status = assert_conforms(client.get("/admin/status", headers=admin_headers), "/admin/status")
    assert status["pin"]["run_id"] == history.good[0]
    assert pin("404404").status_code == 404
    assert pin(history.damaged).status_code == 422
    failed = next(run["run_id"] for run in runs if run["state"] == "failed")
    assert pin(failed).status_code == 409
    assert pin(int(history.good[1])).status_code == 200
    unpin = client.post("/admin/unpin", headers=admin_headers)
    assert assert_conforms(unpin, "/admin/unpin", "POST")["pinned"] is None
    assert pin(history.damaged, force=True).status_code == 200
    status = assert_conforms(client.get("/admin/status", headers=admin_headers), "/admin/status")
    assert status["serving"]["forced"] is True


# -- property-based: schemathesis against the app in-process -------------------


def _module_app(tmp_path_factory, history, **overrides):
    """An app over the run history with state of its own, shared by one module's fuzz tests."""
    home = tmp_path_factory.mktemp("openapi")
    settings = config.load({
        "LINEUP_HOME": str(home), "METAFLOW_USER": "lineup-test",
        "LINEUP_ADMIN_TOKEN": ADMIN_TOKEN, "LINEUP_CHECK_TIMEOUT": "60",
        "LINEUP_POLL_INTERVAL": "3600",
        "LINEUP_DECISION_ROOT": str(home / ".lineup"),  # its own, beside the shared history
    })
    return create_app({**settings, "DATASTORE_ROOT": history.datastore, **overrides})


@pytest.fixture(scope="module")
def served_app(tmp_path_factory, history):
    """An app serving the newest good run of the history."""
    app = _module_app(tmp_path_factory, history)
    assert app.extensions["lineup"].reload()["after"] == history.good[1]
    return app


@pytest.fixture(scope="module")
def modelless_app(tmp_path_factory, history):
    """An app that looks at the corrupt run only, so no model ever serves."""
    app = _module_app(tmp_path_factory, history, MAX_WALKBACK=1)
    assert app.extensions["lineup"].reload()["after"] is None
    return app


FUZZ = settings(max_examples=25, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

#: The only 5xx answers the contract allows: 503 while no model is ready.
WITHOUT_A_MODEL = {("GET", "/recommendations"), ("GET", "/readyz")}


def _call(case, app, *, model: bool) -> None:
    """Call the app in-process, run every schemathesis check, and allow no unplanned 5xx."""
    # Checks that send follow-up requests (ignored_auth, unsupported_method) use the
    # schema's transport, so the schema must know the app as well as this call.
    case.operation.schema.app = app
    response = case.call_and_validate(app=app, headers=ADMIN,
                                      excluded_checks=[not_a_server_error])
    allowed = response.status_code < 500 or (
        not model and response.status_code == 503
        and (case.method.upper(), case.path) in WITHOUT_A_MODEL)
    assert allowed, f"{case.method} {case.formatted_path} answered {response.status_code}: " \
                    f"{response.text[:300]}"


@SCHEMA.parametrize()
@FUZZ
def test_fuzz_with_a_model(case, served_app):
    _call(case, served_app, model=True)


@SCHEMA.parametrize()
@FUZZ
def test_fuzz_without_a_model(case, modelless_app):
    _call(case, modelless_app, model=False)
