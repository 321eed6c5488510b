"""Typed records of what selection decides and remembers.

Each record is a frozen dataclass with the JSON form the decision store
writes and the admin API shows; ``to_dict`` and ``from_dict`` convert, and a
key a newer Lineup wrote is ignored by an older one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

Record = TypeVar("Record")


def from_mapping(cls: type[Record], data: Mapping[str, Any]) -> Record:
    """Build ``cls`` from its JSON form, ignoring keys it does not know."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{key: value for key, value in data.items() if key in names})


class JsonRecord:
    """The JSON conversions every record shares."""

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[Record], data: Mapping[str, Any]) -> Record:
        """Rebuild the record from its JSON form."""
        return from_mapping(cls, data)


#: Failures that say more about the moment than about the run (a busy machine,
#: a store that blinked, a bug in a check): such a verdict is judged again at
#: the next selection instead of rejecting the run for good.
TRANSIENT_CHECKS = frozenset({"time_limit", "evaluation", "read_run"})


@dataclass(frozen=True)
class Verdict(JsonRecord):
    """The gate's judgement of one run, as remembered."""

    run_id: str
    passed: bool
    failed_checks: list[str]
    reason: str
    evaluated_at: float
    seconds: float
    fingerprint: str
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def transient(self) -> bool:
        """True when the run failed only for a reason that may pass by itself."""
        return not self.passed and bool(TRANSIENT_CHECKS.intersection(self.failed_checks))

    def summary(self) -> dict[str, Any]:
        """Return what the status shows of a verdict: everything but the per-check details."""
        return {"run_id": self.run_id, "passed": self.passed,
                "failed_checks": self.failed_checks, "reason": self.reason,
                "evaluated_at": self.evaluated_at}


@dataclass(frozen=True)
class ServingEntry(JsonRecord):
    """The run the decision names to serve, and since when."""

    run_id: str
    pathspec: str
    finished_at: float | None
    since: float
    forced: bool = False
    holdout_metrics: dict[str, float] | None = None


@dataclass(frozen=True)
class Pin(JsonRecord):
    """An operator's order to serve exactly one run until unpinned."""

    run_id: str
    force: bool
    at: float


@dataclass(frozen=True)
class CandidateEntry(JsonRecord):
    """One run a selection looked at, and what it made of it.

    ``verdict`` is "passed" or "rejected" when judged, "serving" when the walk
    stopped at the run already serving, "forced" for a forced pin.
    """

    run_id: str
    finished_at: float | None
    verdict: str
    remembered: bool
    failed_checks: list[str] | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form; an unjudged run has no failed_checks or reason."""
        data = asdict(self)
        if self.verdict in ("serving", "forced"):
            del data["failed_checks"], data["reason"]
        return data


@dataclass(frozen=True)
class Selection(JsonRecord):
    """What one selection did: the runs it looked at, before and after, any error."""

    selection: int
    reason: str
    pid: int
    started_at: float
    finished_at: float
    seconds: float
    before: str | None
    after: str | None
    changed: bool
    pinned: str | None
    candidates: list[dict[str, Any]]
    error: str | None


@dataclass(frozen=True)
class WorkerReport(JsonRecord):
    """What one worker serves, written every few seconds for the status."""

    pid: int
    run_id: str | None
    seen_at: float
    loaded_at: float | None
    last_error: dict[str, Any] | None


@dataclass
class Decision:
    """What serves and why, as written by the last selection."""

    generation: int = 0
    serving: ServingEntry | None = None
    pin: Pin | None = None
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    last_selection: Selection | None = None
    updated_at: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        """Build a decision from its JSON form, ignoring unknown keys."""
        def optional(record: type[Record], value: Mapping[str, Any] | None) -> Record | None:
            return from_mapping(record, value) if value else None

        return cls(
            generation=int(data.get("generation", 0)),
            serving=optional(ServingEntry, data.get("serving")),
            pin=optional(Pin, data.get("pin")),
            verdicts={run_id: Verdict.from_dict(verdict)
                      for run_id, verdict in (data.get("verdicts") or {}).items()},
            last_selection=optional(Selection, data.get("last_selection")),
            updated_at=data.get("updated_at"),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        def optional(record: JsonRecord | None) -> dict[str, Any] | None:
            return record.to_dict() if record is not None else None

        return {
            "generation": self.generation,
            "serving": optional(self.serving),
            "pin": optional(self.pin),
            "verdicts": {run_id: v.to_dict() for run_id, v in self.verdicts.items()},
            "last_selection": optional(self.last_selection),
            "updated_at": self.updated_at,
        }

    @property
    def serving_run_id(self) -> str | None:
        """The run id that serves, or None before any run passed."""
        return self.serving.run_id if self.serving else None
