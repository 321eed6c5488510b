"""The training run's Metaflow card: its contents, its history chart, and a real browser on it."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from service import config
from tests import browser

# The first test here may train the session's shared run history (six runs):
# give it the time that takes on a loaded machine, beyond the 300 s default.
pytestmark = pytest.mark.timeout(900)

#: The number of Vega charts a training card draws: metrics, search, history.
CARD_CHARTS = 3

#: True once every Vega chart on the page has drawn marks into its SVG or canvas.
CHARTS_DRAWN = """(() => {
  const embeds = document.querySelectorAll('.vega-embed');
  const drawn = [...embeds].filter(e => e.querySelector('svg.marks g, canvas.marks'));
  return embeds.length > 0 && drawn.length === embeds.length ? embeds.length : null;
})()"""

#: A training card's only outside request: Metaflow's own stylesheet imports its font.
METAFLOW_FONT = "https://fonts.googleapis.com/"


def card_html(settings: dict[str, Any], run_id: str) -> str:
    """Return the HTML of the training card of one run's end step."""
    config.apply_metaflow(settings)
    from metaflow import Run
    from metaflow.cards import get_cards

    end = Run(f"{settings['FLOW_NAME']}/{run_id}")["end"].task
    cards = get_cards(end, id="training")
    assert len(cards) == 1, f"run {run_id} has {len(cards)} training cards"
    return cards[0].get()


def card_components(page: str) -> list[dict[str, Any]]:
    """Decode the components a Metaflow card page carries, depth first."""
    encoded = re.search(r'__MF_DATA__\["[^"]+"\] = "([A-Za-z0-9+/=]+)"', page)
    assert encoded, "the card carries no data"
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "type" in node:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(base64.b64decode(encoded.group(1))))
    return found


@pytest.fixture(scope="module")
def history_trainer(history):
    """Settings that read the shared run history with the Metaflow client."""
    return config.load({"LINEUP_HOME": str(Path(history.datastore).parent),
                        "LINEUP_DATASTORE_ROOT": history.datastore})


def test_card_shows_fingerprint_metrics_search_choice_and_golden_lists(history, history_trainer):
    page = card_html(history_trainer, history.good[1])
    config.apply_metaflow(history_trainer)
    import metaflow

    data = metaflow.Run(f"{history_trainer['FLOW_NAME']}/{history.good[1]}").data
    text = json.dumps(card_components(page), ensure_ascii=False)
    assert data.data_fingerprint["sha256"] in text
    assert f"{data.holdout_metrics['ndcg@10']:.4f}" in text
    assert f"{data.baseline_metrics['ndcg@10']:.4f}" in text
    assert f"Search: {len(data.search_results)} points" in text
    golden = str(data.golden_users[0]["user_id"])
    first = data.model.recommend(golden, n=10, as_of=data.as_of).items[0]
    assert golden in text and f"1. {data.model.item_titles_[first]}" in text


def test_card_history_chart_lists_successful_runs_by_end_time(history, history_trainer):
    page = card_html(history_trainer, history.corrupt)
    charts = [c["spec"] for c in card_components(page) if c["type"] == "vegaChart"]
    assert len(charts) == CARD_CHARTS
    points = [v for v in charts[-1]["data"]["values"] if v["recommender"] == "model"]
    # The failed run has no metrics and the unfinished one came after.
    assert [p["run"] for p in points] == [*history.good, history.damaged, history.corrupt]
    assert [p["finished"] for p in points] == sorted(p["finished"] for p in points)


def test_card_draws_in_chromium_without_script_errors(history, history_trainer, tmp_path):
    path = tmp_path / "card.html"
    path.write_text(card_html(history_trainer, history.good[1]), encoding="utf-8")
    load = browser.open_page(path, CHARTS_DRAWN, tmp_path / "card.png")
    assert load.errors == []
    assert load.ready == CARD_CHARTS, "not every chart drew"
    outside = [url for url in load.requests if not url.startswith(("file:", "data:"))]
    assert all(url.startswith(METAFLOW_FONT) for url in outside), outside
    assert load.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load.screenshot.stat().st_size > 50_000  # a blank page is a few kB


