"""The training run's Metaflow card: what a data scientist looks at instead of reading JSON.

The flow's ``end`` step calls :func:`attach`, which appends Metaflow's own
card components (Markdown, Table, VegaChart) to ``current.card``; view the
card with ``python service/training/flow.py card view <run id>/end`` or in the
Metaflow UI. The charts are Vega-Lite specs with their data inline, and the
card's HTML embeds Vega itself, so a card renders with no network at all.

A card is a report, never a gate: :func:`attach` catches whatever goes wrong
while building it and shows the failure on the card instead of failing the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.contract import (
    BASELINE_DIFFERENCE_ARTIFACT,
    EVALUATION_PROTOCOL_ARTIFACT,
    INTERVALS_ARTIFACT,
    METRIC_KEYS,
    MODEL_CLASS_ARTIFACT,
    PRIMARY_METRIC,
    SEARCH_RESULTS_ARTIFACT,
    iso_timestamp,
)

logger = logging.getLogger(__name__)

#: Golden users shown with their lists (a run stores about 50).
GOLDEN_USERS_SHOWN = 5
#: Successful runs before this one in the NDCG@10 history chart.
HISTORY_RUNS = 30
#: Length of a shown list, as the API's default.
LIST_LENGTH = 10
#: Pixels: a fixed width draws the same in a card viewer, the Metaflow UI and a file.
CHART_WIDTH = 640


@dataclass(frozen=True)
class HistoryPoint:
    """One run's holdout NDCG@10 and the popularity baseline's, at the run's end."""

    run_id: str
    finished: str
    model: float | None
    popularity: float | None


def _number(value: Any) -> str:
    if isinstance(value, float) and not (value.is_integer() and abs(value) >= 1):
        return f"{value:.4f}"
    return "-" if value is None else str(int(value) if isinstance(value, float) else value)


def _interval(bounds: Any) -> str:
    if isinstance(bounds, Mapping):
        bounds = (bounds.get("low"), bounds.get("high"))
    if not bounds or None in tuple(bounds):
        return "-"
    low, high = bounds
    return f"[{low:.4f}, {high:.4f}]"


def _key_values(mapping: Mapping[str, Any]) -> Any:
    from metaflow.cards import Table

    return Table([[str(key), _number(value)] for key, value in mapping.items()],
                 headers=["", "value"])


def metrics_section(artifacts: Mapping[str, Any]) -> list[Any]:
    """Model against popularity on the holdout, with intervals when the run stored them."""
    from metaflow.cards import Markdown, Table, VegaChart

    model = artifacts.get("holdout_metrics") or {}
    baseline = artifacts.get("baseline_metrics") or {}
    intervals = artifacts.get(INTERVALS_ARTIFACT) or {}
    difference = artifacts.get(BASELINE_DIFFERENCE_ARTIFACT) or {}
    rows, bars = [], []
    for key in METRIC_KEYS:
        gap = difference.get(key) or {}
        rows.append([key, _number(model.get(key)), _interval(intervals.get(key)),
                     _number(baseline.get(key)), _number(gap.get("mean")), _interval(gap)])
        for name, values in (("model", model), ("popularity", baseline)):
            if values.get(key) is not None:
                low, high = (intervals.get(key) or (None, None)) if name == "model" else (
                    None, None)
                bars.append({"metric": key, "recommender": name, "value": values[key],
                             "low": low, "high": high})
    components = [Markdown("## Holdout metrics: the model against popularity"),
                  Table(rows, headers=["metric", "model", "model 95% interval", "popularity",
                                       "model - popularity", "difference 95% interval"])]
    protocol = artifacts.get(EVALUATION_PROTOCOL_ARTIFACT)
    if protocol:
        components += [Markdown("**Evaluation protocol**"), _key_values(protocol)]
    if bars:
        components.append(VegaChart(_metrics_spec(bars)))
    return components


def _metrics_spec(bars: list[dict[str, Any]]) -> dict[str, Any]:
    encoding = {"y": {"field": "recommender", "type": "nominal", "title": None},
                "x": {"field": "value", "type": "quantitative", "title": "holdout value"}}
    return {
        "data": {"values": bars}, "height": {"step": 18},
        "facet": {"row": {"field": "metric", "type": "nominal", "title": None}},
        "resolve": {"scale": {"x": "independent"}},
        "spec": {"width": CHART_WIDTH - 120, "layer": [
            {"mark": "bar", "encoding": {**encoding, "color": {
                "field": "recommender", "type": "nominal", "legend": None}}},
            {"mark": {"type": "rule", "color": "black"}, "transform": [
                {"filter": "datum.low != null"}],
             "encoding": {"y": encoding["y"], "x": {"field": "low", "type": "quantitative"},
                          "x2": {"field": "high"}}}]},
    }


