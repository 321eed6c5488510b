"""Integrity checks: is the artifact a sound, loadable servable for this process?

``check_library_versions`` and ``check_run_schema_version`` need only the run's
small artifacts; the rest inspect the loaded model's learned arrays, as the
model declares them (:meth:`service.servable.Servable.declared_arrays`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from sanity_tests.context import CheckFailure, RunContext
from service.contract import LIBRARY_RELEASE_PARTS, iso_timestamp, library_versions
from service.servable import ArraySpec, servable_class
from service.training.probes import id_index, lookup

_SHOWN = 5  # examples quoted in a message before "..."


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


def _expected_class(context: RunContext) -> type:
    try:
        return servable_class(context.model_class)
    except KeyError:
        raise CheckFailure(f"run stored model_class {context.model_class!r}, which this "
                           "Lineup does not serve") from None


def check_run_schema_version(model: Any, context: RunContext) -> None:
    """Reject a run whose stored schema_version differs from this code's, before loading."""
    cls = _expected_class(context)
    if context.schema_version is not None and context.schema_version != cls.SCHEMA_VERSION:
        raise CheckFailure(
            f"run stored schema_version {context.schema_version}, this service reads "
            f"{cls.__name__} schema {cls.SCHEMA_VERSION}; retrain with the current code")


def check_fitted_estimator(model: Any, context: RunContext) -> None:
    """Require a fitted model of the class the run says it trained."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    cls = _expected_class(context)
    if type(model) is not cls:
        raise CheckFailure(
            f"artifact 'model' is a {type(model).__module__}.{type(model).__qualname__}, "
            f"not a {cls.__module__}.{cls.__qualname__}")
    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise CheckFailure(f"model is not fitted: {exc}") from None


def check_schema_version(model: Any, context: RunContext) -> None:
    """Require model.schema_version_ and the run's schema_version to equal SCHEMA_VERSION."""
    cls = _expected_class(context)
    expected = cls.SCHEMA_VERSION
    problems = []
    found = getattr(model, "schema_version_", None)
    if found != expected:
        problems.append(f"model.schema_version_ is {found!r}")
    if context.schema_version != expected:
        problems.append(f"run artifact schema_version is {context.schema_version!r}")
    if problems:
        raise CheckFailure(
            f"{' and '.join(problems)}, expected {expected}; the artifact was written by "
            f"other code, retrain with the current {cls.__name__}")


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


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join("?" if w is None else str(w) for w in shape) + (
        ",)" if len(shape) == 1 else ")")


def _declared(model: Any) -> dict[str, ArraySpec]:
    declare = getattr(model, "declared_arrays", None)
    if declare is None:
        raise CheckFailure("the model declares no arrays (declared_arrays); it is not a servable")
    return dict(declare())


def check_array_shapes(model: Any, context: RunContext) -> None:
    """Require every declared array, with lengths that agree, and the model's own invariants."""
    problems: list[str] = []
    user_ids = np.asarray(getattr(model, "user_ids_", ()))
    item_ids = np.asarray(getattr(model, "item_ids_", ()))
    if user_ids.ndim != 1 or item_ids.ndim != 1:
        raise CheckFailure("model arrays unusable: user_ids_ and item_ids_ must be 1-D")
    sizes: dict[str, int] = {"users": len(user_ids), "items": len(item_ids)}
    if not (sizes["users"] and sizes["items"]):
        problems.append(f"model knows {sizes['users']} users and {sizes['items']} items")
    if sizes["users"] and np.any(user_ids[1:] <= user_ids[:-1]):
        problems.append("user_ids_ is not sorted and unique")
    if len(np.unique(item_ids)) != sizes["items"]:
        problems.append("item_ids_ has duplicates")
    for name, spec in _declared(model).items():
        value = getattr(model, name, None)
        if value is None:
            problems.append(f"{name} is missing")
            continue
        array = np.asarray(value)
        if array.ndim != len(spec.dims):
            problems.append(f"{name} has {array.ndim} dimension(s), expected {len(spec.dims)}")
            continue
        want = tuple(sizes.setdefault(dim, got) if dim else None
                     for dim, got in zip(spec.dims, array.shape))
        if any(w is not None and w != got for w, got in zip(want, array.shape)):
            named = ", ".join(f"{dim} {sizes[dim]}" for dim in spec.dims
                              if dim and dim not in ("users", "items"))
            problems.append(f"{name} has shape {array.shape}, expected {_shape_text(want)}"
                            + (f" ({named} as in the arrays before it)" if named else ""))
    starts = np.asarray(getattr(model, "item_starts_at_", ()))
    # Compared, not subtracted: on ratings every start is inf, and inf - inf is NaN.
    if starts.shape == item_ids.shape and np.any(starts[1:] < starts[:-1]):
        problems.append("item_starts_at_ is not ascending; recommend relies on items in "
                        "start order")
    if not problems:  # the model's own invariants assume the shapes above
        problems.extend(model.consistency_problems())
    if problems:
        raise CheckFailure(f"{len(problems)} inconsistent model array(s): {'; '.join(problems)}")


