"""OMOP CDM 5.4 input: the same cohort written as MEDS and as OMOP gives the same store."""

import polars as pl
import pytest

from ehrdx.data.meds import iter_meds, write_meds
from ehrdx.data.omop import iter_omop
from ehrdx.data.store import ARRAYS, build_store
from ehrdx.data.synth_visits import generate_longitudinal
from ehrdx.errors import DataError


def write_omop(events: pl.DataFrame, root):
    """The synthetic cohort as OMOP tables: person (CSV), visit_occurrence, condition_occurrence (CSV),
    measurement (Parquet), death (CSV)."""
    root.mkdir(parents=True, exist_ok=True)
    e = events.with_columns(pl.col("code").str.split_exact("//", 1).struct.rename_fields(["kind", "value"])).unnest("code")
    gender = e.filter(pl.col("kind") == "GENDER").select("subject_id", pl.col("value").alias("g"))
    birth = e.filter(pl.col("kind") == "MEDS_BIRTH").select("subject_id", pl.col("time").alias("birth"))
    person = gender.join(birth, on="subject_id", how="full", coalesce=True).sort("subject_id")
    person.select(pl.col("subject_id").alias("person_id"),
                  pl.col("g").replace_strict({"F": 8532, "M": 8507}, default=0).alias("gender_concept_id"),
                  pl.col("birth").dt.year().alias("year_of_birth"), pl.col("birth").dt.month().alias("month_of_birth"),
                  pl.col("birth").dt.day().alias("day_of_birth"), pl.col("birth").alias("birth_datetime"),
                  pl.col("g").alias("gender_source_value")).write_csv(root / "person.csv")
    visits = e.filter(pl.col("kind") == "ENCOUNTER")
    visits.select(pl.int_range(pl.len()).alias("visit_occurrence_id"), pl.col("subject_id").alias("person_id"),
                  pl.lit(9202).alias("visit_concept_id"), pl.col("time").dt.date().alias("visit_start_date"),
                  pl.col("time").alias("visit_start_datetime")).write_parquet(root / "visit_occurrence.parquet")
    e.filter(pl.col("kind") == "DX").select(
        pl.col("subject_id").alias("person_id"), pl.lit(0).alias("condition_concept_id"),
        pl.col("time").dt.date().alias("condition_start_date"), pl.col("time").alias("condition_start_datetime"),
        pl.col("value").alias("condition_source_value")).write_csv(root / "condition_occurrence.csv")
    e.filter(pl.col("kind") == "LAB").select(
        pl.col("subject_id").alias("person_id"), pl.lit(0).alias("measurement_concept_id"),
        pl.col("time").dt.date().alias("measurement_date"), pl.col("time").alias("measurement_datetime"),
        pl.col("numeric_value").alias("value_as_number"), pl.col("value").alias("measurement_source_value"),
    ).write_parquet(root / "measurement.parquet")
    e.filter(pl.col("kind") == "MEDS_DEATH").select(
        pl.col("subject_id").alias("person_id"), pl.col("time").dt.date().alias("death_date"),
        pl.col("time").alias("death_datetime")).write_csv(root / "death.csv")
    return root


PREFIXES = {"visit": "ENCOUNTER", "condition": "DX", "measurement": "LAB"}


def _bytes(d):
    return {n: (d / f"{n}.bin").read_bytes() for n in ARRAYS} | {"codes": (d / "codes.json").read_text()}


def test_the_same_cohort_as_meds_and_as_omop_gives_the_same_store(tmp_path):
    events = generate_longitudinal(400, seed=13).events
    assert events.filter(pl.col("code") == "MEDS_DEATH").height > 0
    meds = write_meds(tmp_path / "meds", events, shard_size=10_000)  # one shard, like one OMOP chunk
    omop = write_omop(events, tmp_path / "omop")
    a = build_store(iter_meds(meds), tmp_path / "from_meds")
    b = build_store(iter_omop(omop, prefixes=PREFIXES), tmp_path / "from_omop")
    assert a.meta["events"] == b.meta["events"] == events.height
    assert _bytes(a.directory) == _bytes(b.directory)
    assert b.counts == a.counts


def test_persons_are_read_in_chunks_with_the_same_events(tmp_path):
    events = generate_longitudinal(300, seed=2).events
    omop = write_omop(events, tmp_path / "omop")
    whole = build_store(iter_omop(omop, prefixes=PREFIXES), tmp_path / "whole")
    parts = build_store(iter_omop(omop, prefixes=PREFIXES, persons_per_shard=70), tmp_path / "parts")
    assert len(parts.meta["sources"]) == 5
    assert _bytes(whole.directory) == _bytes(parts.directory)


def _write(frame: pl.DataFrame, path):
    frame.write_csv(path) if path.suffix == ".csv" else frame.write_parquet(path)


