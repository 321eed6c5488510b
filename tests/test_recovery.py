"""A service with no model recovers in seconds once its store does, and says why meanwhile."""

from __future__ import annotations

import time

from tests.server import Server


def test_a_cold_start_on_a_missing_store_serves_seconds_after_it_returns(history, tmp_path):
    link = tmp_path / "store"  # the datastore root, missing at start
    server = Server(tmp_path, {"LINEUP_DATASTORE_ROOT": str(link), "LINEUP_POLL_INTERVAL": "300"})
    server.start()
    try:
        time.sleep(3)  # a few failed selections: the backoff has grown past its first step
        answer = server.get("/readyz")
        error = answer.json()["error"]
        assert answer.status_code == 503 and error["code"] == "model_unavailable"
        assert "missing or unreadable" in error["message"]
        assert "LINEUP_DATASTORE_ROOT" in error["message"]
        status = server.admin("GET", "/admin/status").json()
        assert "missing or unreadable" in status["last_selection"]["error"]

        link.symlink_to(history.datastore)
        restored = time.monotonic()
        server.wait_for(lambda: server.all_workers_serve(history.good[1]), 20, "serving")
        assert time.monotonic() - restored < 20  # not the 300 s poll interval
        for _ in range(4):  # whichever worker answers
            assert server.get("/recommendations?user_id=u-000001").headers["X-Model-Run"] == \
                history.good[1]
    finally:
        server.stop()