def check_finite_arrays(model: Any, context: RunContext) -> None:
    """Require no NaN or infinity in the numeric arrays the model declares finite."""
    problems = []
    for name, spec in _declared(model).items():
        if spec.values == "any":
            continue
        value = getattr(model, name, None)
        if value is None:
            problems.append(f"{name} is missing")
            continue
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            problems.append(f"{name} has dtype {array.dtype}, expected numbers")
            continue
        bad = np.isnan(array) if spec.values == "no_nan" else ~np.isfinite(array)
        if bad.any():
            where = np.argwhere(bad)[:_SHOWN]
            at = ", ".join(str(tuple(int(i) for i in idx)) for idx in where)
            kind = "NaN" if spec.values == "no_nan" else "non-finite"
            problems.append(f"{name} has {int(bad.sum())} {kind} value(s) at {at}"
                            + (" ..." if bad.sum() > _SHOWN else ""))
    if problems:
        raise CheckFailure("; ".join(problems))


#: The model's facts about each item and the catalogue column each was copied
#: from at fit time (service/catalogued.py ``_index_data``).
ITEM_FACTS = (("item_titles_", "title"), ("item_categories_", "category"),
              ("item_starts_at_", "starts_at"), ("item_cities_", "city"))


def _fact(value: Any, column: str) -> str:
    """Show one item fact: a start as an ISO time, anything else as its Python repr."""
    value = value.item() if isinstance(value, np.generic) else value
    if column == "starts_at" and isinstance(value, float) and np.isfinite(value):
        return iso_timestamp(value)
    return repr(value)


def check_catalogue_matches_run(model: Any, context: RunContext) -> None:
    """Require every item of the run's catalogue in the model, with the catalogue's facts.

    The flow fitted the model with ``context.catalogue``. A model whose starts
    moved lists past events as upcoming (or hides upcoming ones), one whose
    cities or categories moved answers a filter with other events, and one
    whose titles moved shows the wrong names. A run without a catalogue (a
    ratings file) has nothing to compare.
    """
    catalogue = context.catalogue
    if catalogue is None or not len(catalogue):
        return
    ids = np.asarray(catalogue.item_id).astype(str)
    columns = lookup(id_index(model.item_ids_), ids)
    problems = []
    missing = ids[columns < 0]
    if missing.size:
        problems.append(f"{missing.size} of {ids.size} catalogue items are not in the model "
                        f"({', '.join(missing[:_SHOWN])}{' ...' if missing.size > _SHOWN else ''})")
    known = columns >= 0
    for attribute, column in ITEM_FACTS:
        expected = getattr(catalogue, column)
        if expected is None:
            continue
        want = np.asarray(expected)[known]
        got = np.asarray(getattr(model, attribute))[columns[known]]
        if column == "starts_at":
            wrong = ~((want.astype(np.float64) == got) | (np.isnan(want) & np.isnan(got)))
        else:
            wrong = want.astype(str) != got.astype(str)
        if wrong.any():
            first = int(np.flatnonzero(wrong)[0])
            problems.append(f"{int(wrong.sum())} of {int(known.sum())} items' {column} differ, "
                            f"e.g. {str(ids[known][first])!r}: {_fact(got[first], column)} in "
                            f"the model, {_fact(want[first], column)} in the run's catalogue")
    if problems:
        raise CheckFailure("; ".join(problems) + "; the model's catalogue is not the one the "
                           "run fitted it with")
