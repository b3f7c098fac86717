"""The label (disease) vocabulary: ordered, append-only, built from training patients."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class LabelVocab:
    """Ordered list of disease labels. Existing labels never move: new ones are appended.

    The first fit sorts labels so that a vocabulary is reproducible from the same training data;
    every later addition goes to the end.
    """

    def __init__(self, labels: Sequence[str] = ()) -> None:
        self.labels: list[str] = []
        self._index: dict[str, int] = {}
        self.extend(labels)

    @classmethod
    def fit(cls, label_lists: Iterable[Iterable[str]]) -> LabelVocab:
        seen = sorted({lab for labs in label_lists for lab in labs})
        return cls(seen)

    def extend(self, labels: Iterable[str]) -> list[str]:
        """Append labels not yet present, in the order given. Returns the ones added."""
        added = []
        for lab in labels:
            if lab not in self._index:
                self._index[lab] = len(self.labels)
                self.labels.append(lab)
                added.append(lab)
        return added

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: str) -> bool:
        return label in self._index

    def index(self, label: str) -> int:
        return self._index[label]

    def encode(self, label_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, dict[str, int]]:
        """Multi-hot matrix [N, L] (float32) and a count of each label not in the vocabulary."""
        y = np.zeros((len(label_lists), len(self.labels)), dtype=np.float32)
        unknown: dict[str, int] = {}
        for i, labs in enumerate(label_lists):
            for lab in labs:
                j = self._index.get(lab)
                if j is None:
                    unknown[lab] = unknown.get(lab, 0) + 1
                else:
                    y[i, j] = 1.0
        return y, unknown

    def to_dict(self) -> dict:
        return {"labels": list(self.labels)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelVocab:
        return cls(d["labels"])
