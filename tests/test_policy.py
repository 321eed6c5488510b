"""The selection policy on its own, and the selector over the in-memory fakes: no Metaflow."""

from __future__ import annotations

import pytest

from service.gate import Evaluation
from service.policy import Judge, Outcome, next_step
from service.records import Pin, Verdict
from service.selection import PinRefused, SelectionError, Selector
from tests.fakes import FakeDecisionStore, FakeRunSource, run

FINGERPRINT = "checks-today"
NEWEST_FIRST = [run("5"), run("4"), run("3"), run("2"), run("1")]


def verdict(run_id: str, passed: bool, *, failed: tuple[str, ...] = ("check_x",),
            fingerprint: str = FINGERPRINT) -> Verdict:
    return Verdict(run_id=run_id, passed=passed, failed_checks=[] if passed else list(failed),
                   reason="passed every check" if passed else f"{failed[0]}: bad",
                   evaluated_at=1.0, seconds=0.1, fingerprint=fingerprint)


def walk(passing: set[str], *, remembered: dict[str, Verdict] | None = None,
         serving: str | None = None, pin: Pin | None = None, max_walkback: int = 10,
         candidates=NEWEST_FIRST, transient: set[str] = frozenset()) -> tuple[Outcome, list]:
    """Drive the policy as the selector does, judging with ``passing``; return (outcome, judged)."""
    verdicts = dict(remembered or {})
    judged: list[str] = []
    while True:
        step = next_step(candidates, serving_run_id=serving, pin=pin, verdicts=verdicts,
                         fingerprint=FINGERPRINT, max_walkback=max_walkback, judged_now=judged)
        if isinstance(step, Outcome):
            return step, judged
        assert isinstance(step, Judge) and step.record.run_id not in judged
        run_id = step.record.run_id
        judged.append(run_id)
        failed = ("time_limit",) if run_id in transient else ("check_x",)
        verdicts[run_id] = verdict(run_id, run_id in passing, failed=failed)


def test_the_newest_run_that_passes_is_chosen():
    outcome, judged = walk({"5", "4"})
    assert outcome.chosen.run_id == "5" and judged == ["5"]
    assert [(e.run_id, e.verdict, e.remembered) for e in outcome.looked] == [("5", "passed", False)]


def test_the_walk_goes_back_past_rejected_runs():
    outcome, judged = walk({"3"})
    assert outcome.chosen.run_id == "3" and judged == ["5", "4", "3"]
    assert [e.verdict for e in outcome.looked] == ["rejected", "rejected", "passed"]


def test_when_all_fail_nothing_is_chosen():
    outcome, judged = walk(set())
    assert outcome.chosen is None and judged == ["5", "4", "3", "2", "1"]


def test_the_walk_stops_at_the_limit():
    outcome, judged = walk({"1"}, max_walkback=3)
    assert outcome.chosen is None and judged == ["5", "4", "3"]


def test_the_walk_stops_at_the_serving_run_its_checks_passed():
    remembered = {"3": verdict("3", True)}
    outcome, judged = walk(set(), remembered=remembered, serving="3")
    assert outcome.chosen is None and judged == ["5", "4"]
    assert outcome.looked[-1].verdict == "serving"


def test_remembered_verdicts_are_not_judged_again():
    remembered = {"5": verdict("5", False), "4": verdict("4", True)}
    outcome, judged = walk(set(), remembered=remembered)
    assert outcome.chosen.run_id == "4" and judged == []
    assert all(entry.remembered for entry in outcome.looked)


def test_changed_checks_judge_every_run_again_even_the_serving_one():
    remembered = {run_id: verdict(run_id, True, fingerprint="checks-before")
                  for run_id in ("5", "4", "3")}
    outcome, judged = walk({"3"}, remembered=remembered, serving="3")
    assert judged == ["5", "4", "3"] and outcome.chosen.run_id == "3"


def test_a_serving_run_that_now_fails_is_kept_when_nothing_passes():
    remembered = {"3": verdict("3", True, fingerprint="checks-before")}
    outcome, judged = walk(set(), remembered=remembered, serving="3", candidates=[run("3")])
    assert outcome.chosen is None and judged == ["3"]
    assert outcome.looked[0].verdict == "rejected"


def test_transient_rejections_are_judged_again_once_per_selection():
    remembered = {"5": verdict("5", False, failed=("time_limit",))}
    outcome, judged = walk({"5"}, remembered=remembered)
    assert judged == ["5"] and outcome.chosen.run_id == "5"
    outcome, judged = walk(set(), transient={"5"}, candidates=[run("5"), run("4")])
    assert judged == ["5", "4"] and outcome.chosen is None  # not judged twice in one walk


def test_a_pin_walks_only_its_run():
    pin = Pin(run_id="2", force=False, at=0.0)
    outcome, judged = walk({"5", "2"}, pin=pin, candidates=[run("2")])
    assert outcome.chosen.run_id == "2" and judged == ["2"]
    outcome, _ = walk({"5"}, pin=pin, candidates=[run("2")])
    assert outcome.chosen is None


def test_a_forced_pin_is_taken_unjudged():
    outcome, judged = walk(set(), pin=Pin(run_id="2", force=True, at=0.0), candidates=[run("2")])
    assert outcome.chosen.run_id == "2" and outcome.forced and judged == []
    assert outcome.looked[0].verdict == "forced"


# -- the selector over the fakes ----------------------------------------------

@pytest.fixture
def source():
    return FakeRunSource([run(str(i)) for i in range(1, 6)])


@pytest.fixture
def store():
    return FakeDecisionStore()


def selector(settings, source, store, passing: set[str], calls: list[str] | None = None):
    def evaluate(src, record, _settings, _serving):
        if calls is not None:
            calls.append(record.run_id)
        judged = verdict(record.run_id, record.run_id in passing, fingerprint=today.fingerprint())
        return Evaluation(judged, model={"fake": 1})

    today = Selector(settings, source, store, lambda: None, evaluate=evaluate)
    return today


def test_a_selection_decides_and_remembers(settings, source, store):
    calls: list[str] = []
    result = selector(settings, source, store, {"3"}, calls).reload(reason="admin", wait=0)
    assert (result["before"], result["after"], result["changed"]) == (None, "3", True)
    assert calls == ["5", "4", "3"]
    again = selector(settings, source, store, {"3"}, calls).reload(reason="admin", wait=0)
    assert again["after"] == "3" and calls == ["5", "4", "3"]  # remembered: judged once
    assert store.read().verdicts["5"].passed is False


def test_a_store_that_fails_leaves_the_decision(settings, source, store):
    selector(settings, source, store, {"3"}).reload(reason="admin", wait=0)
    source.runs["6"] = run("6")
    source.available = False
    with pytest.raises(SelectionError, match="still serving run 3: StoreUnavailable"):
        selector(settings, source, store, {"6"}).reload(reason="admin", wait=0)
    assert store.read().serving_run_id == "3"
    store.fail_writes, source.available = True, True
    with pytest.raises(SelectionError, match="full"):
        selector(settings, source, store, {"6"}).reload(reason="admin", wait=0)
    assert store.read().serving_run_id == "3"


def test_a_refused_pin_keeps_the_verdict_and_changes_nothing(settings, source, store):
    selector(settings, source, store, {"3"}).reload(reason="admin", wait=0)
    with pytest.raises(PinRefused) as refused:
        selector(settings, source, store, {"3"}).pin("1")
    assert refused.value.status == 422
    decision = store.read()
    assert decision.pin is None and decision.serving_run_id == "3"
    assert decision.verdicts["1"].passed is False
