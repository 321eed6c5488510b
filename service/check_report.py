"""The gate's verdict on one run as a self-contained HTML page (``lineup check RUN --html F``).

One file with its styles and charts inline (SVG drawn here, no script, no
external asset), so it can be mailed, attached to a ticket or opened offline.
It shows each check with its outcome, time and message, whatever else a
check's result carries, and the metrics the run claims beside any the gate
measured.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from service.contract import BASELINE_DIFFERENCE_ARTIFACT, INTERVALS_ARTIFACT, METRIC_KEYS

#: The fields every check result has; anything else a result carries is shown as details.
RESULT_FIELDS = ("name", "passed", "message", "seconds")

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;width:100%}td,th{padding:.35em .6em;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;
font-variant-numeric:tabular-nums}.pass{color:#1a7f37;font-weight:600}
.fail{color:#c62828;font-weight:600}.banner{padding:.8em 1em;border-radius:6px;margin:1em 0}
.banner.pass{background:#e6f4ea}.banner.fail{background:#fdecea}
dl{margin:0;display:grid;grid-template-columns:max-content auto;gap:0 1em}dt{color:#555}
dd{margin:0}svg text{font:12px system-ui,sans-serif}svg.chart{margin-top:1em}
"""
_SERIES_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _value(value: Any) -> str:
    """Render one value: numbers compactly, mappings and lists as nested markup."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _e(f"{value:.4g}") if math.isfinite(value) else _e(value)
    if isinstance(value, Mapping):
        if not value:
            return "-"
        return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_value(v)}</dd>"
                                for k, v in value.items()) + "</dl>"
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, (int, float)) for v in value):
            return "[" + ", ".join(_value(v) for v in value) + "]"
        return "<br>".join(_value(v) for v in value) or "-"
    return "-" if value is None else _e(value)


def bar_chart(title: str, labels: Sequence[str], series: Mapping[str, Sequence[float | None]],
              colours: Sequence[str] | None = None) -> str:
    """Return an inline SVG horizontal bar chart: one group of bars per label, one per series."""
    names = list(series)
    colours = list(colours or _SERIES_COLOURS)
    finite = [v for values in series.values() for v in values
              if v is not None and math.isfinite(v)]
    top = max(finite + [0.0]) or 1.0
    bar, gap, left, width = 14, 10, 200, 420
    group = bar * len(names) + gap
    height = group * len(labels) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" '
             f'width="{left + width + 90}" height="{height}" aria-label="{_e(title)}">',
             f"<title>{_e(title)}</title>"]
    for row, label in enumerate(labels):
        y0 = row * group
        parts.append(f'<text x="{left - 8}" y="{y0 + group / 2}" text-anchor="end">'
                     f"{_e(label)}</text>")
        for column, name in enumerate(names):
            value = series[name][row]
            y = y0 + column * bar
            colour = colours[column % len(colours)]
            if value is None or not math.isfinite(value):
                continue  # the table beside the chart says "-"
            length = max(width * value / top, 1)
            parts.append(f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar - 2}" '
                         f'fill="{colour}"><title>{_e(name)}: {value:.4g}</title></rect>'
                         f'<text x="{left + length + 4:.1f}" y="{y + bar - 3}">{value:.4g}'
                         "</text>")
    legend_y, x = height - 10, left
    for column, name in enumerate(names if len(names) > 1 else ()):
        parts.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" '
                     f'fill="{colours[column % len(colours)]}"/>'
                     f'<text x="{x + 14}" y="{legend_y}">{_e(name)}</text>')
        x += 14 + 7 * len(name) + 20  # about 7 px a character at 12 px
    return "".join(parts) + "</svg>"


def checks_section(results: Sequence[Mapping[str, Any]]) -> str:
    """A table of every check (outcome, milliseconds, message, details) and a time chart."""
    rows = []
    for result in results:
        outcome = "PASS" if result.get("passed") else "FAIL"
        details = {k: v for k, v in result.items() if k not in RESULT_FIELDS}
        rows.append(
            f'<tr><td class="{outcome.lower()}">{outcome}</td><td>{_e(result.get("name"))}</td>'
            f'<td class="num">{float(result.get("seconds") or 0) * 1000:.1f}</td>'
            f'<td>{_e(result.get("message") or "")}</td><td>{_value(details)}</td></tr>')
    passed = sum(1 for result in results if result.get("passed"))
    timings = bar_chart("time per check (ms)", [str(r.get("name")) for r in results],
                        {"ms": [float(r.get("seconds") or 0) * 1000 for r in results]})
    return (f"<h2>Checks: {passed} of {len(results)} passed</h2>"
            "<table><tr><th>outcome</th><th>check</th><th>ms</th><th>message</th>"
            f"<th>details</th></tr>{''.join(rows)}</table>"
            f"<h2>Time per check (ms)</h2>{timings}")


def metrics_section(claimed: Mapping[str, Any], measured: Mapping[str, Any] | None) -> str:
    """The run's claimed holdout metrics beside the gate's measured ones, in a table and chart."""
    model = claimed.get("holdout_metrics") or {}
    baseline = claimed.get("baseline_metrics") or {}
    intervals = claimed.get(INTERVALS_ARTIFACT) or {}
    difference = claimed.get(BASELINE_DIFFERENCE_ARTIFACT) or {}
    measured = dict(measured or {})
    keys = list(dict.fromkeys([*METRIC_KEYS, *model, *measured]))
    rows = "".join(
        f"<tr><td>{_e(key)}</td><td class='num'>{_value(model.get(key))}</td>"
        f"<td>{_value(intervals.get(key))}</td><td class='num'>{_value(baseline.get(key))}</td>"
        f"<td>{_value(difference.get(key))}</td><td>{_value(measured.get(key))}</td></tr>"
        for key in keys)
    series = {"claimed by the run": [_float(model.get(key)) for key in keys],
              "popularity (claimed)": [_float(baseline.get(key)) for key in keys]}
    if measured:
        series["measured by the gate"] = [_float(measured.get(key)) for key in keys]
    heading = ("Metrics: claimed by the run, measured by the gate" if measured else
               "Metrics claimed by the run (this report carries no measured ones)")
    chart = bar_chart(heading, keys, series)
    return (f"<h2>{heading}</h2>"
            "<table><tr><th>metric</th><th>claimed</th><th>claimed 95% interval</th>"
            "<th>popularity</th><th>model - popularity</th><th>measured</th></tr>"
            f"{rows}</table>{chart}")


def _float(value: Any) -> float | None:
    """Return a number's value, or the point estimate of a mapping (``value``/``mean``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Mapping):
        for key in ("value", "mean", "measured"):
            if isinstance(value.get(key), (int, float)):
                return float(value[key])
    return None


