"""Found by trying ehrdx on messy input (session s13): values beyond the store's float32 range."""

from datetime import datetime

import numpy as np
import polars as pl

from ehrdx.data.meds import normalise_events
from ehrdx.data.store import build_store


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