def search_section(artifacts: Mapping[str, Any]) -> list[Any]:
    """Every search point in a table and a chart of its NDCG@10, the chosen one marked."""
    from metaflow.cards import Markdown, Table, VegaChart

    points = list(artifacts.get(SEARCH_RESULTS_ARTIFACT) or [])
    chosen = dict(artifacts.get("best_params") or {})
    if chosen and any("model" in point for point in points):  # points name their servable
        chosen = {"model": artifacts.get(MODEL_CLASS_ARTIFACT), **chosen}
    components = [Markdown("## Chosen parameters"), _key_values(chosen) if chosen else
                  Markdown("The run stored no chosen parameters.")]
    if not points:
        return components + [Markdown("The run stored no search results.")]
    # The chosen parameters name the searched ones; every other key is a measure.
    keys = list(dict.fromkeys(key for point in points for key in point))
    params = [key for key in keys if key in chosen] or [
        key for key in keys if key not in METRIC_KEYS]
    metrics = [key for key in keys if key not in params]
    rows, values = [], []
    for number, point in enumerate(points, 1):
        is_chosen = bool(chosen) and all(point.get(k) == v for k, v in chosen.items())
        label = ", ".join(f"{k}={point.get(k)}" for k in params if k != "random_state")
        rows.append([number, "yes" if is_chosen else ""]
                    + [_number(point.get(key)) for key in params + metrics])
        values.append({"point": f"{number}: {label}", "ndcg": point.get(PRIMARY_METRIC),
                       "chosen": "chosen" if is_chosen else "tried"})
    spec = {
        "data": {"values": values}, "mark": "bar", "width": CHART_WIDTH - 200,
        "height": {"step": 16},
        "encoding": {
            "y": {"field": "point", "type": "nominal", "sort": None, "title": None,
                  "axis": {"labelLimit": 280}},
            "x": {"field": "ndcg", "type": "quantitative", "title": f"holdout {PRIMARY_METRIC}"},
            "color": {"field": "chosen", "type": "nominal", "title": None,
                      "scale": {"domain": ["chosen", "tried"], "range": ["#d62728", "#9ecae1"]}},
            "tooltip": [{"field": "point"}, {"field": "ndcg", "format": ".4f"}]}}
    return components + [Markdown(f"## Search: {len(points)} points"),
                         Table(rows, headers=["#", "chosen", *params, *metrics]),
                         VegaChart(spec)]


def golden_section(model: Any, golden_users: Sequence[Mapping[str, Any]],
                   as_of: float | None) -> list[Any]:
    """The first golden users' top lists from the fitted model, titles and held-out hits."""
    from metaflow.cards import Markdown, Table

    shown = list(golden_users)[:GOLDEN_USERS_SHOWN]
    heading = Markdown(f"## Golden users: {len(shown)} of {len(golden_users)}, top "
                       f"{LIST_LENGTH} as of {iso_timestamp(as_of) if as_of else 'now'} "
                       "(held-out purchases in bold)")
    if model is None or not shown:
        return [heading, Markdown("No model or no golden users to show.")]
    index = {str(item): at for at, item in enumerate(model.item_ids_)}
    rows = []
    for user in shown:
        held_out = {str(item) for item in user.get("holdout_items", ())}
        rec = model.recommend(str(user["user_id"]), n=LIST_LENGTH, as_of=as_of)
        lines = []
        for rank, (item, item_id) in enumerate(zip(rec.items, rec.item_ids, strict=True), 1):
            title = str(model.item_titles_[int(item)])
            lines.append(f"{rank}. **{title}**" if str(item_id) in held_out else
                         f"{rank}. {title}")
        truth = [str(model.item_titles_[index[i]]) if i in index else i for i in sorted(held_out)]
        rows.append([str(user["user_id"]), Markdown("\n".join(lines) or "(empty list)"),
                     Markdown("\n".join(f"- {title}" for title in truth) or "-")])
    return [heading, Table(rows, headers=["user", "recommended", "held-out purchases"])]


