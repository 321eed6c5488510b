"""The Kubernetes manifest matches the service: probes, port, settings (no cluster here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from service import config

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "kubernetes" / "lineup.yaml"


@pytest.fixture(scope="module")
def objects():
    """The manifest's objects by kind."""
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


@pytest.fixture(scope="module")
def container(objects):
    (only,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def test_the_probes_ask_readiness_and_liveness_on_the_served_port(container):
    env = {e["name"]: e.get("value") for e in container["env"]}
    settings = config.load({k: v for k, v in env.items() if v is not None})
    port = int(settings["BIND"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port} and settings["BIND"].startswith("0.0.0.0:")
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Liveness must outlast a slow first selection: it never asks for a model.
    live = container["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 60


def test_the_environment_names_only_settings_the_service_reads(container):
    read = set(re.findall(r'"((?:LINEUP|METAFLOW)_[A-Z0-9_]+)"',
                          (ROOT / "service" / "config.py").read_text()))
    metaflow_own = {"METAFLOW_DEFAULT_METADATA", "METAFLOW_SERVICE_URL",
                    "METAFLOW_DEFAULT_DATASTORE"}  # read by Metaflow itself
    names = {e["name"] for e in container["env"]}
    assert names - read - metaflow_own == set()
    secret = next(e for e in container["env"] if e["name"] == "LINEUP_ADMIN_TOKEN")
    assert secret["valueFrom"]["secretKeyRef"] == {"name": "lineup-admin", "key": "token"}


def test_the_fleet_shares_one_decision_beside_the_s3_runs(container):
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = config.load(env)
    assert settings["METADATA"] == "service"
    assert settings["DECISION_ROOT"] == env["METAFLOW_DATASTORE_SYSROOT_S3"] + "/.lineup"
    assert settings["STATE_DIR"].startswith(
        container["volumeMounts"][0]["mountPath"])  # the instance-local cache


def test_the_disruption_budget_and_the_service_select_the_pods(objects, container):
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    budget = objects["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"] == labels
    assert 0 < budget["minAvailable"] < deployment["spec"]["replicas"]
    assert objects["Service"]["spec"]["selector"] == labels
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == "http"
