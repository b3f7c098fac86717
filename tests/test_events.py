"""Event streams: MEDS and long-table readers, validation, and the compact store."""

from datetime import datetime

import numpy as np
import polars as pl
import pytest

from ehrdx.data.meds import iter_event_table, iter_meds, normalise_events, read_subject_splits, write_meds
from ehrdx.data.store import STATIC_TIME, EventStore, build_store
from ehrdx.errors import DataError


def hand_built_meds(root):
    """A MEDS dataset written directly with pyarrow-typed polars frames, as another writer would."""
    data = pl.DataFrame(
        {
            "subject_id": [1, 1, 1, 1, 1, 2, 2, 2],
            "time": [None, datetime(1980, 1, 1), datetime(2020, 1, 1, 9), datetime(2020, 1, 1, 9),
                     datetime(2021, 6, 1), None, datetime(1990, 5, 5), datetime(2022, 2, 2)],
            "code": ["GENDER//F", "MEDS_BIRTH", "ICD10//E11.9", "LAB//HBA1C", "ICD10//I10",
                     "GENDER//M", "MEDS_BIRTH", "ICD10//J44"],
            "numeric_value": [None, None, None, 7.1, None, None, None, None],
            "text_value": [None] * 8,
        },
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.Utf8,
                "numeric_value": pl.Float32, "text_value": pl.Utf8},
    )
    (root / "data" / "train").mkdir(parents=True)
    (root / "metadata").mkdir()
    data.filter(pl.col("subject_id") == 1).write_parquet(root / "data" / "train" / "0.parquet")
    data.filter(pl.col("subject_id") == 2).write_parquet(root / "data" / "train" / "1.parquet")
    pl.DataFrame({"subject_id": [1, 2], "split": ["train", "held_out"]}).write_parquet(
        root / "metadata" / "subject_splits.parquet")
    pl.DataFrame({"code": ["ICD10//E11.9"], "description": ["T2DM"], "parent_codes": [["ICD10//E11"]]}).write_parquet(
        root / "metadata" / "codes.parquet")
    return data


def test_hand_built_meds_reads_into_the_store(tmp_path):
    data = hand_built_meds(tmp_path / "meds")
    store = build_store(iter_meds(tmp_path / "meds"), tmp_path / "store")
    assert store.meta["patients"] == 2 and store.meta["events"] == 8
    p = store.patient(store.row_of(1))
    assert p["times"][0] == STATIC_TIME  # static row kept, first
    assert [store.code_names[c] for c in p["codes"]] == ["GENDER//F", "MEDS_BIRTH", "ICD10//E11.9",
                                                          "LAB//HBA1C", "ICD10//I10"]
    assert p["values"][3] == pytest.approx(7.1) and np.isnan(p["values"][2])
    # two visits: the two events at 2020-01-01 09:00 are one; birth and static rows are none
    assert p["visit_starts"].tolist() == [2, 4]
    assert p["visit_ends"].tolist() == [4, 5]
    back = store.to_frame()
    assert back.equals(data.drop("text_value"))
    assert read_subject_splits(tmp_path / "meds").get_column("split").to_list() == ["train", "held_out"]


def test_reopened_store_is_memory_mapped_and_identical(tmp_path):
    hand_built_meds(tmp_path / "meds")
    built = build_store(iter_meds(tmp_path / "meds"), tmp_path / "store")
    again = EventStore(tmp_path / "store")
    assert isinstance(again.times, np.memmap)
    for name in ("times", "codes", "offsets", "visit_starts", "visit_offsets"):
        assert np.array_equal(getattr(built, name), getattr(again, name))


def test_visit_gap_groups_events_close_in_time(tmp_path):
    frame = pl.DataFrame({"subject_id": [5, 5, 5, 5],
                          "time": [datetime(2020, 1, 1, 8), datetime(2020, 1, 1, 9), datetime(2020, 1, 1, 20),
                                   datetime(2020, 3, 1)],
                          "code": ["A", "B", "C", "D"]})
    shard = normalise_events(frame, "x.parquet")
    assert build_store([shard], tmp_path / "s0").meta["visits"] == 4
    assert build_store([shard], tmp_path / "s1", visit_gap_seconds=6 * 3600).patient(0)["visit_starts"].tolist() == [0, 2, 3]


def test_death_belongs_to_no_visit_and_never_splits_one(tmp_path):
    t = datetime(2020, 1, 1, 8)
    frame = pl.DataFrame({"subject_id": [5, 5, 5, 5], "time": [t, t, t, datetime(2020, 2, 1)],
                          "code": ["A", "MEDS_DEATH", "B", "C"]})
    store = build_store([normalise_events(frame, "x.parquet")], tmp_path / "s")
    p = store.patient(0)
    assert [store.code_names[c] for c in p["codes"]] == ["A", "B", "MEDS_DEATH", "C"]
    assert p["visit_starts"].tolist() == [0, 3] and p["visit_ends"].tolist() == [2, 4]


