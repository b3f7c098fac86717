"""Found by trying ehrdx on messy input (session s13): values beyond the store's float32 range, text in an OMOP
value column."""

from datetime import datetime

import numpy as np
import polars as pl
import pytest

from ehrdx.data.meds import normalise_events
from ehrdx.data.omop import iter_omop
from ehrdx.data.store import build_store
from ehrdx.errors import DataError


def test_a_value_beyond_float32_range_is_counted_and_set_to_null_not_stored_as_inf(tmp_path):
    """A float64 MEDS shard with a lab value of 1e300 (an export's overflow) became inf in the float32 store
    without a word; the code's mean in preprocessing.json turned inf and every value of that lab read as 0.
    It is set to null and counted, like inf itself."""
    frame = pl.DataFrame({"subject_id": [1, 1, 1], "time": [datetime(2020, 1, 1)] * 3,
                          "code": ["LAB//A", "LAB//A", "LAB//A"], "numeric_value": [1.5, 1e300, -1e300]})
    shard = normalise_events(frame, "0.parquet")
    assert shard.counts["values_beyond_float32_range_set_to_null"] == 2
    store = build_store([shard], tmp_path / "store")
    values = np.asarray(store.values)
    assert not np.isinf(values).any()
    assert np.isnan(values).sum() == 2 and np.nanmax(values) == np.float32(1.5)


def _omop(root, values):
    root.mkdir()
    (root / "person.csv").write_text("person_id,year_of_birth\n1,1960\n")
    rows = "".join(f"1,2020-01-0{i + 1},HBA1C,{v}\n" for i, v in enumerate(values))
    (root / "measurement.csv").write_text("person_id,measurement_date,measurement_source_value,value_as_number\n"
                                          + rows)
    return root


def test_text_in_an_omop_value_column_is_an_error_naming_the_rows_not_an_empty_value(tmp_path):
    """value_as_number of `<5` or `5,5` in an OMOP measurement.csv was read as an empty value, silently (a
    MEDS shard or events table with the same text is an error); it is an error naming file, column and rows.
    Spaces around a number are not text."""
    with pytest.raises(DataError, match="text, not numbers") as exc:
        list(iter_omop(_omop(tmp_path / "bad", ["6.5", "<5", "\"5,5\"", ""])))
    msg = str(exc.value)
    assert "measurement.csv" in msg and "value_as_number" in msg and "row 2, row 3" in msg and "row 4" not in msg
    shard = next(iter_omop(_omop(tmp_path / "ok", [" 6.5 ", "7", ""])))
    values = shard.frame.filter(pl.col("code") == "MEASUREMENT//HBA1C").get_column("numeric_value").to_list()
    assert values == [6.5, 7.0, None]