def test_card_with_intervals_and_a_wide_search_draws_in_chromium(fitted_model, tmp_path):
    # What the flow stores once its evaluation has intervals (docs/design.md),
    # rendered by Metaflow's blank card as `card create` does.
    from metaflow.plugins.cards.card_modules.basic import BlankCard

    from service.training import card

    artifacts = {
        "holdout_metrics": {"precision@10": 0.05, "recall@10": 0.3, "ndcg@10": 0.25,
                            "coverage": 0.4},
        "baseline_metrics": {"precision@10": 0.02, "recall@10": 0.1, "ndcg@10": 0.09,
                             "coverage": 0.05},
        "holdout_intervals": {"ndcg@10": [0.2123, 0.3], "recall@10": [0.25, 0.35]},
        "baseline_difference": {"ndcg@10": {"mean": 0.16, "low": 0.1, "high": 0.2}},
        "evaluation_protocol": {"kind": "last interactions per user", "users": 812},
        "best_params": {"n_components": 32, "half_life_days": 14.0},
        "search_results": [{"n_components": k, "half_life_days": h, "ndcg@10": 0.2 + k / 1e3}
                           for k in (16, 32, 64) for h in (7.0, 14.0, None)],
        "golden_users": [{"user_id": str(user), "holdout_items": []}
                         for user in fitted_model.user_ids_[:3]],
        "as_of": 1_795_000_000.0, "data_fingerprint": {"sha256": "ab" * 32},
    }
    history = [card.HistoryPoint(str(day), f"2026-11-{day:02d}T04:00:00Z", 0.2 + day / 1e3, 0.09)
               for day in range(1, 8)]
    page = BlankCard(components=card.build(artifacts, fitted_model, history)).render(
        SimpleNamespace(pathspec="LineupTrainFlow/1/end/2"))
    text = json.dumps(card_components(page))
    assert "[0.2123, 0.3000]" in text and "[0.1000, 0.2000]" in text
    assert "last interactions per user" in text and "Search: 9 points" in text
    path = tmp_path / "card.html"
    path.write_text(page, encoding="utf-8")
    load = browser.open_page(path, CHARTS_DRAWN, tmp_path / "card.png")
    assert load.errors == [] and load.ready == CARD_CHARTS


FAILING_CARD_FLOW = '''
from metaflow import FlowSpec, card, step


class BrokenCardFlow(FlowSpec):
    """1) start: store artifacts the card cannot read, then attach the card; 2) end."""

    @card(type="blank", id="training")
    @step
    def start(self):
        """Attach the training card to nonsense."""
        from service.training import card as training_card

        self.holdout_metrics = "not a mapping"
        self.search_results = 42
        training_card.attach(self)
        self.next(self.end)

    @step
    def end(self):
        """Nothing."""


if __name__ == "__main__":
    BrokenCardFlow()
'''


def test_a_card_that_cannot_be_built_never_fails_the_run(tmp_path):
    flow_file = tmp_path / "broken_card_flow.py"
    flow_file.write_text(FAILING_CARD_FLOW)
    settings = config.load({"LINEUP_HOME": str(tmp_path / "home"), "METAFLOW_USER": "lineup-test"})
    Path(settings["DATASTORE_ROOT"]).mkdir(parents=True)
    done = subprocess.run([sys.executable, str(flow_file), "--no-pylint", "run"],
                          env={**os.environ, **config.metaflow_environment(settings)},
                          cwd=settings["DATASTORE_ROOT"], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    config.apply_metaflow(settings)
    from metaflow import Flow
    from metaflow.cards import get_cards

    start = Flow("BrokenCardFlow").latest_run["start"].task
    assert "The training card failed" in json.dumps(card_components(get_cards(start)[0].get()))
