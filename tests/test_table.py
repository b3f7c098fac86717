"""Reading patient tables: role inference, code-list parsing and every bad-input error."""

import polars as pl
import pytest

from ehrdx.data.table import TableSchema, parse_code_list, read_table
from ehrdx.errors import DataError

HEADER = "patient_id,age,gender,blood_pressure,diagnosis_codes,diseases\n"


def write(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_seed_table_roles_are_inferred(seed_table_path):
    t = read_table(seed_table_path)
    assert t.schema.id_column == "patient_id"
    assert t.schema.label_column == "diseases"
    assert t.schema.numeric == ["age", "blood_pressure", "cholesterol"]
    assert t.schema.categorical == ["gender"]
    assert t.schema.codes == ["diagnosis_codes"]
    assert t.codes["diagnosis_codes"][7] == ["D1", "D2", "D4"]
    assert t.labels[7] == ["Disease_A", "Disease_B", "Disease_C"]
    assert len(t) == 10


def test_roles_can_be_set_explicitly(seed_table_path):
    t = read_table(seed_table_path, schema=TableSchema(categorical=["age"], ignore=["cholesterol"]))
    assert t.schema.categorical == ["age", "gender"]
    assert "cholesterol" not in t.schema.numeric
    assert t.notes["ignored_columns"] == 1


@pytest.mark.parametrize(
    "cell,expected",
    [('["D1","D2"]', ["D1", "D2"]), ("D1;D2", ["D1", "D2"]), ("['D1', 'D2']", ["D1", "D2"]),
     ("", []), (None, []), ("[]", []), ("D1; D1 ;D3", ["D1", "D3"]), (["x", "y"], ["x", "y"])],
)
def test_code_list_encodings(cell, expected):
    assert parse_code_list(cell) == expected


def test_patients_with_no_disease_are_valid(tmp_path):
    p = write(tmp_path, HEADER + '1,50,F,120,D1,\n2,60,M,130,D2,"[""A""]"\n')
    t = read_table(p)
    assert t.labels == [[], ["A"]]


def test_parquet_with_list_columns(tmp_path):
    p = tmp_path / "t.parquet"
    pl.DataFrame({"patient_id": [1, 2], "age": [3.0, None], "codes": [["a"], []], "diseases": [["X"], []]}).write_parquet(p)
    t = read_table(p)
    assert t.schema.codes == ["codes"] and t.labels == [["X"], []]


def assert_error(path, *needles, **kwargs):
    with pytest.raises(DataError) as exc:
        read_table(path, **kwargs)
    msg = str(exc.value)
    for n in needles:
        assert n in msg, msg
    assert "fix:" in msg, msg
    return msg


def test_missing_file(tmp_path):
    assert_error(tmp_path / "nope.csv", "nope.csv", "not found")


def test_misnamed_column(tmp_path, seed_table_path):
    assert_error(seed_table_path, "column 'patientid'", "not in the file",
                 schema=TableSchema(id_column="patientid"))


@pytest.mark.usefixtures("show_ids")
def test_text_in_numeric_column(tmp_path):
    rows = "".join(f"{i},{40 + i},F,{120 + i},D1,A\n" for i in range(1, 9))
    p = write(tmp_path, HEADER + rows + "9,fifty,M,130,D2,B\n")
    msg = assert_error(p, "t.csv", "column 'age'", "text in a numeric column", "row 9", "'fifty'")
    assert "row 1 " not in msg


def test_empty_table(tmp_path):
    assert_error(write(tmp_path, HEADER), "t.csv", "empty")


def test_no_label_column(tmp_path):
    p = write(tmp_path, "patient_id,age\n1,3\n2,4\n")
    assert_error(p, "t.csv", "no label column", "--label-col")


@pytest.mark.usefixtures("show_ids")
def test_duplicated_patient_ids(tmp_path):
    p = write(tmp_path, HEADER + "1,50,F,120,D1,A\n2,60,M,130,D2,B\n1,70,M,130,D2,B\n")
    assert_error(p, "column 'patient_id'", "duplicated patient ids", "row 1 ('1')", "row 3")


@pytest.mark.parametrize("bad", ["NaN", "inf", "-inf"])
def test_nan_or_infinite_values(tmp_path, bad):
    p = write(tmp_path, HEADER + f"1,50,F,120,D1,A\n2,60,M,{bad},D2,B\n")
    assert_error(p, "column 'blood_pressure'", "NaN or infinite", "row 2")


def test_empty_numeric_cell_is_missing_not_an_error(tmp_path):
    p = write(tmp_path, HEADER + "1,50,F,,D1,A\n2,60,M,130,D2,B\n")
    t = read_table(p)
    assert t.schema.numeric == ["age", "blood_pressure"]
    assert t.numeric[0, 1] != t.numeric[0, 1]  # NaN marks missing


def test_unparseable_code_list(tmp_path):
    p = write(tmp_path, HEADER + '1,50,F,120,"[""D1"",",A\n2,60,M,130,D2,B\n')
    assert_error(p, "column 'diagnosis_codes'", "not a code list", "row 1")


def test_unreadable_file_type(tmp_path):
    assert_error(write(tmp_path, "x", name="t.xlsx"), "t.xlsx", "unsupported file type")
