"""The decision store keeps the last good decision whatever happens to the disk."""

from __future__ import annotations

import os
import threading

import pytest

from service.decisions import DecisionWriteError, FileDecisionStore, SelectionBusy
from service.records import Decision, ServingEntry, Verdict


def serving(run_id: str) -> ServingEntry:
    return ServingEntry(run_id=run_id, pathspec=f"F/{run_id}", finished_at=None, since=0.0)


def test_a_missing_decision_reads_as_empty(tmp_path):
    assert FileDecisionStore(tmp_path / "state").read() == Decision()


def test_write_then_read_round_trips(tmp_path):
    store = FileDecisionStore(tmp_path)
    verdict = Verdict(run_id="7", passed=True, failed_checks=[], reason="passed every check",
                      evaluated_at=1.0, seconds=0.5, fingerprint="f")
    store.write(Decision(generation=3, serving=serving("7"), verdicts={"7": verdict}))
    decision = store.read()
    assert (decision.generation, decision.serving_run_id) == (3, "7")
    assert decision.verdicts == {"7": verdict}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
def test_an_unwritable_folder_keeps_the_previous_decision(tmp_path):
    store = FileDecisionStore(tmp_path)
    store.write(Decision(generation=1, serving=serving("1")))
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(DecisionWriteError, match="cannot write"):
            store.write(Decision(generation=2, serving=serving("2")))
    finally:
        tmp_path.chmod(0o700)
    assert store.read().serving_run_id == "1"


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    store = FileDecisionStore(tmp_path)
    store.write(Decision(generation=1, serving=serving("1")))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(DecisionWriteError, match="disk full"):
        store.write(Decision(generation=2, serving=serving("2")))
    assert store.read().serving_run_id == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decision.json"]


def test_the_selection_lock_excludes_other_holders(tmp_path):
    first, second = FileDecisionStore(tmp_path), FileDecisionStore(tmp_path)
    entered = threading.Event()
    release = threading.Event()

    def hold():
        with first.selection_lock(timeout=None):
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(5)
    with pytest.raises(SelectionBusy):
        with second.selection_lock(timeout=0.2):
            pass
    release.set()
    holder.join()
    with second.selection_lock(timeout=1):
        pass
