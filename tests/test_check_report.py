"""The check report page: every check and whatever its result carries, escaped, with no asset."""

from __future__ import annotations

import re

from sanity_tests import CheckFailure, run_checks
from service import check_report


def _passes(model, context):
    """Pass."""


def _fails(model, context):
    raise CheckFailure("NDCG@10 0.01 is below the floor 0.02 <script>alert(1)</script>")


def _report() -> dict:
    """A report as the gate's JSON gives it, with measures and parts this page does not know."""
    report = run_checks([_passes, _fails], None, context=_Context()).to_dict()
    report["results"][1]["measures"] = [
        {"name": "probe ndcg@10", "claimed": 0.25, "measured": 0.0123, "low": 0.01,
         "high": 0.015, "rule": "measured >= claimed / 2"},
        {"name": "probe ndcg@10 - popularity", "claimed": None, "measured": -0.02,
         "low": None, "high": None, "rule": "interval above 0"}]
    report["results"][1]["users"] = 812
    report["comparison"] = {"overlap@10": 0.42}
    return report


class _Context:
    run_id = "7"


CLAIMED = {"holdout_metrics": {"precision@10": 0.05, "recall@10": 0.3, "ndcg@10": 0.25,
                               "coverage": 0.4},
           "baseline_metrics": {"precision@10": 0.02, "recall@10": 0.1, "ndcg@10": 0.09,
                                "coverage": 0.05},
           "holdout_intervals": {"ndcg@10": [0.2, 0.3]},
           "data_fingerprint": {"source": "sample world"}}


def test_page_shows_each_check_its_details_and_claimed_against_measured():
    verdict = {"passed": False, "reason": "_fails: NDCG@10 0.01 is below the floor",
               "seconds": 0.5, "fingerprint": "abcdef0123456789"}
    page = check_report.render("LineupTrainFlow/7", verdict, _report(), CLAIMED)
    assert "REJECTED" in page and "1 of 2 passed" in page
    assert re.search(r'class="pass">PASS</td><td>_passes', page)
    assert re.search(r'class="fail">FAIL</td><td>_fails', page)
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert re.search(r"<td>_fails</td><td>probe ndcg@10</td><td class='num'>0.25</td>"
                     r"<td class='num'>0.0123</td><td>\[0.01, 0.015\]</td>"
                     r'<td class="fail">FAIL</td><td>measured &gt;= claimed / 2</td>', page)
    assert "<dt>users</dt><dd>812</dd>" in page  # whatever else a result carries
    assert "[0.2, 0.3]" in page  # the claimed interval
    assert "overlap@10" in page  # any other part of the report
    assert page.count("<svg") == 3  # time per check, claimed against measured, claimed metrics
    assert not re.search(r"\b(src|href)=|@import|url\(", page)


def test_a_passing_report_without_measures_still_renders():
    report = run_checks([_passes], None, context=_Context()).to_dict()
    page = check_report.render("LineupTrainFlow/8", {"passed": True, "reason": "passed"},
                               report, {})
    assert "PASSED" in page and "1 of 1 passed" in page
    assert "No check in this report measured the model." in page
    assert page.count("<svg") == 2
