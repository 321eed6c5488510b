"""Integrity checks: is the artifact a sound, loadable EventRecommender for this process?

``check_library_versions`` and ``check_run_schema_version`` need only the run's
small artifacts; the rest inspect the loaded model's learned arrays.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from sanity_tests.context import CheckFailure, RunContext
from service.contract import LIBRARY_RELEASE_PARTS, library_versions

_SHOWN = 5  # examples quoted in a message before "..."


def _estimator_class() -> type:
    # Imported here so a broken recommender module fails the check, not the import.
    from service.recommender import EventRecommender

    return EventRecommender


def _release(version: str, parts: int) -> tuple[int, ...] | None:
    """Return the first ``parts`` numbers of a version string, or None if unparsable."""
    numbers = re.findall(r"\d+", str(version).split("+")[0])[:parts]
    if len(numbers) < parts:
        return None
    return tuple(int(n) for n in numbers)


def check_library_versions(model: Any, context: RunContext) -> None:
    """Require python major.minor, numpy major and scikit-learn major.minor as in this process."""
    stored = context.library_versions
    if stored is None:
        raise CheckFailure("run stored no library_versions; cannot tell if the model will load")
    running = library_versions()
    problems = []
    for name, parts in LIBRARY_RELEASE_PARTS.items():
        if name not in stored:
            problems.append(f"{name} not recorded")
            continue
        trained, here = _release(stored[name], parts), _release(running[name], parts)
        if trained is None or trained != here:
            problems.append(f"{name} trained {stored[name]}, serving {running[name]}")
    if problems:
        raise CheckFailure(
            f"library versions incompatible ({'; '.join(problems)}); retrain with the "
            f"service's environment or deploy the service with the trainer's")


def expected_schema_version() -> int:
    """Return the model schema this code serves."""
    return _estimator_class().SCHEMA_VERSION


def check_run_schema_version(model: Any, context: RunContext) -> None:
    """Reject a run whose stored schema_version differs from this code's, before loading."""
    expected = expected_schema_version()
    if context.schema_version is not None and context.schema_version != expected:
        raise CheckFailure(
            f"run stored schema_version {context.schema_version}, this service reads "
            f"EventRecommender schema {expected}; retrain with the current code")


def check_fitted_estimator(model: Any, context: RunContext) -> None:
    """Require a fitted EventRecommender."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    cls = _estimator_class()
    if not isinstance(model, cls):
        raise CheckFailure(
            f"artifact 'model' is a {type(model).__module__}.{type(model).__qualname__}, "
            f"not a {cls.__module__}.{cls.__qualname__}")
    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise CheckFailure(f"model is not fitted: {exc}") from None


def check_schema_version(model: Any, context: RunContext) -> None:
    """Require model.schema_version_ and the run's schema_version to equal SCHEMA_VERSION."""
    expected = expected_schema_version()
    problems = []
    found = getattr(model, "schema_version_", None)
    if found != expected:
        problems.append(f"model.schema_version_ is {found!r}")
    if context.schema_version != expected:
        problems.append(f"run artifact schema_version is {context.schema_version!r}")
    if problems:
        raise CheckFailure(
            f"{' and '.join(problems)}, expected {expected}; the artifact was written by "
            f"other code, retrain with the current EventRecommender")


def check_no_load_warnings(model: Any, context: RunContext) -> None:
    """Require that unpickling the artifact raised no warnings (e.g. InconsistentVersionWarning)."""
    warnings = list(context.load_warnings)
    if not warnings:
        return
    hint = ("scikit-learn versions differ between trainer and service; retrain or align versions"
            if any("InconsistentVersionWarning" in w for w in warnings)
            else "the unpickled model may not behave as trained")
    shown = "; ".join(w.strip()[:200] for w in warnings[:3])
    more = f" (+{len(warnings) - 3} more)" if len(warnings) > 3 else ""
    raise CheckFailure(f"{len(warnings)} warning(s) while loading the model: {shown}{more}; {hint}")


def _array(model: Any, name: str, problems: list[str]) -> np.ndarray | None:
    value = getattr(model, name, None)
    if value is None:
        problems.append(f"{name} is missing")
        return None
    return np.asarray(value)


def _expect(problems: list[str], name: str, array: np.ndarray | None, shape: tuple) -> None:
    """Record a problem unless ``array`` has ``shape`` (None in shape means any length)."""
    if array is None:
        return
    if array.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(array.shape, shape)):
        want = "(" + ", ".join("?" if w is None else str(w) for w in shape) + (
            ",)" if len(shape) == 1 else ")")
        problems.append(f"{name} has shape {array.shape}, expected {want}")