def recent_history(flow_name: str, limit: int = HISTORY_RUNS) -> list[HistoryPoint]:
    """Read the NDCG@10 of the flow's last successful runs, oldest first.

    Uses the Metaflow client in the running task's own namespace and
    metadata. Runs are ordered by end time, then run id: ``Flow.runs()``
    order is not reliable (tags rewrite it on the local backend). Only the
    ``2 * limit`` most recently created runs are opened, so a flow with a
    long history (and a metadata service) costs a bounded number of reads.
    """
    import metaflow

    created = sorted(metaflow.Flow(flow_name).runs(), key=lambda run: run.created_at)
    runs = [run for run in created[-2 * limit:] if run.successful]
    runs.sort(key=lambda run: (run.finished_at.timestamp(), int(run.id) if run.id.isdigit()
                               else -1))
    points = []
    for run in runs[-limit:]:
        data = run.data
        model = getattr(data, "holdout_metrics", None) if "holdout_metrics" in data else None
        if not model or model.get(PRIMARY_METRIC) is None:
            continue
        baseline = (data.baseline_metrics or {}) if "baseline_metrics" in data else {}
        points.append(HistoryPoint(run.id, iso_timestamp(run.finished_at.timestamp()),
                                   model[PRIMARY_METRIC], baseline.get(PRIMARY_METRIC)))
    return points


def history_section(history: Sequence[HistoryPoint]) -> list[Any]:
    """A line chart of NDCG@10 (model and popularity) over the recent runs, this one last."""
    from metaflow.cards import Markdown, VegaChart

    values = [{"run": f"{point.run_id}", "finished": point.finished, "recommender": name,
               "ndcg": value}
              for point in history
              for name, value in (("model", point.model), ("popularity", point.popularity))
              if value is not None]
    spec = {
        "data": {"values": values}, "width": CHART_WIDTH, "height": 220,
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "finished", "type": "temporal", "title": "run finished (UTC)",
                  "axis": {"format": "%Y-%m-%d %H:%M", "labelAngle": -30,
                           "labelOverlap": "greedy"}},
            "y": {"field": "ndcg", "type": "quantitative", "title": f"holdout {PRIMARY_METRIC}"},
            "color": {"field": "recommender", "type": "nominal", "title": None},
            "tooltip": [{"field": "run"}, {"field": "finished"}, {"field": "recommender"},
                        {"field": "ndcg", "format": ".4f"}]}}
    return [Markdown(f"## {PRIMARY_METRIC} over the last {len(history)} successful runs"),
            VegaChart(spec)]


def build(artifacts: Mapping[str, Any], model: Any,
          history: Sequence[HistoryPoint]) -> list[Any]:
    """Return the card's components for one run's artifacts, model and run history."""
    from metaflow.cards import Markdown

    fingerprint = artifacts.get("data_fingerprint") or {}
    return [
        Markdown(f"# {artifacts.get('flow_name', 'Training run')} "
                 f"{artifacts.get('run_id', '')}"),
        Markdown("## Data fingerprint"), _key_values(fingerprint),
        *metrics_section(artifacts),
        *search_section(artifacts),
        *golden_section(model, artifacts.get("golden_users") or (), artifacts.get("as_of")),
        *history_section(history),
    ]


def attach(flow: Any) -> None:
    """Append the training card to ``current.card`` from the flow's artifacts; never raises."""
    from metaflow import current
    from metaflow.cards import Markdown

    names = ("holdout_metrics", "baseline_metrics", "data_fingerprint", "golden_users", "as_of",
             "best_params", MODEL_CLASS_ARTIFACT, SEARCH_RESULTS_ARTIFACT, INTERVALS_ARTIFACT,
             BASELINE_DIFFERENCE_ARTIFACT, EVALUATION_PROTOCOL_ARTIFACT)
    try:
        artifacts = {name: getattr(flow, name, None) for name in names}
        artifacts.update(flow_name=current.flow_name, run_id=current.run_id)
        this_run = HistoryPoint(current.run_id, iso_timestamp(time.time()),
                                (artifacts["holdout_metrics"] or {}).get(PRIMARY_METRIC),
                                (artifacts["baseline_metrics"] or {}).get(PRIMARY_METRIC))
        try:
            history = recent_history(current.flow_name, HISTORY_RUNS - 1)
        except Exception:  # no history is a smaller card, not a failed one
            logger.warning("cannot read the run history for the card", exc_info=True)
            history = []
        current.card.extend(build(artifacts, getattr(flow, "model", None), [*history, this_run]))
    except Exception as exc:  # a card is a report: it must never fail the training run
        logger.exception("cannot build the training card")
        current.card.append(Markdown(f"# The training card failed\n\n`{type(exc).__name__}: "
                                     f"{exc}`\n\nThe run itself is unaffected."))
