"""The fleet's decision store, in a shared folder and in S3 (a local moto server).

Every case runs on both media: writes are compare-and-swap, no verdict is
lost when instances write at once, the selection lease excludes, a dead
holder's lease is taken over within its term, clock skew within the
tolerance changes nothing, and an unreachable store is reported as such.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.backends import decision_store
from service.decisions import SelectionBusy
from service.records import Decision, Pin, ServingEntry, Verdict, WorkerReport
from service.stores import SharedDecisionStore, StoreUnreachable
from service.stores.lease import LEASE_KEY, SelectionLease
from service.stores.media import FolderMedium, S3Medium
from service.stores.shared import DecisionConflict
from tests.conftest import REGION

TERM = 1.0
SKEW = 0.5
#: Room for a busy machine (2 cores shared by many processes) in the timing bounds.
SLACK = 4.0


@pytest.fixture
def s3_env(aws, tmp_path, monkeypatch):
    """Credentials for the local S3, and a bucket named after the test."""
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION,
                       "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config")}.items():
        monkeypatch.setenv(key, value)
    bucket = f"stores-{time.monotonic_ns()}"
    boto3.client("s3", endpoint_url=aws.url).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(params=["folder", "s3"])
def medium(request, tmp_path):
    """A fresh medium: a folder beside a datastore, or a prefix in a fresh bucket."""
    if request.param == "folder":
        (tmp_path / "datastore").mkdir()
        return FolderMedium(tmp_path / "datastore" / ".lineup" / "Flow",
                            anchor=tmp_path / "datastore")
    bucket = request.getfixturevalue("s3_env")
    return S3Medium(f"s3://{bucket}/metaflow/.lineup/Flow",
                    endpoint_url=request.getfixturevalue("aws").url)


def instance(medium, tmp_path, name: str) -> SharedDecisionStore:
    """One instance's view of the shared store, with its own state folder."""
    return SharedDecisionStore(medium, tmp_path / f"state-{name}", instance=name,
                               lease_term=TERM, skew=SKEW)


def serving(run_id: str) -> ServingEntry:
    return ServingEntry(run_id=run_id, pathspec=f"Flow/{run_id}", finished_at=None, since=0.0)


def verdict(run_id: str, at: float) -> Verdict:
    return Verdict(run_id=run_id, passed=True, failed_checks=[], reason="", evaluated_at=at,
                   seconds=0.1, fingerprint="f")


def test_a_write_over_a_newer_decision_is_refused_and_its_verdicts_kept(medium, tmp_path):
    first, second = instance(medium, tmp_path, "a"), instance(medium, tmp_path, "b")
    assert first.read().generation == 0 and first.signature() is None
    mine, theirs = first.read(), second.read()
    mine.serving, mine.verdicts = serving("2"), {"2": verdict("2", 2)}
    first.write(mine)
    theirs.serving, theirs.verdicts = serving("1"), {"1": verdict("1", 1)}
    with pytest.raises(DecisionConflict, match="its decision stands"):
        second.write(theirs)
    on_store = second.read()
    assert on_store.serving_run_id == "2" and set(on_store.verdicts) == {"1", "2"}
    # The state folder caches what was last read, for a worker that starts offline.
    assert second.cached().serving_run_id == "2"


def test_no_update_is_lost_when_instances_write_at_once(medium, tmp_path):
    stores = [instance(medium, tmp_path, str(i)) for i in range(3)]

    def judge(index: int) -> int:
        conflicts = 0
        while True:
            decision = stores[index % 3].read()
            decision.verdicts[f"run-{index}"] = verdict(f"run-{index}", time.time())
            decision.generation += 1
            try:
                stores[index % 3].write(decision)
                return conflicts
            except DecisionConflict:
                conflicts += 1

    with ThreadPoolExecutor(6) as pool:
        conflicts = sum(pool.map(judge, range(12)))
    final = stores[0].read()
    assert set(final.verdicts) == {f"run-{i}" for i in range(12)}
    assert final.generation >= 12 - conflicts  # every retried write counted once


def test_the_lease_excludes_and_is_given_back(medium, tmp_path):
    first, second = instance(medium, tmp_path, "a"), instance(medium, tmp_path, "b")
    with first.selection_lock(timeout=0):
        started = time.monotonic()
        with pytest.raises(SelectionBusy, match="another instance"):
            with second.selection_lock(timeout=2.5 * TERM):
                pass
        # Renewed every third of its term: never stale while its holder lives.
        assert time.monotonic() - started >= 2.5 * TERM
    with second.selection_lock(timeout=0):
        pass


def dead_holder(medium, expires_in: float) -> float:
    """Leave a lease as an instance SIGKILLed mid-selection does: held, never renewed.

    Returns the monotonic time of its writing, which every bound counts from.
    """
    now, written = time.time(), time.monotonic()
    medium.put(LEASE_KEY, json.dumps({"holder": "dead", "instance": "killed", "renewed_at": now,
                                      "expires_at": now + expires_in, "term": TERM}).encode(),
               None)
    return written


