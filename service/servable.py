"""The servable: what the gate, the API and the checks need from a model.

Everything above the model (loader, gate, sanity checks, API) depends on the
:class:`Servable` protocol, never on a model class. A new model class plugs
in with its own module and one line in :data:`SERVABLES`; the flow trains it
with ``--model <name>``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import numpy as np

#: Every model class Lineup can serve, by the name a run records in ``model_class``.
SERVABLES: dict[str, str] = {
    "event": "service.recommender:EventRecommender",
    "item_knn": "service.knn:ItemKNNRecommender",
    "ease": "service.ease:EASERecommender",
}

#: The model the flow trains unless told otherwise.
DEFAULT_SERVABLE = "event"


class Recommendation(NamedTuple):
    """One ranked list: item indices into ``item_ids_``, their ids, scores and the strategy."""

    items: np.ndarray
    item_ids: np.ndarray
    scores: np.ndarray
    strategy: str


@dataclass(frozen=True)
class ArraySpec:
    """One learned array as its model declares it, for the integrity checks.

    ``dims`` names each axis: "users" (the length of ``user_ids_``), "items"
    (of ``item_ids_``), any other name that must agree wherever it is used
    (e.g. "factors"), or None for any length. ``values`` is "finite" (no NaN
    nor infinity), "no_nan" (infinity allowed) or "any" (not numbers).
    """

    dims: tuple[str | None, ...]
    values: str = "finite"


@runtime_checkable
class Servable(Protocol):
    """A fitted recommender the service can load, check and serve.

    The catalogue arrays are in start order (``item_starts_at_`` ascending),
    so the items upcoming at any instant are a suffix; ``user_ids_`` is sorted.
    """

    SCHEMA_VERSION: ClassVar[int]
    schema_version_: int
    user_ids_: np.ndarray
    item_ids_: np.ndarray
    item_titles_: np.ndarray
    item_categories_: np.ndarray
    item_starts_at_: np.ndarray

    def recommend(self, user_id: str, n: int = 10, as_of: float | None = None, *,
                  taste: str | None = None, use_ranking: bool = True) -> Recommendation:
        """Return up to n upcoming items for one user, best first.

        ``use_ranking=False`` computes the list afresh where a model keeps a
        precomputed ranking (the gate compares the two); others ignore it.
        """

    def recommend_batch(self, user_ids: Sequence[str], n: int = 10,
                        as_of: float | None = None) -> list[Recommendation]:
        """Return ``recommend(user_id, n, as_of)`` for each user, as of one instant."""

    def score_catalogue(self, user_ids: Sequence[str]) -> np.ndarray:
        """Return each user's score of every item (users x items), before seen items are set aside.

        What recommend ranks, over the whole catalogue; an unknown user's row
        is the cold-start popularity. The gate measures the model by it.
        """

    def declared_arrays(self) -> Mapping[str, ArraySpec]:
        """Name every learned array with its shape and values, for the integrity checks."""

    def consistency_problems(self) -> list[str]:
        """Describe what breaks the model's own invariants beyond the declared shapes."""


def servable_class(name: str | None) -> type:
    """Return the class registered under ``name`` (None: the default); KeyError if none."""
    module, _, attribute = SERVABLES[name or DEFAULT_SERVABLE].partition(":")
    return getattr(importlib.import_module(module), attribute)


def servable_name(model: Any) -> str | None:
    """Return the registered name of the model's class, or None when it is not registered."""
    for name in SERVABLES:
        if type(model) is servable_class(name):
            return name
    return None


def schema_problem(model: Any) -> str | None:
    """Say why this code cannot serve ``model`` (an unknown class, another schema), or None."""
    name = servable_name(model)
    if name is None:
        return (f"{type(model).__module__}.{type(model).__qualname__} is not a registered "
                f"servable ({', '.join(SERVABLES)})")
    found, expected = getattr(model, "schema_version_", None), type(model).SCHEMA_VERSION
    if found != expected:
        return (f"the {name} model is of schema {found!r}, and this Lineup serves schema "
                f"{expected}: train a new run")
    return None


def schema_versions() -> dict[str, int]:
    """Return the schema every registered servable is at."""
    return {name: servable_class(name).SCHEMA_VERSION for name in SERVABLES}
