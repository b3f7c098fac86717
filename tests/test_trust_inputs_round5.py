"""Trust, round 5 (session s13): a ragged CSV row in an OMOP table, event codes that match a label only when
case is ignored, a transformer's heads checked before the store, --until before every event, subjects of
subject_splits.parquet absent from the data, and a label map's header with another separator or spaces."""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from cli_run import GOLDEN, run, small_omop, words
from ehrdx.errors import DataError
from ehrdx.tasks.select import LabelSelector


def test_a_ragged_row_in_an_omop_csv_is_an_error_naming_file_and_row_not_a_traceback(tmp_path):
    """An unquoted `5,5` in measurement.csv gives a row one field longer than the header: polars raised its
    ComputeError where the lazily read table was first collected, a traceback (exit 1) naming neither file nor
    row. It is an error naming both and the fix (quote the value), exit 2."""
    omop = small_omop(tmp_path, "1,2020-01-01,HBA1C,6\n1,2020-01-02,HBA1C,5,5\n2,2020-01-03,HBA1C,7\n")
    r = run("targets", "--omop", omop, "--labels", "prefix:CONDITION//", "--out", tmp_path / "t.csv")
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert "measurement.csv" in said and "more fields than the header's 4" in said and "row 2" in said
    assert "quote such a value" in said and "Traceback" not in said
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("name", ["events.csv", "table.csv"])
def test_a_ragged_row_in_an_events_table_or_a_patient_table_is_named_with_the_fix(tmp_path, name):
    """The events and patient tables said "could not be read (ComputeError; ...)" for the same row, naming
    neither row nor fix; they say what the OMOP reader says."""
    path = tmp_path / name
    if name == "events.csv":
        path.write_text("pid,when,code\n1,2020-01-01,DX//A\n1,2020-01-02,\"DX//B,x\"\n1,2020-01-03,DX//C,5\n")
        r = run("targets", "--events", path, "--subject-col", "pid", "--time-col", "when", "--labels", "prefix:DX//",
                "--out", tmp_path / "t.csv")
    else:
        path.write_text("patient_id,age,diseases\n1,50,E11\n2,60,E11;I10\n3,5,5,I10\n")
        r = run("train", path, "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert f"{name}: a row has more fields than the header's 3 (file line 4)" in said and "row 3" in said
    assert "quote such a value" in said


def events_with_lower_case_codes(tmp_path, patients: int = 12):
    """Events whose diabetes codes are written in lower case in half the patients (`dx//e11.2`), and a label
    map of upper-case patterns."""
    rows = []
    for p in range(1, patients + 1):
        dm = "DX//E11.9" if p % 2 else "dx//e11.2"
        rows += [f"{p},2020-01-01,DX//I10", f"{p},2020-03-01,{dm}", f"{p},2020-06-01,DX//I10",
                 f"{p},2020-09-01,{'DX//I10' if p % 3 else dm}"]
    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n" + "\n".join(rows) + "\n")
    label_map = tmp_path / "map.csv"
    label_map.write_text("code,label\nDX//E11*,E11\nDX//I10*,I10\n")
    return events, label_map


def test_codes_that_match_a_label_only_ignoring_case_are_counted_and_named_by_targets(tmp_path):
    """`dx//e11.2` against the map's `DX//E11*` is not a record of E11 (codes are case-sensitive), and nothing
    said so: E11 had other codes, so no label was left out to report. The codes are counted and named."""
    events, label_map = events_with_lower_case_codes(tmp_path)
    r = run("targets", "--events", events, "--labels", f"map:{label_map}", "--out", tmp_path / "t.csv")
    assert r.exit_code == 0, r.output
    said = words(r.output)
    assert "1 event code(s) would match --labels if letter case were ignored (dx//e11.2; 8 events)" in said
    assert "not counted as labels" in said
    r = run("targets", "--events", events, "--labels", "prefix:DX//:3", "--out", tmp_path / "u.csv")
    assert r.exit_code == 0 and "(dx//e11.2; 8 events)" in words(r.output)
    label_map.write_text("code,label\nDX//E11*,E11\ndx//e11*,E11\nDX//I10*,I10\n")  # both spellings mapped
    r = run("targets", "--events", events, "--labels", f"map:{label_map}", "--out", tmp_path / "v.csv")
    assert r.exit_code == 0 and "letter case" not in r.output


def test_codes_that_match_a_label_only_ignoring_case_are_said_by_train_and_kept_in_metrics_json(tmp_path):
    events, label_map = events_with_lower_case_codes(tmp_path, patients=30)
    r = run("train", "--events", events, "--labels", f"map:{label_map}", "--model", "logistic", "--out",
            tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert "would match --labels if letter case were ignored (dx//e11.2;" in words(r.output)
    summary = json.loads((tmp_path / "m" / "metrics.json").read_text())["train_summary"]
    found = summary["codes_matching_labels_only_ignoring_case"]
    assert found["count"] == 1 and found["codes"] == ["dx//e11.2"] and found["events"] > 0


def test_train_refuses_a_transformer_s_heads_before_the_store_is_built(tmp_path):
    """`train --model transformer --hidden 16 --heads 3` converted the events into the store (minutes on big
    data) and only then refused the sizes; pretrain and explain refuse them first. So does train now."""
    store = tmp_path / "store"
    r = run("train", "--meds", GOLDEN / "meds", "--model", "transformer", "--hidden", "16", "--heads", "3",
            "--store", store, "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    assert "not divisible by heads 3" in words(r.output) and "event store:" not in r.output
    assert not store.exists() and not (tmp_path / "m").exists()


@pytest.mark.parametrize("until", ["1900-01-01", "1990-01-01"])  # before every event; after births, before visits
@pytest.mark.parametrize("command", ["targets", "train"])
def test_until_before_every_visit_is_an_error_naming_until_and_the_first_visit(tmp_path, command, until):
    """`--until 1900-01-01` kept only the patients' static rows (and births before it): targets wrote "0
    prediction times x 0 labels", train failed later without naming --until. It is an error naming --until
    and when the data's first visit is."""
    out = ["--out", tmp_path / ("t.csv" if command == "targets" else "m")]
    extra = ["--model", "logistic"] if command == "train" else []
    r = run(command, "--meds", GOLDEN / "meds", "--until", until, "--labels", "prefix:DX//", *extra, *out)
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert f"no visit at or before --until {until}" in said and "the data's first visit is on 2016-01-02" in said
    assert not Path(out[1]).exists()


def test_the_first_visit_after_until_is_the_earliest_over_merged_parts(tmp_path):
    """Parts of a store converted in parallel (--workers) merge their first visit after --until by the minimum."""
    from ehrdx.data.meds import iter_meds, meds_shard_paths
    from ehrdx.data.store import build_store, merge_stores

    paths = meds_shard_paths(GOLDEN / "meds")
    assert len(paths) >= 2
    until = 1_000_000_000  # 2001: before every visit, after some births
    parts = [build_store(iter_meds(GOLDEN / "meds", [p]), tmp_path / str(k), until_seconds=until)
             for k, p in enumerate(paths)]
    whole = build_store(iter_meds(GOLDEN / "meds"), tmp_path / "whole", until_seconds=until)
    merged = merge_stores([p.directory for p in parts], tmp_path / "merged")
    firsts = [p.meta["first_visit_after_until"] for p in parts]
    assert merged.meta["first_visit_after_until"] == whole.meta["first_visit_after_until"] == min(firsts)


def meds_with_extra_split_subjects(tmp_path, extra=(90001, 90002, 90003)):
    """The golden MEDS dataset whose subject_splits.parquet also lists subjects with no events in data/."""
    meds = tmp_path / "meds"
    shutil.copytree(GOLDEN / "meds", meds)
    path = meds / "metadata" / "subject_splits.parquet"
    splits = pl.read_parquet(path)
    more = pl.DataFrame({"subject_id": list(extra), "split": ["train"] * len(extra)}, schema=splits.schema)
    pl.concat([splits, more]).write_parquet(path)
    return meds


def test_subjects_of_subject_splits_absent_from_the_data_are_counted_and_said(tmp_path):
    """Subjects that subject_splits.parquet lists but data/ has no event of were passed over without a word
    (a missing shard looks just like that). They are counted and said, in the terminal and metrics.json's
    warnings; the run goes on."""
    meds = meds_with_extra_split_subjects(tmp_path)
    r = run("train", "--meds", meds, "--labels", "prefix:DX//", "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    said = words(r.output)
    assert "subject_splits.parquet: 3 subject(s) listed here have no event in the data: in no split" in said
    assert "90001" not in said  # patient ids are hidden unless asked for
    [warning] = json.loads((tmp_path / "m" / "metrics.json").read_text())["warnings"]
    assert "3 subject(s) listed here have no event in the data" in warning


def test_the_absent_split_subjects_are_named_with_show_ids(tmp_path, show_ids):
    from ehrdx.events_pipeline import open_store

    meds = meds_with_extra_split_subjects(tmp_path, extra=tuple(range(90001, 90008)))
    [warning] = open_store(meds=meds, store_dir=tmp_path / "store").warnings
    assert "7 subject(s) listed here" in warning and "90001, 90002, 90003, 90004, 90005 and 2 more" in warning
    assert open_store(meds=GOLDEN / "meds", store_dir=tmp_path / "golden").warnings == []


@pytest.mark.parametrize(("header", "hint"), [
    ("code;label", "another separator than the comma"),
    ("code , label", "'code ' with spaces around the name"),
])
def test_a_label_map_header_with_another_separator_or_spaced_names_says_so(tmp_path, header, hint):
    """A label map saved with `;` (a European Excel) or with spaces around the names was refused with "no
    'code' column" (or 'label') and the generic fix; an events table's header gets the specific hint, and so
    does a label map's now."""
    path = tmp_path / "map.csv"
    sep = ";" if ";" in header else " , "
    path.write_text(f"{header}\nDX//E11*{sep}E11\n")
    with pytest.raises(DataError) as exc:
        LabelSelector.parse(f"map:{path}")
    assert "map.csv" in str(exc.value) and hint in str(exc.value)
