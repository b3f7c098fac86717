"""Defects found by a new user following the README on public synthetic EHR data (session 15)."""

from datetime import datetime

import numpy as np
import polars as pl

from ehrdx.data.meds import normalise_events
from ehrdx.data.patients import birth_times
from ehrdx.data.store import build_store


def _t(day: str) -> int:
    return int((datetime.fromisoformat(day) - datetime(1970, 1, 1)).total_seconds())


def _store(rows, path, gap=0):
    frame = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Utf8, "code": pl.Utf8,
                                       "numeric_value": pl.Float64}, orient="row")
    return build_store([normalise_events(frame, "hand.csv")], path, visit_gap_seconds=gap)


ROWS = [
    # 1: born before the first visit (the usual case)
    (1, "1980-05-01", "MEDS_BIRTH", None), (1, "2020-01-01", "A", None),
    # 2: a newborn: birth recorded at the first visit's time (it sorts after that visit's events)
    (2, None, "GENDER//F", None), (2, "2021-03-04", "A", None), (2, "2021-03-04", "MEDS_BIRTH", None),
    (2, "2021-03-04T06:00:00", "B", None), (2, "2021-06-01", "B", None),
    # 3: two births recorded: the earliest counts (as for 'events before birth')
    (3, "1990-01-01", "MEDS_BIRTH", None), (3, "1991-01-01", "MEDS_BIRTH", None), (3, "2020-01-01", "A", None),
    # 4: a birth recorded only after the first visit: unknown, nothing after the first visit's time is read
    (4, "2020-01-01", "A", None), (4, "2022-01-01", "MEDS_BIRTH", None),
    # 5: no birth at all
    (5, "2020-01-01", "A", None),
]


def test_a_birth_at_the_first_visits_time_gives_the_patient_an_age(tmp_path):
    # Public synthetic MEDS (Eunomia, clinosim) record newborns' births at their first encounter's
    # timestamp; the age of those patients was left unknown without a word
    want = [_t("1980-05-01"), _t("2021-03-04"), _t("1990-01-01"), np.nan, np.nan]
    for gap in (0, 12 * 3600):
        store = _store(ROWS, tmp_path / f"s{gap}", gap=gap)
        got = birth_times(store, np.arange(len(store)))
        np.testing.assert_allclose(got, want, equal_nan=True)
        # any order and repeats of rows
        got = birth_times(store, np.array([4, 1, 1, 0]))
        np.testing.assert_allclose(got, [np.nan, want[1], want[1], want[0]], equal_nan=True)


def test_cdm_tables_that_are_not_read_are_counted(tmp_path):
    # An Eunomia export holds procedure_occurrence (37,409 rows) beside the tables ehrdx reads; it was
    # ignored without a word, as though every table had been read
    from ehrdx.data.omop import iter_omop

    root = tmp_path / "omop"
    root.mkdir()
    pl.DataFrame({"person_id": [1, 2], "year_of_birth": [1970, 1980], "gender_source_value": ["F", "M"]}) \
        .write_csv(root / "person.csv")
    pl.DataFrame({"person_id": [1, 2], "condition_source_value": ["E11", "I10"],
                  "condition_start_date": ["2020-01-01", "2020-02-01"]}).write_csv(root / "condition_occurrence.csv")
    pl.DataFrame({"person_id": [1, 1, 2], "procedure_concept_id": [1, 2, 3],
                  "procedure_date": ["2020-01-01"] * 3}).write_parquet(root / "procedure_occurrence.parquet")
    store = build_store(iter_omop(root), tmp_path / "store")
    counts = store.counts
    assert counts["omop_procedure_occurrence_rows_not_read"] == 3
    assert not any("device_exposure" in k for k in counts)


def test_patients_left_without_an_age_and_with_two_births_are_counted(tmp_path):
    # events before birth were counted as events only: nothing said how many patients were left without an age
    # (a birth after the first visit is not read), nor that some had two births (the earliest is used)
    from cli_run import run, words

    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n"
                      "1,2015-01-01,DX//E11\n1,2016-01-01,DX//I10\n1,2017-01-01,MEDS_BIRTH\n1,2018-01-01,DX//E11\n"
                      "2,1950-01-01,MEDS_BIRTH\n2,1951-06-01,MEDS_BIRTH\n2,2015-01-01,DX//E11\n2,2016-01-01,DX//I10\n"
                      "3,1960-01-01,MEDS_BIRTH\n3,2015-01-01,DX//E11\n3,2016-01-01,DX//I10\n")
    r = run("targets", "--events", events, "--out", tmp_path / "t.csv")
    assert r.exit_code == 0, r.output
    said = words(r.output)
    assert "events before birth: 2" in said
    assert "patients with events before birth left without age: 1" in said
    assert "patients with several birth times earliest taken: 1" in said
