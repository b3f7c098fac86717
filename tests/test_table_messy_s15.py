"""A clinician's messy patient-table exports (Excel-style: another separator, BOM, CRLF, missing markers)."""

import pytest

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
