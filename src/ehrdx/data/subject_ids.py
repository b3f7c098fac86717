"""Text subject ids in a long events table: a reversible mapping to the int64 ids of the store.

MEDS, and the event store built like it, number subjects with int64. A long events table (``--events``)
whose subject id column holds anything but canonical integers (``007``, ``A-12``, ``x7``) keeps its ids
as text instead of being refused or silently turned into numbers (``007`` into ``7``):

  the distinct ids, sorted by Unicode code point, are numbered 0, 1, 2, ...; that number is the
  subject's id inside the store.

The rule depends only on the set of ids, so the same file maps the same way in every run. The mapping is
written beside the store's arrays (``subject_ids.parquet``: ``subject_id`` int64, ``original_subject_id``
text) and named in its meta.json; stores without it hold the ids as given (integers). Everything a user
gives or gets goes through it: prediction files carry the original ids, and times files, targets,
``explain --patient`` and ``report --explain-patients`` are read in the original ids. A model directory
never holds a subject id, mapped or not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from ehrdx.errors import DataError

MAP_FILE = "subject_ids.parquet"
RULE = "text subject ids sorted by Unicode code point; the k-th (from 0) is subject_id k in the store"
# An integer exactly as Python or polars writes it: no sign but '-', no leading zero, no spaces.
_CANONICAL_INT = r"^(0|-?[1-9][0-9]{0,18})$"


def canonical_ints(text: pl.Series) -> pl.Series:
    """Per value: True where text is an int64 written canonically (``7``, ``-3``; not ``007``, ``+7``, `` 7``)."""
    text = text.cast(pl.Utf8)
    return text.str.contains(_CANONICAL_INT) & text.cast(pl.Int64, strict=False).is_not_null()


def is_text_ids(values: pl.Series) -> bool:
    """True when a text column of subject ids is not all canonical integers (then it is kept as text)."""
    if values.dtype not in (pl.Utf8, pl.Categorical):
        return False
    return not bool(canonical_ints(values.drop_nulls()).all())


def map_text_ids(values: pl.Series) -> tuple[pl.Series, pl.DataFrame]:
    """Store ids (int64, nulls kept) for text ids, and the mapping (subject_id, original_subject_id)."""
    text = values.cast(pl.Utf8)
    originals = text.drop_nulls().unique().sort()
    mapping = pl.DataFrame({"subject_id": pl.int_range(0, len(originals), dtype=pl.Int64, eager=True),
                            "original_subject_id": originals})
    ids = text.replace_strict(originals, mapping.get_column("subject_id"), default=None, return_dtype=pl.Int64)
    return ids.rename(values.name), mapping


def write_map(directory: str | Path, mapping: pl.DataFrame) -> dict:
    """Write the mapping into a store directory; returns the entry for the store's meta.json."""
    mapping.select(pl.col("subject_id").cast(pl.Int64), pl.col("original_subject_id").cast(pl.Utf8)).write_parquet(
        Path(directory) / MAP_FILE)
    return {"file": MAP_FILE, "rule": RULE}


class SubjectIdMap:
    """The two directions of a store's mapping."""

    def __init__(self, mapping: pl.DataFrame) -> None:
        self.store_ids = mapping.get_column("subject_id").to_numpy().astype(np.int64)
        self.originals = mapping.get_column("original_subject_id").cast(pl.Utf8)
        self._order = np.argsort(self.store_ids, kind="stable")

    @classmethod
    def read(cls, directory: str | Path) -> SubjectIdMap:
        path = Path(directory) / MAP_FILE
        if not path.exists():
            raise DataError("the store names a subject id mapping that is missing", file=str(path),
                            fix="rebuild the store from the events table")
        return cls(pl.read_parquet(path))

    def to_original(self, ids: np.ndarray) -> pl.Series:
        ids = np.asarray(ids, dtype=np.int64)
        at = self._order[np.searchsorted(self.store_ids[self._order], ids)] if len(ids) else np.zeros(0, np.int64)
        return self.originals.gather(at).rename("subject_id")

    def to_store(self, values: pl.Series) -> pl.Series:
        """Store ids (int64) of original ids; null where an id is unknown or empty."""
        return values.cast(pl.Utf8).replace_strict(self.originals, pl.Series(self.store_ids), default=None,
                                                   return_dtype=pl.Int64)