def test_a_dead_holders_lease_is_taken_over_within_its_term(medium, tmp_path):
    written = dead_holder(medium, TERM)
    survivor = instance(medium, tmp_path, "b")
    with survivor.selection_lock(timeout=10):
        waited = time.monotonic() - written
    # Never before the lease's own expiry (counted from its writing, not from when the
    # survivor started looking: building a client can take most of a term).
    assert TERM <= waited <= TERM + SKEW + SLACK


def test_a_holder_clock_far_ahead_delays_a_takeover_by_one_term_at_most(medium, tmp_path):
    written = dead_holder(medium, 3600)  # its clock said an hour ahead
    survivor = instance(medium, tmp_path, "b")
    started = time.monotonic()
    with survivor.selection_lock(timeout=10):
        now = time.monotonic()
    assert now - written >= TERM and now - started <= TERM + SLACK


@pytest.mark.parametrize("holder_offset", [-SKEW * 0.8, SKEW * 0.8])
def test_clock_skew_within_the_tolerance_never_steals_a_live_lease(medium, tmp_path,
                                                                   holder_offset):
    holder = SelectionLease(medium, instance="skewed", term=TERM, skew=SKEW,
                            clock=lambda: time.time() + holder_offset)
    holder.acquire(timeout=0)
    try:
        other = instance(medium, tmp_path, "b")
        with pytest.raises(SelectionBusy):
            with other.selection_lock(timeout=3 * TERM):
                pass
        assert not holder.lost
    finally:
        holder.release()


def test_an_unreachable_store_is_reported_not_waited_on(tmp_path, aws, s3_env):
    folder = FolderMedium(tmp_path / "gone" / ".lineup" / "Flow", anchor=tmp_path / "gone")
    store = instance(folder, tmp_path, "a")
    with pytest.raises(StoreUnreachable, match="is missing"):
        store.signature()
    with pytest.raises(StoreUnreachable):
        store.write(Decision())
    assert not (tmp_path / "gone").exists()  # never recreated behind the operator's back

    closed = S3Medium(f"s3://{s3_env}/x", endpoint_url="http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(StoreUnreachable):
        instance(closed, tmp_path, "b").signature()
    assert time.monotonic() - started < 10


def test_a_store_moved_away_during_a_write_is_not_made_again(tmp_path):
    # The folder goes away just after the write's check passed (an operator's
    # move, a lost mount): the write fails, and nothing makes the folder again.
    anchor = tmp_path / "datastore"
    anchor.mkdir()
    folder = FolderMedium(anchor / ".lineup" / "Flow", anchor=anchor)
    check = folder._reachable

    def check_then_move_away() -> None:
        check()
        if anchor.exists():
            anchor.rename(tmp_path / "datastore-away")

    folder._reachable = check_then_move_away
    for write in (lambda: folder.put_any("workers/a.json", b"{}"),
                  lambda: folder.put("selection-lease.json", b"{}", None)):
        with pytest.raises(StoreUnreachable):
            write()
        assert not anchor.exists()
        (tmp_path / "datastore-away").rename(anchor)


def test_the_settings_choose_the_store(settings, tmp_path):
    shared = decision_store(settings)
    assert isinstance(shared, SharedDecisionStore)
    assert shared.where == str(tmp_path / ".lineup" / settings["FLOW_NAME"])
    alone = decision_store({**settings, "DECISION_ROOT": settings["STATE_DIR"]})
    assert not isinstance(alone, SharedDecisionStore)


def test_worker_reports_list_every_instance(medium, tmp_path):
    from service.stores import fleet_status

    stores = [instance(medium, tmp_path, name) for name in ("a", "b")]
    for pid, store in enumerate(stores):
        store.signature()
        store.write_worker(WorkerReport(pid=pid, run_id="7", seen_at=time.time(), loaded_at=0,
                                        last_error=None))
    listed = fleet_status(stores[0], "a", decided="7", stale_after=15)
    assert [(i["instance"], i["run_ids"], i["stale"]) for i in listed] == [
        ("a", ["7"], False), ("b", ["7"], False)]
    behind = fleet_status(stores[0], "a", decided="8", stale_after=15)
    assert all(i["stale"] and "not the decided run 8" in i["stale_reason"] for i in behind)
    assert [w.pid for w in stores[1].workers(max_age=15)] == [1]  # its own, from its folder


def test_two_stores_in_one_process_share_one_lease_per_thread(medium, tmp_path):
    store = instance(medium, tmp_path, "a")
    entered = threading.Event()

    def hold():
        with store.selection_lock(timeout=0):
            entered.set()
            time.sleep(0.5)

    thread = threading.Thread(target=hold)
    thread.start()
    entered.wait(5)
    with pytest.raises(SelectionBusy, match="in this worker"):
        with store.selection_lock(timeout=0.1):
            pass
    thread.join()


def test_an_instance_local_decision_seeds_the_shared_one(medium, tmp_path):
    from service.decisions import FileDecisionStore

    before = Decision(generation=4, serving=serving("3"), pin=Pin(run_id="3", force=False, at=0))
    FileDecisionStore(tmp_path / "state-a").write(before)  # as the instance kept it until now
    upgraded = instance(medium, tmp_path, "a")
    seeded = upgraded.read()
    assert (seeded.generation, seeded.pin.run_id) == (4, "3")
    upgraded.write(seeded)
    assert instance(medium, tmp_path, "b").read().pin.run_id == "3"
