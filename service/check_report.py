"""The gate's verdict on one run as a self-contained HTML page (``lineup check RUN --html F``).

One file with its styles and charts inline (SVG drawn here, no script, no
external asset), so it can be mailed, attached to a ticket or opened offline.
It shows each check with its outcome, time and message, whatever else a
check's result carries, every measure a check judged by (claimed against
measured, with its interval and rule), and the holdout metrics the run claims.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from service.contract import BASELINE_DIFFERENCE_ARTIFACT, INTERVALS_ARTIFACT, METRIC_KEYS

#: A result's numbers judged by its check, shown as claimed against measured.
MEASURES_FIELD = "measures"
#: The fields every check result has; anything else a result carries is shown as details.
RESULT_FIELDS = ("name", "passed", "message", "seconds", MEASURES_FIELD)

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
    low, high = min(finite + [0.0]), max(finite + [0.0])
    span = (high - low) or 1.0
    bar, gap, left, width = 14, 10, 200, 420
    group = bar * len(names) + gap
    height = group * len(labels) + (30 if len(names) > 1 else 0)
    zero = left + width * -low / span  # negative values (differences) grow leftwards
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
            length = max(width * abs(value) / span, 1)
            start = zero if value >= 0 else zero - length
            label_x = max(start + length, zero) + 4
            parts.append(f'<rect x="{start:.1f}" y="{y}" width="{length:.1f}" height="{bar - 2}" '
                         f'fill="{colour}"><title>{_e(name)}: {value:.4g}</title></rect>'
                         f'<text x="{label_x:.1f}" y="{y + bar - 3}">{value:.4g}</text>')
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


def measures_section(results: Sequence[Mapping[str, Any]]) -> str:
    """Claimed against measured: every measure a check judged by, with its interval and rule.

    A result's ``measures`` are mappings of ``name``, ``claimed``,
    ``measured``, ``low``, ``high`` and ``rule`` (``sanity_tests``' Measure).
    """
    rows, labels, claims, measures = [], [], [], []
    for result in results:
        for measure in result.get(MEASURES_FIELD) or ():
            outcome = "PASS" if result.get("passed") else "FAIL"
            rows.append(
                f"<tr><td>{_e(result.get('name'))}</td><td>{_e(measure.get('name'))}</td>"
                f"<td class='num'>{_value(measure.get('claimed'))}</td>"
                f"<td class='num'>{_value(measure.get('measured'))}</td>"
                f"<td>{_interval(measure.get('low'), measure.get('high'))}</td>"
                f'<td class="{outcome.lower()}">{outcome}</td>'
                f"<td>{_e(measure.get('rule') or '')}</td></tr>")
            labels.append(str(measure.get("name")))
            claims.append(_float(measure.get("claimed")))
            measures.append(_float(measure.get("measured")))
    if not rows:
        return ("<h2>Claimed against measured</h2>"
                "<p>No check in this report measured the model.</p>")
    chart = bar_chart("claimed against measured", labels,
                      {"claimed by the run": claims, "measured by the gate": measures})
    return ("<h2>Claimed against measured</h2>"
            "<table><tr><th>check</th><th>measure</th><th>claimed</th><th>measured</th>"
            "<th>95% interval</th><th>decision</th><th>rule</th></tr>"
            f"{''.join(rows)}</table>{chart}")


def metrics_section(claimed: Mapping[str, Any]) -> str:
    """The run's claimed holdout metrics against popularity, with intervals when stored."""
    model = claimed.get("holdout_metrics") or {}
    baseline = claimed.get("baseline_metrics") or {}
    intervals = claimed.get(INTERVALS_ARTIFACT) or {}
    difference = claimed.get(BASELINE_DIFFERENCE_ARTIFACT) or {}
    keys = list(dict.fromkeys([*METRIC_KEYS, *model]))
    rows = "".join(
        f"<tr><td>{_e(key)}</td><td class='num'>{_value(model.get(key))}</td>"
        f"<td>{_value(intervals.get(key))}</td><td class='num'>{_value(baseline.get(key))}</td>"
        f"<td>{_difference(difference.get(key))}</td></tr>"
        for key in keys)
    # Only the rates share a scale; counts such as "users" stay in the table.
    charted = [key for key in keys if key in METRIC_KEYS]
    chart = bar_chart("holdout metrics the run claims", charted,
                      {"model": [_float(model.get(key)) for key in charted],
                       "popularity": [_float(baseline.get(key)) for key in charted]})
    return ("<h2>Holdout metrics the run claims</h2>"
            "<table><tr><th>metric</th><th>model</th><th>model 95% interval</th>"
            "<th>popularity</th><th>model - popularity (95% interval)</th></tr>"
            f"{rows}</table>{chart}")


def _difference(value: Any) -> str:
    """Show a paired difference ``{"mean", "low", "high"}`` as "mean [low, high]"."""
    if isinstance(value, Mapping) and value.get("mean") is not None:
        return f"{_value(value['mean'])} {_interval(value.get('low'), value.get('high'))}"
    return _value(value)


def _interval(low: Any, high: Any) -> str:
    return "-" if low is None or high is None else f"[{_value(low)}, {_value(high)}]"


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(
        value, bool) else None


def render(pathspec: str, verdict: Mapping[str, Any], report: Mapping[str, Any],
           claimed: Mapping[str, Any]) -> str:
    """Return the whole page for one run's verdict, report (``Report.to_dict()``) and summary.

    Every key of the report beyond its results is shown as it is.
    """
    passed = bool(verdict.get("passed"))
    outcome = "pass" if passed else "fail"
    known = {"passed", "failed", "results"}
    results = report.get("results") or []
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
        f"{checks_section(results)}{measures_section(results)}"
        f"{metrics_section(claimed)}{extras}</body></html>")
