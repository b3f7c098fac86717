"""The label (disease) vocabulary as data: ordered, append-only, versioned.

Each label carries the codes that record it, a description, an optional parent label (e.g. the ICD-10 category of a finer code)
and `introduced_at`: the first time it can be coded, with `introduced_from` saying where that date came
from. It is set only when given (a label map's introduced_at column, `ehrdx update --add LABEL=DATE`) or
when asked to infer it as the label's first record in the training patients (`infer_introduced`): a
rare code's first record is usually just the first patient who got it, not the day the code began.
A sample whose label window ends before a label's `introduced_at` does not know that label: it is
masked, not a negative. Existing labels never move; new ones are appended, and every addition bumps the
version and is recorded in `history`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import numpy as np

from ehrdx.times import utc_seconds

INFO_KEYS = ("codes", "description", "parent", "introduced_at", "introduced_from")
# Where a label's introduced_at came from (the `introduced_from` info key). Models saved before it was
# recorded have an introduced_at without a source: SAVED, masked as they were trained.
GIVEN, INFERRED, SAVED = "label map", "first record in training", "saved model"



def iso_time(seconds: int | None) -> str | None:
    """Seconds since 1970 as an ISO 8601 UTC time without a zone ('2021-03-01T00:00:00'), None as None."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(int(seconds), UTC).replace(tzinfo=None).isoformat()


def _seconds(iso: str | None) -> float:
    if not iso:
        return -np.inf
    return utc_seconds(iso)


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
    def from_first_times(cls, first: dict[str, int | None], info: dict[str, dict] | None = None,
                         infer_introduced: bool = False) -> LabelVocab:
        """Sorted labels. `introduced_at` is what `info` gives; else, with `infer_introduced`, the first
        record; else none (the label existed all along)."""
        return cls(sorted(first), introduction_info(first, info, infer_introduced))

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

    def introduced_from(self) -> list[str | None]:
        """[L] where each label's introduced_at came from (None where it has none)."""
        return [(self.info[lab].get("introduced_from") or SAVED) if self.info[lab].get("introduced_at") else None
                for lab in self.labels]

    def descriptions(self) -> dict[str, str]:
        """Label -> description, for the labels that have one."""
        return {lab: self.info[lab]["description"] for lab in self.labels if self.info[lab].get("description")}

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


def introduction_info(first: dict[str, int | None], info: dict[str, dict] | None,
                      infer_introduced: bool) -> dict[str, dict]:
    """Per label of `first` (label -> first record, seconds), `info` with introduced_at/introduced_from:
    as given (GIVEN, unless `info` names its own source), else inferred from the first record when asked."""
    out = {}
    for lab, t in first.items():
        meta = dict((info or {}).get(lab, {}))
        if meta.get("introduced_at"):
            meta.setdefault("introduced_from", GIVEN)
        elif infer_introduced and t is not None:
            meta["introduced_at"], meta["introduced_from"] = iso_time(t), INFERRED
        else:
            meta["introduced_at"] = meta["introduced_from"] = None
        out[lab] = meta
    return out


def describe_from_codes(info: dict[str, dict], code_descriptions: dict[str, str]) -> list[str]:
    """Fill (in place) the description of each label in `info` that has none, from the descriptions of
    its codes (`info[label]["codes"]`): the code that is the label itself (`E11.9`, or `DX//E11.9` for the
    label E11.9), else the one description all its described codes share. Returns the labels filled."""
    filled = []
    for label, meta in info.items():
        if meta.get("description"):
            continue
        codes = [c for c in meta.get("codes") or [] if code_descriptions.get(c)]
        own = [c for c in codes if c == label or c.rpartition("//")[2] == label]
        texts = {code_descriptions[c] for c in codes}
        text = code_descriptions[own[0]] if own else (texts.pop() if len(texts) == 1 else None)
        if text:
            meta["description"] = text
            filled.append(label)
    return filled