def test_vocabulary_prefixes_from_the_concept_table_and_every_row_accounted_for(tmp_path):
    root = tmp_path / "omop"
    root.mkdir()
    _write(pl.DataFrame({"PERSON_ID": [1, 2, None], "GENDER_CONCEPT_ID": [8532, 8507, 8532],
                         "YEAR_OF_BIRTH": [1950, 1980, 1990], "MONTH_OF_BIRTH": [None, 6, 1],
                         "DAY_OF_BIRTH": [None, 15, 1]}), root / "PERSON.csv")  # upper-case export
    _write(pl.DataFrame({"concept_id": [45576876, 19019073, 3004410, 1],
                         "vocabulary_id": ["ICD10CM", "RxNorm", "LOINC", "SNOMED"],
                         "concept_code": ["E11.9", "860975", "4548-4", "44054006"]}), root / "concept.parquet")
    _write(pl.DataFrame({"person_id": [1, 1, 2, 3, 2], "condition_concept_id": [1, 1, 1, 1, 1],
                         "condition_start_date": ["2020-01-05", "2020-02-01", "2021-03-03", "2020-01-01", None],
                         "condition_source_value": ["E11.9", "I10", "E11.9", "E11.9", "E11.9"],
                         "condition_source_concept_id": [45576876, 0, 45576876, 45576876, 45576876]}),
           root / "condition_occurrence.csv")
    _write(pl.DataFrame({"person_id": [1], "drug_concept_id": [19019073], "drug_exposure_start_date": ["2020-01-05"],
                         "drug_source_value": ["metformin 500"], "drug_source_concept_id": [19019073]}),
           root / "drug_exposure.csv")
    _write(pl.DataFrame({"person_id": [1, 2], "measurement_concept_id": [3004410, 3004410],
                         "measurement_date": ["2020-01-05", "2021-03-03"], "measurement_datetime": ["2020-01-05 09:30:00", None],
                         "value_as_number": ["7.9", ""], "measurement_source_value": ["HbA1c", "HbA1c"],
                         "measurement_source_concept_id": [3004410, 3004410]}), root / "measurement.csv")
    _write(pl.DataFrame({"person_id": [2], "observation_concept_id": [0], "observation_date": ["2021-03-03"],
                         "observation_source_value": ["SMOKER"], "value_as_number": [None]}), root / "observation.csv")
    store = build_store(iter_omop(root), tmp_path / "store")
    frame = store.to_frame()
    codes = set(frame.get_column("code"))
    assert {"ICD10CM//E11.9", "CONDITION//I10", "RxNorm//860975", "LOINC//4548-4", "OBSERVATION//SMOKER",
            "GENDER//F", "GENDER//M", "MEDS_BIRTH"} <= codes
    hba1c = frame.filter(pl.col("code") == "LOINC//4548-4").sort("subject_id")
    assert hba1c.get_column("numeric_value").to_list()[0] == pytest.approx(7.9)
    assert str(hba1c.get_column("time")[0]) == "2020-01-05 09:30:00"  # datetime wins over date
    birth = frame.filter((pl.col("code") == "MEDS_BIRTH") & (pl.col("subject_id") == 1))
    assert str(birth.get_column("time")[0]) == "1950-01-01 00:00:00"  # missing month and day: January 1st
    c = store.counts
    assert c["omop_person_rows_without_person_id_excluded"] == 1
    assert c["omop_condition_occurrence_rows_for_persons_not_in_person_excluded"] == 1  # person 3
    assert c["omop_condition_occurrence_rows_without_time_or_code_excluded"] == 1
    # every input event is either in the store or counted
    assert store.meta["events"] == 2 * 2 + 3 + 1 + 2 + 1  # birth+gender x2, conditions, drug, labs, observation

    concept = build_store(iter_omop(root, codes="concept"), tmp_path / "concept")
    assert "SNOMED//44054006" in set(concept.to_frame().get_column("code"))


def test_an_export_without_person_table_is_refused(tmp_path):
    (tmp_path / "omop").mkdir()
    with pytest.raises(DataError, match="no person table"):
        next(iter_omop(tmp_path / "omop"))


def test_train_and_predict_from_an_omop_export(tmp_path):
    from typer.testing import CliRunner

    from ehrdx.cli import app

    c = generate_longitudinal(500, seed=6)
    omop = write_omop(c.events, tmp_path / "omop")
    c.label_map.write_csv(tmp_path / "label_map.csv")
    args = ["--omop", str(omop), "--omop-prefix", "visit=ENCOUNTER,condition=DX,measurement=LAB"]
    r = CliRunner().invoke(app, ["train", *args, "--labels", f"map:{tmp_path / 'label_map.csv'}", "--model", "gru", "--epochs", "2",
                                 "--hidden", "16", "--device", "cpu", "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert "macro_auroc" in r.output
    r = CliRunner().invoke(app, ["predict", *args, "--model", str(tmp_path / "m"), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    pred = pl.read_csv(tmp_path / "p.csv")
    assert pred.height > 1000 and pred.get_column("subject_id").n_unique() == 500
    r = CliRunner().invoke(app, ["train", *args, "--events", str(tmp_path / "p.csv"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not both" in r.output
