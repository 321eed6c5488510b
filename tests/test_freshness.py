"""The new-events measurement: only metadata scoring gives events listed after the fit a slot."""

from __future__ import annotations

from service.training.freshness import measure
from tests.conftest import SMALL_WORLD


def test_only_the_metadata_model_recommends_events_listed_after_the_fit():
    world = {key: SMALL_WORLD[key] for key in ("users", "events", "interactions")}
    out = measure(SMALL_WORLD["as_of"], days=3, slot_users=300, **world)
    after = "slots listed after (day 3)"
    assert out["purchases"][after] > 0.05
    assert out["metadata model"][after] > 0.0
    for baseline in ("popularity", "favourite category and city", "today's model"):
        assert out[baseline][after] == 0.0 and out[baseline]["ndcg@10 listed after"] == 0.0
    assert 0.0 < out["metadata model"]["ndcg@10"] < 1.0
