"""Labels you can trust: one spelling per label, no Excel-style comma lists taken as one name, masking by
introduced_at only when a date is given (or inference is asked for), and readable descriptions."""

import json
from datetime import datetime

import numpy as np
import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from ehrdx.cli import app
from ehrdx.data.meds import normalise_events, write_meds
from ehrdx.data.store import build_store
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.data.table import table_from_frame
from ehrdx.errors import DataError
from ehrdx.estimator import EventClassifier
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.select import LabelSelector
from ehrdx.tasks.task import TaskSpec, build_samples, code_label_index, label_first_times


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def table(labels, codes=None):
    n = len(labels)
    return pl.DataFrame({"patient_id": list(range(1, n + 1)), "age": [40.0 + i for i in range(n)],
                         "diagnosis_codes": codes or ["D1"] * n, "diseases": labels})


# -- one spelling per label, no comma lists -------------------------------------------------------------

def test_labels_differing_only_in_case_are_refused_naming_the_spellings():
    with pytest.raises(DataError) as err:
        table_from_frame(table(["Disease_A", "disease_a", "Disease_A;Disease_B", " Disease_A "]), source="t.csv")
    msg = str(err.value)
    assert "t.csv" in msg and "column 'diseases'" in msg and "'Disease_A' / 'disease_a'" in msg
    assert "row 2" in msg and "row 1" not in msg  # the less common spelling's rows
    assert "fix:" in msg


def test_surrounding_spaces_are_stripped_into_one_label():
    t = table_from_frame(table([" Disease_A ", "Disease_A", "Disease_A ; Disease_B"]), source="t.csv")
    assert t.labels == [["Disease_A"], ["Disease_A"], ["Disease_A", "Disease_B"]]


def test_code_cells_differing_only_in_case_are_refused_without_showing_codes():
    with pytest.raises(DataError) as err:
        table_from_frame(table(["A", "B"], codes=["D1;D2", "d1"]), source="t.csv")
    msg = str(err.value)
    assert "column 'diagnosis_codes'" in msg and "more than one case" in msg and "'d1'" not in msg


@pytest.mark.parametrize("column, cells", [("diseases", ["Disease_A, Disease_C", "Disease_B"]),
                                           ("diagnosis_codes", ["X7,X9", "D2"])])
def test_a_comma_list_cell_is_an_error_naming_column_and_rows(column, cells):
    frame = table(["Disease_A", "Disease_B"]).with_columns(pl.Series(column, cells))
    with pytest.raises(DataError) as err:
        table_from_frame(frame, source="t.csv")
    msg = str(err.value)
    assert f"column '{column}'" in msg and "comma" in msg and "row 1" in msg and "row 2" not in msg
    assert cells[0] not in msg  # a raw cell value, hidden without --show-ids
    assert 'D1;D4' in msg and '["D1","D4"]' in msg


def test_a_comma_inside_a_json_list_is_part_of_the_name():
    t = table_from_frame(table(['["Diabetes, type 2"]', '["Asthma"]']), source="t.csv")
    assert t.labels == [["Diabetes, type 2"], ["Asthma"]]


def test_the_command_line_exits_2_on_case_clashing_labels(tmp_path):
    path = tmp_path / "p.csv"
    table(["Disease_A", "disease_a", "Disease_B"]).write_csv(path)
    r = run("train", path, "--out", tmp_path / "m")
    assert r.exit_code == 2 and "Traceback" not in r.output and "more than one case" in r.output


def test_a_label_map_with_case_clashing_or_comma_labels_is_refused(tmp_path):
    clash = tmp_path / "clash.csv"
    clash.write_text("code,label\nDX//A,Disease_A\nDX//B,disease_a \n")
    with pytest.raises(DataError, match="'Disease_A' / 'disease_a'"):
        LabelSelector.parse(f"map:{clash}")
    comma = tmp_path / "comma.csv"
    comma.write_text('code,label\n"DX//D1,DX//D4","Disease_A, Disease_C"\n')
    with pytest.raises(DataError, match="comma") as err:
        LabelSelector.parse(f"map:{comma}")
    assert "comma.csv" in str(err.value) and "one entry (row) per code" in str(err.value)
    spaced = tmp_path / "spaced.json"
    spaced.write_text(json.dumps({" DX//E11 ": " E11 "}))
    assert LabelSelector.parse(f"map:{spaced}").labels_of("DX//E11") == ["E11"]


def _store(tmp_path, codes):
    d = datetime
    frame = pl.DataFrame({
        "subject_id": [1, 1, 1, 2, 2, 2],
        "time": [d(2019, 1, 1), d(2019, 6, 1), d(2020, 1, 1), d(2019, 1, 1), d(2019, 3, 1), d(2020, 3, 1)],
        "code": codes, "numeric_value": [None] * 6,
    }, schema_overrides={"time": pl.Datetime("us"), "numeric_value": pl.Float32})
    return build_store([normalise_events(frame, "e.parquet")], tmp_path / "store")


