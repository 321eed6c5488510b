"""Lineup: event recommendations served from the newest sane Metaflow run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask

from service import config

if TYPE_CHECKING:
    from service.decisions import DecisionStore
    from service.runs import RunSource


def create_app(test_config: Mapping[str, Any] | None = None, *,
               source: RunSource | None = None, store: DecisionStore | None = None) -> Flask:
    """Create the Flask app: settings from the environment, overlaid by ``test_config``.

    ``source`` and ``store`` replace the run source and decision store the
    settings name (:mod:`service.backends`), as tests hand in fakes. The
    model manager's watcher thread is not started here: gunicorn starts it in
    each worker after the fork (see gunicorn.conf.py), tests drive it.
    """
    from service import admin, api, errors, metrics, openapi
    from service.catalogue_follower import CatalogueFollower
    from service.manager import ModelManager

    app = Flask(__name__)
    app.config.from_mapping(config.load())
    if test_config is not None:
        app.config.from_mapping(test_config)
    app.json.sort_keys = False
    app.json.compact = True
    errors.init_app(app)
    metrics.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(openapi.bp)
    manager = ModelManager(app.config, source=source, store=store)
    app.extensions["lineup"] = manager
    app.extensions["lineup_catalogue"] = CatalogueFollower(app.config, manager.slot)
    return app
