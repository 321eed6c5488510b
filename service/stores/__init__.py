"""Decision stores: where the serving run, the pin and the verdicts are kept.

Instances that share their runs share one decision, kept beside the runs as
one object (``<DECISION_ROOT>/<flow>/decision.json``): in the datastore folder
on one machine, beside the S3 datastore in production. One object rather than
Metaflow tags on the runs: a pin, the verdicts and the serving run change
together in one compare-and-swap write, which tags (one call per tag, no
condition) cannot do, and reading it costs one request, not one per run.

``DECISION_ROOT`` equal to the state folder keeps the decision instance-local
(:class:`service.decisions.FileDecisionStore`), as before fleets;
:func:`service.backends.decision_store` chooses.
"""

from __future__ import annotations

import time
from typing import Any

from service.decisions import DecisionStore
from service.stores.media import StoreUnreachable
from service.stores.shared import SharedDecisionStore

__all__ = ["fleet_status", "StoreUnreachable", "SharedDecisionStore"]

#: An instance listed in the status reported within this many seconds.
LISTED_FOR = 60.0


def fleet_status(store: DecisionStore, instance: str,
                 decided: str | None, stale_after: float) -> list[dict[str, Any]]:
    """List every instance that reported in the last minute, flagging stale ones.

    An instance is stale when it has not seen the decision for ``stale_after``
    seconds (it cannot reach the store), or serves another run than decided.
    """
    if isinstance(store, SharedDecisionStore):
        reports = store.reports(max_age=LISTED_FOR)
    else:
        reports = [{**r.to_dict(), "instance": instance, "decision_seen_at": r.seen_at}
                   for r in store.workers(max_age=LISTED_FOR)]
    now = time.time()
    by_instance: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        by_instance.setdefault(report["instance"], []).append(report)
    listed = []
    for name, reported in sorted(by_instance.items()):
        # A worker gunicorn replaced stops reporting; its last report is not the instance's.
        newest = max(w["seen_at"] for w in reported)
        workers = [w for w in reported if newest - w["seen_at"] <= stale_after]
        runs = sorted({w["run_id"] or "-" for w in workers})
        seen = [w.get("decision_seen_at") or 0 for w in workers]
        errors = [w["last_error"] for w in workers if w.get("last_error")]
        why = []
        if now - min(seen) > stale_after:
            why.append(f"has not seen the decision for {now - min(seen):.0f} s")
        if decided is not None and runs != [decided]:
            why.append(f"serves {', '.join(runs)}, not the decided run {decided}")
        listed.append({
            "instance": name, "run_ids": runs, "workers": sorted(w["pid"] for w in workers),
            "reported_at": newest, "decision_seen_at": min(seen),
            "last_error": max(errors, key=lambda e: e.get("at", 0)) if errors else None,
            "stale": bool(why), "stale_reason": "; ".join(why) or None,
        })
    return listed
