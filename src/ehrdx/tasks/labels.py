"""The label (disease) vocabulary as data: ordered, append-only, versioned.

Each label carries the codes that record it, a description, an optional parent label (e.g. the ICD-10 category of a finer code)
and `introduced_at`: the first time it can be coded (given, or inferred as its first record in the
training data). A sample whose label window ends before a label's `introduced_at` does not know that
label: it is masked, not a negative. Existing labels never move; new ones are appended, and every
addition bumps the version and is recorded in `history`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import numpy as np

INFO_KEYS = ("codes", "description", "parent", "introduced_at")


def iso_time(seconds: int | None) -> str | None:
    """Seconds since 1970 as an ISO 8601 UTC time without a zone ('2021-03-01T00:00:00'), None as None."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(int(seconds), UTC).replace(tzinfo=None).isoformat()


def _seconds(iso: str | None) -> float:
    if not iso:
        return -np.inf
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


class LabelVocab:
    """Ordered list of disease labels with their metadata. The first fit sorts labels so that a
    vocabulary is reproducible from the same training data; every later addition goes to the end."""

    def __init__(self, labels: Sequence[str] = (), info: dict[str, dict] | None = None) -> None:
        self.labels: list[str] = []
        self.info: dict[str, dict] = {}
        self.version = 0
        self.history: list[dict] = []
        self._index: dict[str, int] = {}
        self.extend(labels, info, stamp=False)  # the first vocabulary: reproducible from the data alone

    @classmethod
    def fit(cls, label_lists: Iterable[Iterable[str]]) -> LabelVocab:
        seen = sorted({lab for labs in label_lists for lab in labs})
        return cls(seen)

    @classmethod
    def from_first_times(cls, first: dict[str, int | None], info: dict[str, dict] | None = None) -> LabelVocab:
        """Sorted labels; `introduced_at` is the first record unless `info` gives it."""
        merged = {lab: {"introduced_at": iso_time(t), **(info or {}).get(lab, {})} for lab, t in first.items()}
        return cls(sorted(first), merged)

    def extend(self, labels: Iterable[str], info: dict[str, dict] | None = None, note: str | None = None,
               stamp: bool = True) -> list[str]:
        """Append labels not yet present, in the order given. Returns the ones added. Later additions
        record when they were made (`stamp`)."""
        added = []
        for lab in labels:
            if lab not in self._index:
                self._index[lab] = len(self.labels)
                self.labels.append(lab)
                given = (info or {}).get(lab, {})
                self.info[lab] = {k: given.get(k) for k in INFO_KEYS}
                added.append(lab)
        if added:
            self.version += 1
            entry = {"version": self.version, "added": added}
            if stamp:
                entry["at"] = datetime.now(UTC).isoformat(timespec="seconds")
            if note:
                entry["note"] = note
            self.history.append(entry)
        return added

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: str) -> bool:
        return label in self._index

    def index(self, label: str) -> int:
        return self._index[label]

    def introduced_seconds(self) -> np.ndarray:
        """[L] seconds since 1970 of each label's introduced_at (-inf where unknown)."""
        return np.array([_seconds(self.info[lab].get("introduced_at")) for lab in self.labels], dtype=np.float64)

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
        return {"labels": list(self.labels), "version": self.version, "history": self.history,
                "info": {lab: self.info[lab] for lab in self.labels}}

    @classmethod
    def from_dict(cls, d: dict) -> LabelVocab:
        vocab = cls(d["labels"], d.get("info"))
        if "version" in d:
            vocab.version = int(d["version"])
            vocab.history = list(d.get("history", []))
        return vocab
