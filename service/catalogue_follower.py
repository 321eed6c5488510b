"""Each worker's catalogue follower: read the live catalogue, check it, swap it in.

The follower re-reads ``LINEUP_CATALOGUE`` (a path or an ``s3://`` URL) every
``LINEUP_CATALOGUE_INTERVAL`` seconds, and at once when any worker was asked
to (``POST /admin/catalogue/reload`` touches a signal file in the state
folder that every follower watches). A catalogue that fails to read or
fails its checks is refused and the one serving stays: a bad file never
empties the service. An accepted catalogue is laid over the model that
serves and swapped in by one reference assignment, like a model (see
service/slot.py); when the model changes, the accepted catalogue is laid
over the new model before requests can use it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service import catalogue, loader
from service.contract import iso_timestamp
from service.slot import ModelSlot
from service.training.csv_files import local_copies
from service.training.data import Catalogue, DataError, load_items

logger = logging.getLogger(__name__)


class CatalogueFollower:
    """Hold the live catalogue of one worker and keep it fresh."""

    def __init__(self, settings: Mapping[str, Any], models: ModelSlot) -> None:
        self.location = str(settings.get("CATALOGUE", "") or "")
        self.interval = float(settings.get("CATALOGUE_INTERVAL", 300.0))
        self.max_shrink = float(settings.get("CATALOGUE_MAX_SHRINK", 0.5))
        self.watch = float(settings.get("WATCH_INTERVAL", 0.5))
        self.signal = Path(settings["STATE_DIR"]) / "catalogue-reload"
        self.models = models
        self._current: catalogue.LiveCatalogue | None = None
        self._accepted: tuple[Catalogue, str, int] | None = None  # catalogue, source, on sale
        self._lock = threading.Lock()
        self._seen_signal: int | None = None
        self._next_read = 0.0
        self.last_error: dict[str, Any] | None = None
        self.last_read_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """True when a catalogue location is configured."""
        return bool(self.location)

    def get(self) -> catalogue.LiveCatalogue | None:
        """Return the live catalogue, or None before the first accepted one."""
        return self._current

    def refresh(self) -> dict[str, Any]:
        """Read, check and swap in the catalogue now; return the status (refusals included)."""
        with self._lock:
            self._next_read = time.monotonic() + self.interval
            self.last_read_at = time.time()
            try:
                with local_copies(self.location) as (path,):
                    fresh = load_items(path)
                previous = self._accepted[2] if self._accepted else None
                catalogue.check(fresh, time.time(), previous, self.max_shrink)
                self._accepted = (fresh, self.location,
                                  catalogue.on_sale_upcoming(fresh, time.time()))
                self._lay_over_model(force=True)
                self.last_error = None
            except (DataError, catalogue.CatalogueRefused, OSError) as exc:
                self._refuse(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # the follower must outlive any one bad file
                logger.exception("catalogue refresh failed")
                self._refuse(f"{type(exc).__name__}: {exc}")
        return self.status()

    def _refuse(self, message: str) -> None:
        kept = self._current.source if self._current else "no live catalogue"
        logger.error("catalogue %s refused, keeping %s: %s", self.location, kept, message)
        self.last_error = {"at": time.time(), "message": message}

    def _lay_over_model(self, *, force: bool = False) -> None:
        """Lay the accepted catalogue over the serving model when either changed."""
        served = self.models.get()
        if served is None or self._accepted is None:
            return
        current = self._current
        if current is not None and current.run_id == served.run_id and not force:
            return
        fresh, source, on_sale = self._accepted
        view, rows = catalogue.overlay(served.model, fresh)
        new_json = loader.items_json(
            fresh.item_id[rows], fresh.title[rows], fresh.category[rows],
            fresh.city[rows] if fresh.city is not None else [""] * rows.size,
            fresh.starts_at[rows])
        self._current = catalogue.LiveCatalogue(
            run_id=served.run_id, view=view, item_json=served.item_json + new_json,
            loaded_at=time.time(), source=source, events=len(fresh), on_sale=on_sale,
            new_events=int(rows.size))
        logger.info("catalogue %s over run %s: %d events, %d on sale, %d new", source,
                    served.run_id, len(fresh), on_sale, rows.size)

    def request_reload(self) -> dict[str, Any]:
        """Refresh here now, and tell every other worker to refresh (the signal file)."""
        self.signal.parent.mkdir(parents=True, exist_ok=True)
        self.signal.touch()
        self._seen_signal = self.signal.stat().st_mtime_ns
        return self.refresh()

    def tick(self) -> None:
        """Follow the model; refresh when the interval passed or another worker asked."""
        try:
            signal = self.signal.stat().st_mtime_ns
        except FileNotFoundError:
            signal = None
        asked = signal is not None and signal != self._seen_signal
        if asked or time.monotonic() >= self._next_read:
            self._seen_signal = signal
            self.refresh()
            return
        with self._lock:
            self._lay_over_model()

    def start(self) -> None:
        """Read the catalogue once, then follow it in a thread (no-op when none is configured)."""
        if not self.enabled or self._thread is not None:
            return
        self.tick()
        self._thread = threading.Thread(target=self._follow, name="lineup-catalogue",
                                        daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.wait(self.watch):
            try:
                self.tick()
            except Exception:  # never let the thread die
                logger.exception("catalogue follower")

    def stop(self) -> None:
        """Stop the follower thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def status(self) -> dict[str, Any]:
        """Describe the live catalogue for /admin/status."""
        current = self._current
        return {
            "location": self.location or None,
            "interval_seconds": self.interval,
            "serving": None if current is None else {
                "source": current.source, "run_id": current.run_id,
                "loaded_at": iso_timestamp(current.loaded_at), "events": current.events,
                "on_sale_upcoming": current.on_sale, "new_events": current.new_events},
            "last_read_at": None if self.last_read_at is None else iso_timestamp(
                self.last_read_at),
            "last_error": self.last_error,
        }
