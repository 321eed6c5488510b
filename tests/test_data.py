"""Reading and validating the interactions and items CSVs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.training.csv_files import DataError, parse_columns
from service.training.data import load_interactions, load_items

GOOD_ROWS = "u1,e1,2026-11-20T13:05:00Z,5.0\nu2,e2,2026-11-21T08:00:00Z,1.0\n"


def _write(tmp_path, text, name="interactions.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("body, message", [
    ("user_id,item_id,timestamp,weight\n" + GOOD_ROWS + "u3,e3,yesterday,1.0\n",
     "interactions.csv, row 4: timestamp 'yesterday' is not ISO 8601 or epoch seconds"),
    ("user_id,item_id,timestamp,weight\n" + GOOD_ROWS + "u3,e3,2026-11-21T08:00:00Z,lots\n",
     "interactions.csv, row 4: weight 'lots' is not a number"),
    ("user_id,item_id,timestamp,weight\nu1,e1,2026-11-21T08:00:00Z\n",
     "interactions.csv, row 2: expected 4 fields, got 3"),
    ("user_id,item_id,timestamp,weight\n" + GOOD_ROWS + "u3,e3,1700000000,1.0,extra\n",
     "interactions.csv, row 4: expected 4 fields, got 5"),
    ("user,item,when\nu1,e1,1700000000\n",
     "interactions.csv, row 1: missing column(s) timestamp; header is 'user,item,when', "
     "expected user_id,item_id,timestamp (map other names with --columns, "
     "e.g. userId=user_id,movieId=item_id)"),
    ("user_id,item_id,timestamp,weight\nu1,e1,1700000000,-2\n",
     "interactions.csv, row 2: weight '-2' must be a finite number >= 0"),
    ("user_id,item_id,timestamp\n,e1,1700000000\n",
     "interactions.csv, row 2: empty user_id"),
    ("", "interactions.csv: file is empty, expected a header row with columns "
         "user_id,item_id,timestamp"),
    ("user_id,item_id,timestamp\n", "interactions.csv: file has a header but no data rows"),
])
def test_malformed_interactions(tmp_path, body, message):
    with pytest.raises(DataError) as caught:
        load_interactions(_write(tmp_path, body))
    assert str(caught.value) == message


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"^nowhere\.csv: file not found \("):
        load_interactions(tmp_path / "nowhere.csv")


def test_iso_and_epoch_timestamps_agree(tmp_path):
    iso = load_interactions(_write(tmp_path, "user_id,item_id,timestamp\n"
                                   "u1,e1,2023-11-14T22:13:20Z\nu1,e2,2023-11-14T22:13:20\n"
                                   "u1,e3,2023-11-14T23:13:20+01:00\n"))
    epoch = load_interactions(_write(tmp_path, "user_id,item_id,timestamp\n"
                                     "u1,e1,1700000000\nu1,e2,1700000000.0\nu1,e3,1700000000\n",
                                     "epoch.csv"))
    assert iso.timestamp.tolist() == epoch.timestamp.tolist() == [1.7e9] * 3


def test_no_weight_column_means_default_weight_and_extra_columns_are_ignored(tmp_path):
    log = load_interactions(_write(tmp_path, "user_id,item_id,timestamp,note\n"
                                   "u1,e1,1260759144,x\nu2,e1,1260759182,y\n"))
    assert log.weight.tolist() == [5.0, 5.0] and log.seen.tolist() == [True, True]


def test_a_movielens_header_reads_as_it_is_and_every_rating_is_seen(tmp_path):
    log = load_interactions(_write(tmp_path, "userId,movieId,rating,timestamp\n"
                                   "1,31,2.5,1260759144\n1,1029,3.0,1260759179\n"
                                   "2,31,4.0,1260759182\n"))
    assert len(log) == 3
    assert log.weight.tolist() == [2.5, 3.0, 4.0]
    assert log.seen.all()
    assert log.user_id.tolist() == ["1", "1", "2"]
    assert log.item_id.tolist() == ["31", "1029", "31"]
    assert log.user_codes.dtype == np.int32 and log.timestamp.dtype == np.float64


def test_explicit_column_mapping(tmp_path):
    path = _write(tmp_path, "who,what,when\nu1,e1,1700000000\n")
    log = load_interactions(path, parse_columns("who=user_id, what=item_id,when=timestamp"))
    assert log.user_id.tolist() == ["u1"] and log.item_id.tolist() == ["e1"]
    with pytest.raises(DataError, match="missing column"):
        load_interactions(_write(tmp_path, "userId,movieId,timestamp\n1,2,3\n", "exact.csv"),
                          parse_columns("userId=user_id"))
    with pytest.raises(DataError, match="'who' is not file_column=lineup_column"):
        parse_columns("who")


def test_interaction_kind_decides_what_is_seen(tmp_path):
    log = load_interactions(_write(tmp_path, "user_id,item_id,timestamp,weight,interaction\n"
                                   "u1,e1,1700000000,5,purchase\nu1,e2,1700000001,1,view\n"
                                   "u2,e2,1700000002,1,View\nu2,e3,1700000003,4,Rating\n"))
    assert log.seen.tolist() == [True, False, False, True]
    assert log.weight.tolist() == [5.0, 1.0, 1.0, 4.0]


@pytest.mark.parametrize("body, message", [
    ("196,242,3,881250949\n186,302,3,891717742\n",
     "interactions.csv, row 1: '196,242,3,881250949' looks like data, not a header; "
     "the file needs a header row naming user_id,item_id,timestamp"),
    ("user_id,item_id,timestamp\nu1,e1,1700000000\n12.0,e1,1700000001\n",
     "interactions.csv, row 3: user_id '12.0' looks like a float written by a data frame; "
     "ids are strings, write them as integers ('12') or text"),
])
def test_headers_and_ids_that_look_numeric(tmp_path, body, message):
    with pytest.raises(DataError) as caught:
        load_interactions(_write(tmp_path, body))
    assert str(caught.value) == message


def test_a_latin1_file_is_read_with_a_warning_naming_the_row(tmp_path, caplog):
    path = tmp_path / "items.csv"
    path.write_bytes("item_id,title\ne1,Plain\ne2,Caf\u00e9 Concert\n".encode("latin-1"))
    catalogue = load_items(path)
    assert catalogue.title.tolist() == ["Plain", "Caf\u00e9 Concert"]
    assert "items.csv, row 3: byte 0xe9 is not UTF-8; reading the file as Latin-1" in caplog.text


def test_items_with_and_without_starts_at(tmp_path):
    path = _write(tmp_path, "item_id,title,category,starts_at,venue\n"
                  "e2,\"Rock, live\",rock,2026-12-01T20:00:00Z,Hall\n"
                  "e1,Quiz,,,Pub\n", "items.csv")
    catalogue = load_items(path)
    assert catalogue.item_id.tolist() == ["e1", "e2"]
    assert catalogue.title.tolist() == ["Quiz", "Rock, live"]
    assert catalogue.category.tolist() == ["unknown", "rock"]
    assert math.isinf(catalogue.starts_at[0]) and catalogue.starts_at[1] > 0
    assert len(catalogue) == 2
    assert catalogue.venue.tolist() == ["Pub", "Hall"] and catalogue.performer is None
    assert catalogue.available is None


@pytest.mark.parametrize("column, values, on_sale", [
    ("status", ["on_sale", "Sold Out", "cancelled", ""], [True, False, False, True]),
    ("available", ["true", "false", "0", ""], [True, False, False, True]),
])
def test_items_say_which_events_are_on_sale(tmp_path, column, values, on_sale):
    rows = "".join(f"e{i},{value}\n" for i, value in enumerate(values))
    catalogue = load_items(_write(tmp_path, f"item_id,{column}\n{rows}", "items.csv"))
    assert catalogue.available.tolist() == on_sale


@pytest.mark.parametrize("body, message", [
    ("item_id,starts_at\ne1,soon\n",
     "items.csv, row 2: timestamp 'soon' is not ISO 8601 or epoch seconds"),
    ("title,starts_at\nQuiz,1700000000\n",
     "items.csv, row 1: missing column(s) item_id; header is 'title,starts_at', "
     "expected item_id (map other names with --columns, e.g. userId=user_id,movieId=item_id)"),
    ("item_id,title\ne1,A\ne2,B\ne1,C\n",
     "items.csv, row 4: duplicate item_id 'e1' (first on row 2)"),
    ("item_id,available\ne1,yes\ne2,perhaps\n",
     "items.csv, row 3: available 'perhaps' is not true or false"),
])
def test_malformed_items(tmp_path, body, message):
    with pytest.raises(DataError) as caught:
        load_items(_write(tmp_path, body, "items.csv"))
    assert str(caught.value) == message


def test_sample_world_round_trips(tmp_path):
    from service.training.sample_data import generate, write_sample

    paths = write_sample(tmp_path, "2026-11-27", 3, users=200, events=50, interactions=2000)
    log, catalogue = generate("2026-11-27", 3, users=200, events=50, interactions=2000)
    read = load_interactions(paths[0])
    assert read.user_id.tolist() == log.user_id.tolist()
    assert read.timestamp.tolist() == log.timestamp.tolist()
    assert read.weight.tolist() == log.weight.tolist()
    assert read.seen.tolist() == log.seen.tolist() and 0 < log.seen.mean() < 1
    items = load_items(paths[1])
    assert items.item_id.tolist() == catalogue.item_id.tolist()
    assert items.starts_at.tolist() == catalogue.starts_at.tolist()
