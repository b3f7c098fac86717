"""A clinician's messy patient-table exports (Excel-style: another separator, BOM, CRLF, missing markers)."""

import json

import pytest

from cli_run import run, words
from ehrdx.data.table import TableSchema, read_table
from ehrdx.errors import DataError


def test_a_semicolon_separated_export_is_said_to_be_one_not_a_value_holding_a_comma(tmp_path):
    """A European Excel export (`;`-separated, decimal commas quoted) was refused as "a row has more fields
    than the header's 1 ... a value holding the separator ',' unquoted": the header's `;` is said instead."""
    path = tmp_path / "patients.csv"
    path.write_bytes('\ufeffpatient_id;age;bmi;diseases\r\nP1;40;"24,5";E11\r\nP2;50;"30,1";I10\r\n'.encode())
    with pytest.raises(DataError) as exc:
        read_table(path)
    said = str(exc.value)
    assert "patients.csv" in said and "';'-separated" in said and "write it comma-separated" in said


@pytest.mark.parametrize(("column", "cells"), [("chol", ["2,146", "1,980", "950"]), ("hba1c_pct", ["28%", "13%", "7.5%"])])
def test_numbers_written_with_thousands_separators_or_percent_signs_are_refused(tmp_path, column, cells):
    """`"2,146"` (an Excel thousands separator) made a cholesterol column text, left out as identifier-like (a
    measurement called an identifier); `28%` made HbA1c a category of 99 values. Both are said, with the fix."""
    path = tmp_path / "patients.csv"
    rows = [f'P{i},{40 + i},"{cells[i % 3]}",E11' for i in range(30)]
    path.write_text(f"patient_id,age,{column},diseases\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as exc:
        read_table(path)
    said = str(exc.value)
    assert column in said and "numbers written for display" in said and "--ignore" in said
    read_table(path, schema=TableSchema(ignore=[column]))  # the way out the fix names


@pytest.mark.parametrize("command", [["report", "--out", "r.html"], ["explain", "--patient", "P1"]])
def test_report_or_explain_of_a_table_model_without_data_says_it_is_a_table_model(tmp_path, command):
    """`ehrdx report --model TABLE_MODEL` asked for "--meds DIR, --events FILE or --omop DIR", which a patient
    table does not have and which would only lead to the refusal of a table model; that is said first."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"family": "table"}))
    r = run(*command[:1], "--model", model, *command[1:])
    assert r.exit_code == 2, r.output
    assert "is a patient-table model" in words(r.output) and "--meds DIR" not in r.output


def test_cv_counts_a_label_left_out_of_a_fold_whose_training_lacks_it(tmp_path):
    """`train --cv` kept each fold's headline metrics only: a label on one patient (never in its fold's training,
    left out of that fold's test metrics) was dropped without a word, where a single train says so."""
    path = tmp_path / "patients.csv"
    rows = [f"P{i},{30 + i},{'E11;I10' if i % 2 else 'I10'}" for i in range(30)] + ["P99,50,E11; X99"]
    path.write_text("patient_id,age,diseases\n" + "\n".join(rows) + "\n")
    r = run("train", path, "--model", "logistic", "--cv", "3", "--out", tmp_path / "cv")
    assert r.exit_code == 0, r.output
    assert "label 'X99' on 1 patient(s) never occurs in its fold's training" in words(r.output)
    saved = json.loads((tmp_path / "cv" / "cv_metrics.json").read_text())
    assert saved["test_left_out"]["labels_not_in_model"] == {"X99": 1}


def test_empty_columns_are_left_out_said_and_not_needed_to_predict(tmp_path):
    """An all-empty column and an Excel export's trailing unnamed one became categorical features of one value;
    predict then refused a table without them ("missing: allmiss, " with an empty name). They are left out,
    counted and named, and a table without them is scored."""
    train = tmp_path / "patients.csv"
    rows = [f"P{i},{30 + i},{'F' if i % 2 else 'M'},{'E11;I10' if i % 3 else 'I10'},," for i in range(30)]
    train.write_text("patient_id,age,sex,diseases,allmiss,\n" + "\n".join(rows) + "\n")
    r = run("train", train, "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert "empty columns left out: 2 (allmiss, (no name))" in words(r.output)
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["excluded"]["empty_columns_left_out"] == 2
    new = tmp_path / "new.csv"
    new.write_text("patient_id,age,sex\nQ1,40,F\n")
    r = run("predict", new, "--model", tmp_path / "m", "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output


def test_evaluate_names_a_label_left_out_as_of_the_table_evaluated_not_a_test_set(tmp_path):
    """`ehrdx evaluate TABLE` scores the whole table, but a label the model lacks was said as "test: label ...",
    a test set evaluate does not have."""
    train = tmp_path / "patients.csv"
    rows = [f"P{i},{30 + i},{'E11;I10' if i % 3 else 'I10'}" for i in range(30)]
    train.write_text("patient_id,age,diseases\n" + "\n".join(rows) + "\n")
    assert run("train", train, "--model", "logistic", "--out", tmp_path / "m").exit_code == 0
    new = tmp_path / "new.csv"
    new.write_text("patient_id,age,diseases\nQ1,40,E11\nQ2,50,I10; X99\n")
    r = run("evaluate", new, "--model", tmp_path / "m")
    assert r.exit_code == 0, r.output
    said = words(r.output)
    assert "this table: label 'X99' on 1 patient(s) never occurs in training" in said and "test: label" not in said


def test_a_declared_numeric_column_of_numbers_written_for_display_says_so(tmp_path):
    """`--numeric chol` on `"2,146"` cells said only "text in a numeric column"; the thousands separator is named,
    with the fix."""
    path = tmp_path / "patients.csv"
    path.write_text("patient_id,chol,diseases\n" + "\n".join(f'P{i},"2,{100 + i}",E11' for i in range(5)) + "\n")
    with pytest.raises(DataError) as exc:
        read_table(path, schema=TableSchema(numeric=["chol"]))
    assert "5 written for display, with a thousands separator" in str(exc.value)
    assert "write plain numbers" in str(exc.value)


def test_a_semicolon_separated_table_without_commas_is_said_to_be_one_not_to_lack_an_id_column(tmp_path):
    """Without a comma anywhere, a `;` export read as one column and was refused as having no patient id column
    (the header `patient_id;age;diseases` named as one column)."""
    path = tmp_path / "patients.csv"
    path.write_text("patient_id;age;diseases\r\nP1;40;E11\r\nP2;50;I10\r\n")
    with pytest.raises(DataError) as exc:
        read_table(path)
    assert "';'-separated" in str(exc.value) and "no patient id column" not in str(exc.value)