def test_synthetic_cohort_round_trips_through_meds(tmp_path):
    from ehrdx.data.synth import generate_cohort

    c = generate_cohort(700, seed=3)
    write_meds(tmp_path / "meds", c.events, shard_size=300)
    assert len(list((tmp_path / "meds" / "data" / "train").glob("*.parquet"))) == 3
    store = build_store(iter_meds(tmp_path / "meds"), tmp_path / "store")
    key = ["subject_id"]
    assert store.to_frame().sort(key, maintain_order=True).equals(c.events.sort(key, maintain_order=True))
    # the generator records some codes twice in one visit: kept, and counted
    assert set(store.counts) <= {"duplicate_events"}


def test_long_table_with_mapping_unsorted_and_null_codes_are_counted(tmp_path):
    p = tmp_path / "events.csv"
    p.write_text("pid,when,what,val,extra\n"
                 "2,2021-01-01,X,,a\n1,2020-05-01,Y,3.5,b\n1,2020-01-01,Z,,c\n1,2020-02-01,,,d\n")
    shards = list(iter_event_table(p, subject_col="pid", time_col="when", code_col="what", value_col="val"))
    counts = shards[0].counts
    assert counts == {"ignored_columns": 1, "null_codes_excluded": 1, "events_out_of_order_sorted": 2}
    store = build_store(shards, tmp_path / "store")
    assert store.subject_ids.tolist() == [1, 2]
    assert [store.code_names[c] for c in store.patient(0)["codes"]] == ["Z", "Y"]
    assert store.meta["counts"] == counts


@pytest.mark.parametrize(
    "rows,needles",
    [
        ("1,2020-13-45,A,\n", ["events.csv", "column 'when'", "unparseable times", "first subject 1", "row 1"]),
        (",2020-01-01,A,\n", ["column 'pid'", "empty subject ids", "row 1"]),
        ("1,2020-01-01,A,high\n", ["column 'val'", "text in the numeric value column", "'high'"]),
    ],
)
@pytest.mark.usefixtures("show_ids")
def test_bad_event_tables_name_file_column_and_subject(tmp_path, rows, needles):
    p = tmp_path / "events.csv"
    p.write_text("pid,when,what,val\n" + rows)
    with pytest.raises(DataError) as exc:
        list(iter_event_table(p, subject_col="pid", time_col="when", code_col="what", value_col="val"))
    for n in needles:
        assert n in str(exc.value), str(exc.value)


@pytest.mark.usefixtures("show_ids")
def test_subject_split_across_shards_is_an_error(tmp_path):
    f = pl.DataFrame({"subject_id": [1], "time": [datetime(2020, 1, 1)], "code": ["A"]})
    with pytest.raises(DataError, match="subject 1 appears in two shards"):
        build_store([normalise_events(f, "a.parquet"), normalise_events(f, "b.parquet")], tmp_path / "s")


def test_missing_meds_directory_and_missing_columns(tmp_path):
    with pytest.raises(DataError, match="MEDS directory not found"):
        list(iter_meds(tmp_path / "nope"))
    (tmp_path / "m" / "data").mkdir(parents=True)
    with pytest.raises(DataError, match="no data/"):
        list(iter_meds(tmp_path / "m"))
    pl.DataFrame({"subject_id": [1], "code": ["A"]}).write_parquet(tmp_path / "m" / "data" / "0.parquet")
    with pytest.raises(DataError, match="no time column 'time'"):
        list(iter_meds(tmp_path / "m"))


def test_synth_cli_writes_a_meds_dataset(tmp_path):
    from typer.testing import CliRunner

    from ehrdx.cli import app

    r = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "c"), "--patients", "400", "--format", "meds"])
    assert r.exit_code == 0, r.output
    root = tmp_path / "c" / "meds"
    splits = read_subject_splits(root)
    assert sorted(splits.get_column("split").unique()) == ["held_out", "train", "tuning"]
    assert splits.height == 400
    codes = pl.read_parquet(root / "metadata" / "codes.parquet")
    e11 = codes.filter(pl.col("code") == "DX//E11").row(0, named=True)
    assert e11["description"] == "Type 2 diabetes mellitus" and e11["parent_codes"] == ["DX//E11"]
    store = build_store(iter_meds(root), tmp_path / "store")
    assert len(store) == 400
