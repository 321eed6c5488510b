"""Build the run source and the decision store the settings ask for, in one place.

``create_app`` and the command-line tool both call these, so the service and
``lineup`` always read the same runs and the same decision. A new source or
store (an S3 decision store, another run tracker) plugs in here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pathlib import Path

from service.decisions import DecisionStore, FileDecisionStore
from service.runs import MetaflowRunSource, RunSource
from service.stores.media import FolderMedium, Medium, S3Medium
from service.stores.shared import SharedDecisionStore


def run_source(settings: Mapping[str, Any]) -> RunSource:
    """Return the source of candidate runs: the configured flow in Metaflow."""
    return MetaflowRunSource(settings)


def decision_store(settings: Mapping[str, Any]) -> DecisionStore:
    """Return the store of the decision that this instance's workers follow.

    The fleet's, beside the runs (``DECISION_ROOT``: a folder or an s3://
    URL, under the flow's name); or, when ``DECISION_ROOT`` is the state
    folder, this instance's own (see :mod:`service.stores`).
    """
    root = settings["DECISION_ROOT"]
    if root == settings["STATE_DIR"]:
        return FileDecisionStore(settings["STATE_DIR"])
    flow = settings["FLOW_NAME"]
    medium: Medium
    if root.startswith("s3://"):
        medium = S3Medium(f"{root}/{flow}", endpoint_url=settings["S3_ENDPOINT_URL"])
    else:
        medium = FolderMedium(Path(root) / flow, anchor=Path(root).parent)
    return SharedDecisionStore(medium, settings["STATE_DIR"], instance=settings["INSTANCE_ID"],
                               lease_term=float(settings["LEASE_SECONDS"]),
                               skew=float(settings["CLOCK_SKEW"]))