def check_array_shapes(model: Any, context: RunContext) -> None:
    """Require the learned arrays to agree in length, width and index ranges."""
    p: list[str] = []
    user_ids = _array(model, "user_ids_", p)
    item_ids = _array(model, "item_ids_", p)
    if user_ids is None or item_ids is None or user_ids.ndim != 1 or item_ids.ndim != 1:
        raise CheckFailure(f"model arrays unusable: {'; '.join(p) or 'ids are not 1-D'}")
    n_users, n_items = len(user_ids), len(item_ids)
    if n_users == 0 or n_items == 0:
        p.append(f"model knows {n_users} users and {n_items} items")
    if n_users and np.any(user_ids[1:] <= user_ids[:-1]):
        p.append("user_ids_ is not sorted and unique")
    if len(np.unique(item_ids)) != n_items:
        p.append("item_ids_ has duplicates")

    user_factors = _array(model, "user_factors_", p)
    item_factors = _array(model, "item_factors_", p)
    _expect(p, "user_factors_", user_factors, (n_users, None))
    _expect(p, "item_factors_", item_factors, (n_items, None))
    if (user_factors is not None and item_factors is not None and user_factors.ndim == 2
            and item_factors.ndim == 2 and user_factors.shape[1] != item_factors.shape[1]):
        p.append(f"factor widths differ: users {user_factors.shape[1]}, "
                 f"items {item_factors.shape[1]}")
    for name in ("item_titles_", "item_categories_", "item_starts_at_", "item_popularity_"):
        _expect(p, name, _array(model, name, p), (n_items,))
    if getattr(model, "item_bias_", None) is not None:  # optional: the popularity prior
        _expect(p, "item_bias_", np.asarray(model.item_bias_), (n_items,))
    starts = getattr(model, "item_starts_at_", None)
    if isinstance(starts, np.ndarray) and starts.shape == (n_items,) and \
            np.any(np.diff(starts) < 0):
        p.append("item_starts_at_ is not ascending; recommend relies on items in start order")

    indptr = _array(model, "seen_indptr_", p)
    indices = _array(model, "seen_indices_", p)
    _expect(p, "seen_indptr_", indptr, (n_users + 1,))
    _expect(p, "seen_indices_", indices, (None,))
    if indptr is not None and indices is not None and indptr.shape == (n_users + 1,):
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != len(indices):
            p.append(f"seen_indptr_ is not a valid CSR index pointer (starts {indptr[0]}, "
                     f"ends {indptr[-1]}, {len(indices)} seen_indices_)")
    if indices is not None and indices.size and (indices.min() < 0 or indices.max() >= n_items):
        p.append(f"seen_indices_ spans [{indices.min()}, {indices.max()}], outside [0, {n_items})")

    labels = _array(model, "cluster_labels_", p)
    user_clusters = _array(model, "user_clusters_", p)
    scores = _array(model, "cluster_item_scores_", p)
    _expect(p, "cluster_labels_", labels, (None,))
    n_clusters = len(labels) if labels is not None and labels.ndim == 1 else None
    _expect(p, "user_clusters_", user_clusters, (n_users,))
    _expect(p, "cluster_item_scores_", scores, (n_clusters, n_items))
    if (user_clusters is not None and user_clusters.size and n_clusters is not None
            and (user_clusters.min() < 0 or user_clusters.max() >= n_clusters)):
        p.append(f"user_clusters_ spans [{user_clusters.min()}, {user_clusters.max()}], "
                 f"outside [0, {n_clusters})")
    _check_ranking(model, n_users, n_items, p)
    if p:
        raise CheckFailure(f"{len(p)} inconsistent model array(s): {'; '.join(p)}")


def _check_ranking(model: Any, n_users: int, n_items: int, p: list[str]) -> None:
    """Record problems with the users' fit-time ranking (item indices, -1 for padding)."""
    ranking = _array(model, "user_ranking_", p)
    _expect(p, "user_ranking_", ranking, (n_users, None))
    if ranking is None or ranking.ndim != 2:
        return
    _expect(p, "user_ranking_scores_", _array(model, "user_ranking_scores_", p), ranking.shape)
    ranked_from = getattr(model, "ranked_from_", None)
    if not isinstance(ranked_from, (int, np.integer)) or not 0 <= ranked_from <= n_items:
        p.append(f"ranked_from_ is {ranked_from!r}, expected an item index in [0, {n_items}]")
    elif ranking.size and (ranking.max() >= n_items
                           or np.any((ranking < ranked_from) & (ranking != -1))):
        p.append(f"user_ranking_ spans [{ranking.min()}, {ranking.max()}], outside "
                 f"[{ranked_from}, {n_items}) and padding -1")


#: Arrays whose every value must be finite (item_starts_at_ may be +inf, never NaN).
FINITE_ARRAYS = ("user_factors_", "item_factors_", "item_popularity_", "cluster_item_scores_",
                 "user_ranking_scores_")


def check_finite_arrays(model: Any, context: RunContext) -> None:
    """Require no NaN or infinity in factor, popularity and cluster score arrays."""
    problems = []
    optional = tuple(name for name in ("item_bias_", "feature_weights_")
                     if getattr(model, name, None) is not None)
    for name in FINITE_ARRAYS + optional + ("item_starts_at_",):
        value = getattr(model, name, None)
        if value is None:
            problems.append(f"{name} is missing")
            continue
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            problems.append(f"{name} has dtype {array.dtype}, expected numbers")
            continue
        bad = np.isnan(array) if name == "item_starts_at_" else ~np.isfinite(array)
        if bad.any():
            where = np.argwhere(bad)[:_SHOWN]
            at = ", ".join(str(tuple(int(i) for i in idx)) for idx in where)
            kind = "NaN" if name == "item_starts_at_" else "non-finite"
            problems.append(f"{name} has {int(bad.sum())} {kind} value(s) at {at}"
                            + (" ..." if bad.sum() > _SHOWN else ""))
    if problems:
        raise CheckFailure("; ".join(problems))
