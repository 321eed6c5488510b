"""The fleet's selection lease: one selection at a time, and never a lock for ever.

The lease is one small object in the shared store, taken and renewed with
compare-and-swap. Its holder renews it every third of its term from a
thread, so a long selection keeps it; a holder that dies (SIGKILL, a lost
host) stops renewing, and another instance takes it over once it is stale.

A lease is stale when either holds:
- its expiry, by the holder's clock, is more than ``skew`` seconds past by
  ours (clock skew up to ``skew`` never makes a live holder look dead), or
- this process has seen the same version of it for longer than its term
  (no clock is compared at all, so a holder's clock far ahead of ours only
  delays a takeover, by at most one term).

The lease saves work (candidates judged once per fleet); correctness does not
depend on it: every decision write is itself a compare-and-swap.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from service.decisions import SelectionBusy
from service.stores.media import Medium, VersionConflict

logger = logging.getLogger(__name__)

LEASE_KEY = "selection-lease.json"


class SelectionLease:
    """Take, renew and give back the fleet's selection lease."""

    def __init__(self, medium: Medium, *, instance: str, term: float, skew: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.medium, self.instance, self.term, self.skew = medium, instance, term, skew
        self.clock = clock
        self._seen: tuple[str, float] | None = None  # (version, monotonic first seen)
        self._version: str | None = None
        self._holder: dict[str, Any] | None = None
        self._renewer: threading.Thread | None = None
        self._released = threading.Event()
        self.lost = False

    def _record(self, holder: str | None) -> bytes:
        now = self.clock()
        return json.dumps({"holder": holder, "instance": self.instance if holder else None,
                           "renewed_at": now, "expires_at": now + self.term if holder else 0,
                           "term": self.term}).encode()

    def _stale(self, lease: dict[str, Any], version: str) -> bool:
        if not lease.get("holder"):
            return True
        if self.clock() > float(lease.get("expires_at", 0)) + self.skew:
            return True
        if self._seen is None or self._seen[0] != version:
            self._seen = (version, time.monotonic())
            return False
        return time.monotonic() - self._seen[1] > float(lease.get("term", self.term))

    def _try(self) -> bool:
        found = self.medium.get(LEASE_KEY)
        expect = None
        if found is not None:
            body, expect = found
            lease = json.loads(body)
            if not self._stale(lease, expect):
                return False
            if lease.get("holder"):
                logger.warning("taking over the selection lease of %s, stale since %.1f s",
                               lease.get("instance"), self.clock() - lease["expires_at"])
        holder = uuid.uuid4().hex
        try:
            self._version = self.medium.put(LEASE_KEY, self._record(holder), expect)
        except VersionConflict:
            return False  # another instance was quicker
        self._holder = {"holder": holder}
        return True

    def acquire(self, timeout: float | None) -> None:
        """Take the lease, waiting up to ``timeout`` (None: for ever); raise SelectionBusy."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._try():
            if deadline is not None and time.monotonic() >= deadline:
                raise SelectionBusy("another instance is selecting (the fleet's lease is held)")
            time.sleep(0.1)
        self.lost = False
        self._released.clear()
        self._renewer = threading.Thread(target=self._renew, name="lineup-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._released.wait(self.term / 3):
            try:
                self._version = self.medium.put(LEASE_KEY, self._record(self._holder["holder"]),
                                                self._version)
            except VersionConflict:
                logger.error("the selection lease was taken over; this selection's "
                             "decision will only be written if nothing changed meanwhile")
                self.lost = True
                return
            except Exception as exc:  # the store may come back before the term ends
                logger.warning("cannot renew the selection lease: %s", exc)

    def release(self) -> None:
        """Give the lease back so the next selection need not wait for it to expire."""
        self._released.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
            self._renewer = None
        if self.lost:
            return
        try:
            self.medium.put(LEASE_KEY, self._record(None), self._version)
        except Exception as exc:  # it expires on its own
            logger.warning("cannot release the selection lease: %s", exc)
