"""The protocol every source follows, and the one function that turns what a user passes into a source."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ehrdx.data.samples import Samples
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.select import LabelSelector
from ehrdx.tasks.task import TaskSpec

# Samples.counts key prefix of a label of the data the model does not know (`label_not_in_model:E11.2`):
# one key per label, kept so in JSON outputs, said as one sentence (evaluate/report.py `count_lines`)
NOT_IN_MODEL = "label_not_in_model:"

class Source(Protocol):
    """Patients (numbered 0..len-1, "rows") with their features and labels.

    `fit_labels` and `fit_encoder` see the given (training) rows only; `samples` makes the (patient,
    prediction time) pairs of given rows with their labels and masks; `dataset` turns samples into what a
    model of a given input kind reads (`ehrdx.models.registry`: SEQUENCE, ROWS or MATRIX)."""

    kind: str  # "table" | "events"
    name: str  # the file or directory, for messages

    def __len__(self) -> int: ...

    def fit_labels(self, rows: np.ndarray, selector: LabelSelector | None, infer_introduced: bool) -> LabelVocab: ...

    def fit_encoder(self, rows: np.ndarray, min_code_count: int): ...

    def samples(self, rows: np.ndarray | None, vocab: LabelVocab, task: TaskSpec | None,
                selector: LabelSelector | None, *, times=None, require_labels: bool = True) -> Samples: ...

    def dataset(self, samples: Samples, encoder, inputs: str, new_onset: bool): ...

    def summary(self, samples: Samples, dataset) -> dict: ...

