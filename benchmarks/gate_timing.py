"""Time the whole sanity suite on the default sample world, as the gate runs it.

``.venv/bin/python benchmarks/gate_timing.py`` fits the served model on the
default sample (20,000 users, 5,000 events, 500,000 interactions) as of
yesterday and today, builds today's probes as the flow does, and runs every
check on today's model twice: compared with yesterday's as the serving
model, and as a first selection (nothing serving). Loading the artifact is
not included: it is the gate's ``load_model`` step, timed in each verdict.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace

from sanity_tests import MODEL_CHECKS, RUN_CHECKS, RunContext, run_checks
from service.contract import library_versions
from service.recommender import EventRecommender
from service.training import probes
from service.training.data import Catalogue
from service.training.sample_data import generate

GOLDEN_USERS = 50


def fitted(day: dt.date) -> tuple[EventRecommender, dict, list[dict], Catalogue]:
    """Fit the default sample as of ``day``; return the model, probes, golden users, catalogue."""
    log, catalogue = generate(as_of=day)
    model = EventRecommender().fit(log, items=catalogue)
    step = max(model.user_ids_.size // GOLDEN_USERS, 1)
    golden = [{"user_id": str(u), "holdout_items": []}
              for u in model.user_ids_[::step][:GOLDEN_USERS]]
    started = time.perf_counter()
    built = probes.build_probes(model, log, golden)
    print(f"probes for {day} built in {time.perf_counter() - started:.2f} s")
    return model, built, golden, catalogue


def main() -> None:
    """Print the suite's total and each check's time, with and without a serving model."""
    today = dt.datetime.now(dt.UTC).date()
    serving, *_ = fitted(today - dt.timedelta(days=1))
    model, built, golden, catalogue = fitted(today)
    metrics = {"precision@10": 0.1, "recall@10": 0.3, "ndcg@10": 0.3, "coverage": 0.5}
    context = RunContext(run_id="timing", pathspec="timing", holdout_metrics=metrics,
                         baseline_metrics={"ndcg@10": 0.1}, library_versions=library_versions(),
                         golden_users=golden, schema_version=model.SCHEMA_VERSION,
                         as_of=time.time(), probes=built, catalogue=catalogue)
    for label, other in (("with a serving model", serving), ("first selection", None)):
        fresh = replace(context, serving_model=other, memo={})
        started = time.perf_counter()
        report = run_checks(RUN_CHECKS + MODEL_CHECKS, model, fresh)
        total = time.perf_counter() - started
        print(f"{label}: {total:.3f} s, failed {report.failed_names or 'none'}")
        for result in report.results:
            print(f"    {result.name:<32} {result.seconds * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
