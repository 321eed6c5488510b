"""Shared fixtures, layered as in Flask's tutorial: settings -> app -> client."""

from __future__ import annotations

import pytest

from service import config, create_app

ADMIN_TOKEN = "test-admin-token"


@pytest.fixture
def settings(tmp_path):
    """Settings on a fresh LINEUP_HOME in a temporary folder."""
    return config.load({
        "LINEUP_HOME": str(tmp_path / "lineup"),
        "METAFLOW_USER": "lineup-test",
        "LINEUP_ADMIN_TOKEN": ADMIN_TOKEN,
        "LINEUP_CHECK_TIMEOUT": "60",
        "LINEUP_POLL_INTERVAL": "3600",
    })


@pytest.fixture
def app(settings):
    """A fresh app on those settings; its watcher thread is not started."""
    return create_app(settings)


@pytest.fixture
def client(app):
    """A test client for the app."""
    return app.test_client()


@pytest.fixture
def admin_headers():
    """The Authorization header the admin API wants."""
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
