"""A clinician's messy patient-table exports (Excel-style: another separator, BOM, CRLF, missing markers)."""

import pytest

from ehrdx.data.table import read_table
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
