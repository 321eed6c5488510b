"""The run contract: what a training run stores and what the service reads of it.

The flow writes these artifacts, the run source reads them, the gate and the
sanity checks judge them, and docs/design.md describes them. Each name and
key is spelled here once; nothing else spells it again.
"""

from __future__ import annotations

import math
import platform
from datetime import UTC, datetime

#: The training flow's class name, the default of ``LINEUP_FLOW_NAME``.
FLOW_NAME = "LineupTrainFlow"

#: The artifact holding the fitted model that serves.
MODEL_ARTIFACT = "model"

#: The registered name of the model's class (:data:`service.servable.SERVABLES`).
MODEL_CLASS_ARTIFACT = "model_class"

#: Bootstrap 95% intervals of the model's holdout metrics: ``{metric: [low, high]}``.
INTERVALS_ARTIFACT = "holdout_intervals"

#: The paired difference model minus popularity on the same evaluation users:
#: ``{metric: {"mean": d, "low": lo, "high": hi}}`` (bootstrap 95%).
BASELINE_DIFFERENCE_ARTIFACT = "baseline_difference"

#: How the flow evaluated: ``{"kind": ..., "users": N, ...}`` (docs/training.md).
EVALUATION_PROTOCOL_ARTIFACT = "evaluation_protocol"

#: What the gate recomputes on the loaded model (service/training/probes.py):
#: ``{"users", "items", "model", "popularity", ...}``, read only by the gate.
PROBES_ARTIFACT = "gate_probes"
#: The items the flow fitted the model with (service.training.data.Catalogue), None
#: for a ratings file; the gate holds the model's item facts to it.
CATALOGUE_ARTIFACT = "catalogue"

#: Every point of the hyperparameter search: ``[{**params, **metrics}, ...]``.
SEARCH_RESULTS_ARTIFACT = "search_results"

#: The small artifacts the cheap checks and operators read before the model
#: is loaded; a missing one reads as None.
SUMMARY_ARTIFACTS = (
    "holdout_metrics", "baseline_metrics", "library_versions", "golden_users",
    "schema_version", "data_fingerprint", "as_of", INTERVALS_ARTIFACT,
    BASELINE_DIFFERENCE_ARTIFACT, EVALUATION_PROTOCOL_ARTIFACT, MODEL_CLASS_ARTIFACT,
)

#: The metric the flow selects by and the gate compares with.
PRIMARY_METRIC = "ndcg@10"

#: The keys of ``holdout_metrics`` (and ``baseline_metrics``).
METRIC_KEYS = ("precision@10", "recall@10", PRIMARY_METRIC, "coverage")

#: For each library the run records, how many leading release numbers must
#: match this process's for its pickled model to load faithfully.
LIBRARY_RELEASE_PARTS = {"python": 2, "numpy": 1, "scikit-learn": 2}


def library_versions() -> dict[str, str]:
    """Return this process's versions of the libraries a pickled model depends on."""
    import numpy
    import sklearn

    return {"python": platform.python_version(), "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__}


def iso_timestamp(epoch: float) -> str | None:
    """Format epoch seconds as ISO 8601 UTC to the second; None for a non-finite time."""
    if not math.isfinite(epoch):
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