def render(pathspec: str, verdict: Mapping[str, Any], report: Mapping[str, Any],
           claimed: Mapping[str, Any]) -> str:
    """Return the whole page for one run's verdict, report (``Report.to_dict()``) and summary.

    Measured metrics are read from the report's ``measured`` mapping when the
    gate's report carries one; every other key of the report beyond its
    results is shown as it is.
    """
    passed = bool(verdict.get("passed"))
    outcome = "pass" if passed else "fail"
    known = {"passed", "failed", "results", "measured"}
    extras = "".join(f"<h2>{_e(key)}</h2>{_value(value)}" for key, value in report.items()
                     if key not in known)
    facts = {"evaluated in (s)": verdict.get("seconds"),
             "checks fingerprint": str(verdict.get("fingerprint", ""))[:12],
             "data": (claimed.get("data_fingerprint") or {}).get("source"),
             "libraries": claimed.get("library_versions")}
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Lineup check: {_e(pathspec)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Lineup check of {_e(pathspec)}</h1>"
        f'<div class="banner {outcome}"><span class="{outcome}">'
        f"{'PASSED' if passed else 'REJECTED'}</span>: {_e(verdict.get('reason', ''))}</div>"
        f"{_value(facts)}"
        f"{checks_section(report.get('results') or [])}"
        f"{metrics_section(claimed, report.get('measured'))}{extras}</body></html>")