def test_event_codes_giving_labels_that_differ_only_in_case_are_refused(tmp_path):
    st = _store(tmp_path, ["DX//E11", "LAB//X", "DX//I10", "DX//e11", "LAB//X", "DX//I10"])
    with pytest.raises(DataError) as err:
        EventClassifier(model="logistic", labels="prefix:DX//").fit(st, np.array([0, 1]), np.array([], np.int64))
    assert "'E11' / 'e11'" in str(err.value) and "map:FILE" in str(err.value)


def test_a_label_that_only_looks_like_an_icd10_code_gets_no_icd10_description(tmp_path):
    st = _store(tmp_path, ["OPCS//L0213", "LAB//X", "ICD10CM//E11.65", "OPCS//L0213", "LAB//X", "ICD10CM//E11.65"])
    clf = EventClassifier(model="logistic", labels="regex:^(?:OPCS|ICD10CM)//(.*)$")
    clf.fit(st, np.array([0, 1]), np.array([], np.int64))
    info = clf.label_vocab_.info
    assert info["L0213"]["description"] is None and info["L0213"]["parent"] is None  # not "Carbuncle of neck"
    assert "hyperglycemia" in info["E11.65"]["description"].lower()  # its vocabulary says ICD-10-CM


# -- introduced_at only when given or asked for ---------------------------------------------------------

def test_labels_are_masked_before_a_first_record_only_when_inference_is_asked(tmp_path):
    st = _store(tmp_path, ["DX//E11", "LAB//X", "DX//I10", "DX//E11", "LAB//X", "DX//I10"])
    selector, rows = LabelSelector.parse("prefix:DX//"), np.arange(2)
    first = label_first_times(st, rows, selector)
    counts = {}
    for infer in (False, True):
        vocab = LabelVocab.from_first_times(first, selector.info, infer_introduced=infer)
        s = build_samples(st, rows, TaskSpec.parse("window:30d", censor=False), code_label_index(st, selector, vocab),
                          len(vocab), introduced=vocab.introduced_seconds(), introduced_from=vocab.introduced_from())
        counts[infer] = (s.counts, s.mask[:, vocab.index("I10")].sum(), vocab.info["I10"])
    # I10 is first recorded on 2020-01-01: the 2019 windows are negatives unless inference is asked
    assert counts[False][2]["introduced_at"] is None and counts[False][2]["introduced_from"] is None
    assert not any(k.startswith("label_entries_before_introduction") for k in counts[False][0])
    assert counts[True][2] == {**counts[True][2], "introduced_at": "2020-01-01T00:00:00",
                               "introduced_from": "first record in training"}
    masked = counts[True][0]["label_entries_before_introduction_masked:first record in training"]
    assert masked > 0 and counts[True][0]["label_entries_before_introduction_masked"] == masked
    assert counts[False][1] - counts[True][1] == masked


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("trust_labels")
    paths = write_longitudinal(generate_longitudinal(300, seed=5), out)
    return paths, open_store(meds=paths["meds"], store_dir=out / "store")


def test_given_dates_mask_and_are_counted_by_rule_and_others_are_not_inferred(cohort):
    from ehrdx.evaluate.report import print_events_report

    paths, st = cohort
    tr, va, te = patient_splits(st, paths["meds"], 0)
    clf = EventClassifier(model="logistic", labels=f"map:{paths['label_map']}").fit(st, tr, va)
    info = clf.label_vocab_.info
    assert info["U07.1"]["introduced_at"] == "2020-03-01T00:00:00" and info["U07.1"]["introduced_from"] == "label map"
    assert info["I10"]["introduced_at"] is None  # the label map gives no date: it existed all along
    assert clf.fit_summary_["labels_with_introduced_at"] == {"label map": 3}
    counts = clf.samples(st, te).counts
    assert counts["label_entries_before_introduction_masked:label map"] > 0
    assert counts["label_entries_before_introduction_masked"] == counts[
        "label_entries_before_introduction_masked:label map"]
    console = Console(record=True, width=250)
    print_events_report(console, {"test": {"per_label": []}, "test_new_onset": {"per_label": []},
                                  "train_summary": clf.fit_summary_,
                                  "test_samples": {"excluded": counts}})
    printed = console.export_text()
    assert "labels with an introduced_at (masked before it): 3 from label map" in printed
    n = counts["label_entries_before_introduction_masked"]
    assert f"label entries before introduction masked: {n:,} (introduction dates from: label map {n:,})" in printed
    inferred = EventClassifier(model="logistic", labels=f"map:{paths['label_map']}", infer_introduced=True)
    inferred.fit(st, tr, va)
    assert inferred.label_vocab_.info["I10"]["introduced_from"] == "first record in training"
    assert inferred.fit_summary_["labels_with_introduced_at"] == {"label map": 3,
                                                                  "first record in training": 10}


