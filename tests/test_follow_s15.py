"""Defects found by new-user trials (session 15): what a run leaves out or ignores is said."""

import numpy as np
import polars as pl

from ehrdx.data.meds import normalise_events
from ehrdx.data.store import build_store
from ehrdx.evaluate.report import count_lines
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.select import LabelSelector
from ehrdx.tasks.task import TaskSpec, build_samples, code_label_index, label_first_times


def _store(tmp_path, visits: dict[int, list[str]]):
    """Patients with one diagnosis per visit: {subject: [visit dates]}."""
    rows = [(s, day, "DX//I10" if k % 2 else "DX//E11", None) for s, days in visits.items()
            for k, day in enumerate(days)]
    frame = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Utf8, "code": pl.Utf8,
                                       "numeric_value": pl.Float64}, orient="row")
    return build_store([normalise_events(frame, "e.csv")], tmp_path / "store")


def test_a_next_visit_patient_with_one_visit_is_counted_as_a_patient_too(tmp_path):
    st = _store(tmp_path, {1: ["2020-01-01", "2020-06-01"], 2: ["2020-01-01", "2020-03-01"], 3: ["2020-01-01"]})
    selector, rows = LabelSelector.parse("prefix:DX//"), np.arange(3)
    vocab = LabelVocab.from_first_times(label_first_times(st, rows, selector), {}, infer_introduced=False)
    s = build_samples(st, rows, TaskSpec.parse("next-visit"), code_label_index(st, selector, vocab), len(vocab))
    assert len(np.unique(s.row)) == 2
    assert s.counts["samples_without_next_visit"] == 3  # each patient's last visit
    assert s.counts["patients_left_without_any_sample"] == 1  # patient 3: its one sample went
    assert "patients left without any sample: 1" in count_lines(s.counts)
