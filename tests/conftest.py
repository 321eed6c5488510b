"""Shared fixtures, layered as in Flask's tutorial: settings -> app -> client."""

from __future__ import annotations

import pytest

from service import config, create_app

ADMIN_TOKEN = "test-admin-token"
REGION = "us-east-1"


@pytest.fixture
def settings(tmp_path):
    """Settings on a fresh LINEUP_HOME in a temporary folder."""
    return config.load({
        "LINEUP_HOME": str(tmp_path / "lineup"),
        "METAFLOW_USER": "lineup-test",
        "LINEUP_ADMIN_TOKEN": ADMIN_TOKEN,
        "LINEUP_CHECK_TIMEOUT": "60",
        "LINEUP_POLL_INTERVAL": "3600",
        # The shared decision store, beside this test's own runs (see history_settings).
        "LINEUP_DECISION_ROOT": str(tmp_path / ".lineup"),
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


@pytest.fixture(scope="session")
def history(tmp_path_factory):
    """A datastore holding, oldest first: good, good, damaged, failed, corrupt, unfinished."""
    from types import SimpleNamespace

    from tests import flows

    home = tmp_path_factory.mktemp("history")
    trainer = config.load({"LINEUP_HOME": str(home), "METAFLOW_USER": "lineup-trainer"})
    # Artifacts are content-addressed: each run gets its own world, so that
    # corrupting one run's model blob leaves the others intact.
    worlds = [flows.sample(home / f"data-{seed}", seed=seed) for seed in range(3)]
    good = [flows.good_run(trainer, worlds[0]), flows.good_run(trainer, worlds[1])]
    damaged = flows.damaged_run(trainer, worlds[0], home)
    flows.failed_run(trainer, home)
    corrupt = flows.good_run(trainer, worlds[2])
    flows.corrupt_model(trainer, corrupt)
    flows.unfinished_run(trainer, worlds[0])
    return SimpleNamespace(datastore=trainer["DATASTORE_ROOT"], good=good, damaged=damaged,
                           corrupt=corrupt)


@pytest.fixture
def history_settings(settings, history):
    """Settings reading the shared run history, with state of their own."""
    return {**settings, "DATASTORE_ROOT": history.datastore}


@pytest.fixture
def history_app(history_settings):
    """An app over the run history."""
    return create_app(history_settings)


# Training fixtures: a small sample world and a model fitted on it.

#: The small world of the training tests; big enough that the model beats popularity.
SMALL_WORLD = {"as_of": "2026-11-27", "seed": 0, "users": 1500, "events": 300,
               "interactions": 30_000}


@pytest.fixture(scope="session")
def small_world():
    """A small deterministic sample world as (Interactions, Catalogue)."""
    from service.training.sample_data import generate

    return generate(**SMALL_WORLD)


@pytest.fixture(scope="session")
def fitted_model(small_world):
    """An EventRecommender fitted on the small world (do not mutate)."""
    from service.recommender import EventRecommender

    log, catalogue = small_world
    return EventRecommender(n_components=16, n_clusters=4).fit(log, items=catalogue)


# A local AWS: the deploy tests' emulator, and the fleet's S3 decision store.

@pytest.fixture(scope="session")
def aws():
    """A moto server on a free port of 127.0.0.1; always stopped."""
    from types import SimpleNamespace

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    emulator = SimpleNamespace(url=f"http://{host}:{port}", server=server, port=port)
    try:
        yield emulator
    finally:
        emulator.server.stop()  # a test may have restarted it (tests/test_fleet.py)