def test_update_add_takes_a_date_and_does_not_infer_one(cohort, tmp_path):
    from ehrdx.update import update_model

    paths, st = cohort
    old_st = open_store(meds=paths["meds"], store_dir=tmp_path / "old", until="2020-01-01")
    old = EventClassifier(model="logistic", labels="prefix:DX//").fit(old_st, *patient_splits(old_st, paths["meds"], 0)[:2])
    assert "U07.1" not in old.labels_
    splits = patient_splits(st, paths["meds"], 0)
    new, report = update_model(old, st, splits, new_labels=["U07.1"], introduced={"U07.1": "2020-03-01"})
    assert new.label_vocab_.info["U07.1"]["introduced_at"] == "2020-03-01T00:00:00"
    assert new.label_vocab_.info["U07.1"]["introduced_from"] == "update --add"
    assert report["test_excluded"]["label_entries_before_introduction_masked:update --add"] > 0
    plain, _ = update_model(old, st, splits, new_labels=["U07.1"])
    assert plain.label_vocab_.info["U07.1"]["introduced_at"] is None
    # a Python caller is told the fix in its own terms (introduced=), not the command's U07.1=2020-03-01
    with pytest.raises(DataError, match=r"introduced=\{'U07.1': '2020-03-01'\}"):
        update_model(old, st, splits, new_labels=["U07.1"], introduced={"U07.1": "March 2020"})


def test_add_option_parses_labels_and_dates():
    from ehrdx.cli.update import labels_to_add as _labels_to_add

    assert _labels_to_add("E11.9, U07.1=2020-03-01") == (["E11.9", "U07.1"], {"U07.1": "2020-03-01"})
    assert _labels_to_add(None) == (None, {})


def test_a_table_model_refuses_infer_introduced(tmp_path, seed_table_path):
    r = run("train", seed_table_path, "--out", tmp_path / "m", "--infer-introduced")
    assert r.exit_code == 2 and "event streams" in r.output


# -- readable labels ------------------------------------------------------------------------------------

def test_descriptions_come_from_the_label_s_own_code_or_a_shared_one():
    from ehrdx.tasks.labels import describe_from_codes

    info = {"E11": {"codes": ["DX//E11", "DX//E11.9"]}, "J44": {"codes": ["DX//J44.0", "DX//J44.1"]},
            "I10": {"codes": ["DX//I10.1", "DX//I10.2"]}, "K50": {"codes": ["DX//K50"], "description": "given"}}
    names = {"DX//E11": "Type 2 diabetes", "DX//E11.9": "T2D without complications", "DX//J44.0": "COPD",
             "DX//J44.1": "COPD", "DX//I10.1": "one", "DX//I10.2": "other", "DX//K50": "Crohn"}
    assert describe_from_codes(info, names) == ["E11", "J44"]
    assert info["E11"]["description"] == "Type 2 diabetes" and info["J44"]["description"] == "COPD"
    assert "description" not in info["I10"] and info["K50"]["description"] == "given"


def test_meds_code_descriptions_reach_labels_json_metrics_and_the_terminal(tmp_path):
    from ehrdx.evaluate.report import print_events_report
    from ehrdx.pipeline import train_and_evaluate

    cohort = generate_longitudinal(300, seed=6)
    codes = cohort.events.select(pl.col("code").unique().sort()).with_columns(
        pl.when(pl.col("code") == "DX//I10").then(pl.lit("High blood pressure [from codes.parquet]"))
        .otherwise(None).alias("description"), pl.lit(None, dtype=pl.List(pl.Utf8)).alias("parent_codes"))
    meds = write_meds(tmp_path / "meds", cohort.events, codes=codes)
    st = open_store(meds=meds, store_dir=tmp_path / "store")
    assert st.code_descriptions() == {"DX//I10": "High blood pressure [from codes.parquet]"}
    clf = EventClassifier(model="logistic", labels="prefix:DX//")
    clf, metrics = train_and_evaluate(st, clf, patient_splits(st, None, 0))
    assert clf.label_vocab_.info["I10"]["description"] == "High blood pressure [from codes.parquet]"
    clf.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "labels.json").read_text())
    assert saved["info"]["I10"]["description"] == "High blood pressure [from codes.parquet]"
    row = next(r for r in metrics["test"]["per_label"] if r["label"] == "I10")
    assert row["description"] == "High blood pressure [from codes.parquet]"
    console = Console(record=True, width=250)
    print_events_report(console, metrics)
    assert "High blood pressure [from codes.parquet]" in console.export_text()


def test_omop_concept_names_describe_codes(tmp_path):
    from ehrdx.data.omop import concept_names

    (tmp_path / "concept.csv").write_text("concept_id,concept_name,vocabulary_id,concept_code\n"
                                          "1,Acute bronchitis,SNOMED,10509002\n2,Other,SNOMED,999\n")
    assert concept_names(tmp_path, {"SNOMED//10509002", "ICD10CM//E11"}) == {"SNOMED//10509002": "Acute bronchitis"}
