"""The selection policy: which run to serve, as a pure function of what is known.

Like TF Serving's ``AspiredVersionPolicy``, it does no I/O: given the
candidates (successful runs, newest first), the remembered verdicts, the pin
and the fingerprint of today's checks, :func:`next_step` either asks for one
run to be judged or says how the walk ended. The selector
(:mod:`service.selection`) judges, records the verdict and asks again.

The walk goes newest first and stops at the first run that passes, at the
run already serving (when these checks judged it), or after ``max_walkback``
candidates. A pin walks its one run; a forced pin takes it unjudged.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from service.records import CandidateEntry, Pin, Verdict
from service.runs import RunRecord


@dataclass(frozen=True)
class Judge:
    """The walk needs a fresh verdict on this run before it can go on."""

    record: RunRecord


@dataclass(frozen=True)
class Outcome:
    """How a walk ended: the run to serve (None keeps what serves) and what it looked at."""

    chosen: RunRecord | None
    forced: bool = False
    looked: list[CandidateEntry] = field(default_factory=list)


def _entry(record: RunRecord, verdict: Verdict, remembered: bool) -> CandidateEntry:
    return CandidateEntry(run_id=record.run_id, finished_at=record.finished_at,
                          verdict="passed" if verdict.passed else "rejected",
                          remembered=remembered, failed_checks=verdict.failed_checks,
                          reason=verdict.reason)


def usable_verdict(verdict: Verdict | None, fingerprint: str,
                   judged_now: bool) -> Verdict | None:
    """Return the verdict when it may decide, or None when the run must be judged again.

    A verdict reached in this selection always decides, so one selection never
    judges a run twice. A remembered one decides when today's checks reached
    it (same fingerprint) and it is not transient.
    """
    if verdict is None or judged_now:
        return verdict
    if verdict.fingerprint != fingerprint or verdict.transient:
        return None
    return verdict


def next_step(candidates: Sequence[RunRecord], *, serving_run_id: str | None,
              pin: Pin | None, verdicts: Mapping[str, Verdict], fingerprint: str,
              max_walkback: int, judged_now: Collection[str] = ()) -> Judge | Outcome:
    """Return the next thing a selection must do: judge a run, or finish with an outcome.

    ``candidates`` are successful runs newest first (for a pin, the pinned run
    alone); ``judged_now`` holds the runs this selection already judged.
    """
    looked: list[CandidateEntry] = []
    walk = candidates[:1] if pin else candidates[:max(0, max_walkback)]
    for record in walk:
        if pin is not None and pin.force:
            looked.append(CandidateEntry(run_id=record.run_id, finished_at=record.finished_at,
                                         verdict="forced", remembered=False))
            return Outcome(record, forced=True, looked=looked)
        verdict = usable_verdict(verdicts.get(record.run_id), fingerprint,
                                 record.run_id in judged_now)
        # Nothing newer passed: the serving run stays when these checks passed it
        # before; otherwise (an upgrade, new thresholds, a forced pin) it is judged.
        if (record.run_id == serving_run_id and pin is None and verdict is not None
                and verdict.passed and record.run_id not in judged_now):
            looked.append(CandidateEntry(run_id=record.run_id, finished_at=record.finished_at,
                                         verdict="serving", remembered=True))
            return Outcome(None, looked=looked)
        if verdict is None:
            return Judge(record)
        looked.append(_entry(record, verdict, remembered=record.run_id not in judged_now))
        if verdict.passed:
            return Outcome(record, looked=looked)
    return Outcome(None, looked=looked)
