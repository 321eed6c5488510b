"""The one configuration module: defaults, and settings that name their mistakes."""

from __future__ import annotations

import pytest

from service import config


def test_defaults_need_no_environment(tmp_path):
    settings = config.load({"LINEUP_HOME": str(tmp_path)})
    assert settings["WORKERS"] == 2 and settings["THREADS"] == 2
    assert settings["POLL_INTERVAL"] == 300.0 and settings["MAX_WALKBACK"] == 10
    assert settings["DATASTORE_ROOT"].startswith(str(tmp_path))


@pytest.mark.parametrize("name, value, words", [
    ("LINEUP_THREADS", "two", "LINEUP_THREADS must be an integer, got 'two'"),
    ("LINEUP_MAX_WALKBACK", "1.5", "LINEUP_MAX_WALKBACK must be an integer, got '1.5'"),
    ("LINEUP_POLL_INTERVAL", "5m", "LINEUP_POLL_INTERVAL must be a number, got '5m'"),
])
def test_a_malformed_number_names_the_variable(tmp_path, name, value, words):
    with pytest.raises(ValueError) as raised:
        config.load({"LINEUP_HOME": str(tmp_path), name: value})
    assert str(raised.value) == words


def test_numbers_are_read_as_their_type(tmp_path):
    settings = config.load({"LINEUP_HOME": str(tmp_path), "LINEUP_THREADS": " 8 ",
                            "LINEUP_CHECK_TIMEOUT": "2.5"})
    assert settings["THREADS"] == 8 and settings["CHECK_TIMEOUT"] == 2.5


def test_pointing_metaflow_at_a_store_that_is_gone_never_makes_it_again(tmp_path):
    # A reader applies the settings after checking the store; if the store was
    # moved away in between, nothing may make it again, empty, under the readers.
    gone = tmp_path / "datastore"
    settings = config.load({"LINEUP_HOME": str(tmp_path / "home"), "METAFLOW_USER": "lineup-test",
                            "LINEUP_DATASTORE_ROOT": str(gone)})
    with pytest.raises(FileNotFoundError):
        config.apply_metaflow(settings)
    assert not gone.exists()
