"""Build the run source and the decision store the settings ask for, in one place.

``create_app`` and the command-line tool both call these, so the service and
``lineup`` always read the same runs and the same decision. A new source or
store (an S3 decision store, another run tracker) plugs in here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.decisions import DecisionStore, FileDecisionStore
from service.runs import MetaflowRunSource, RunSource


def run_source(settings: Mapping[str, Any]) -> RunSource:
    """Return the source of candidate runs: the configured flow in Metaflow."""
    return MetaflowRunSource(settings)


def decision_store(settings: Mapping[str, Any]) -> DecisionStore:
    """Return the store of the decision that this instance's workers follow."""
    return FileDecisionStore(settings["STATE_DIR"])
