"""Readable names of codes, from the source's own metadata, kept beside the event store.

MEDS: `metadata/codes.parquet` (`code`, `description`). OMOP: the `concept` table (`concept_name` of
`<vocabulary_id>//<concept_code>`, the codes the OMOP reader writes). The store keeps the names of its own
codes in `descriptions.json` (code -> description); a model's labels take them when it is fit (see
`tasks.labels.describe_from_codes`). A source without names (an events table) simply has none.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

FILE = "descriptions.json"


def meds_descriptions(root: str | Path, codes: set[str]) -> dict[str, str]:
    """Descriptions of `codes` from a MEDS dataset's metadata/codes.parquet (empty when it has none)."""
    path = Path(root) / "metadata" / "codes.parquet"
    if not path.is_file():
        return {}
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError):
        return {}  # optional metadata: a model trains without names, it only prints raw codes
    if not {"code", "description"} <= set(frame.columns):
        return {}
    return named(frame.select(pl.col("code").cast(pl.Utf8), pl.col("description").cast(pl.Utf8)), codes)


def named(frame: pl.DataFrame, codes: set[str]) -> dict[str, str]:
    """code -> description from a (code, description) frame: the first non-empty name of each of `codes`."""
    out: dict[str, str] = {}
    for code, text in frame.iter_rows():
        text = (text or "").strip()
        if code in codes and text and code not in out:
            out[code] = text
    return out


def write_descriptions(store_dir: str | Path, descriptions: dict[str, str]) -> None:
    if descriptions:
        (Path(store_dir) / FILE).write_text(json.dumps(descriptions, indent=0, sort_keys=True))


def read_descriptions(store_dir: str | Path) -> dict[str, str]:
    path = Path(store_dir) / FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def attach_descriptions(store, *, meds: str | Path | None = None, names=None) -> None:
    """Keep the source's names of the store's codes in the store directory: from a MEDS dataset's
    codes.parquet, or `names(codes) -> {code: description}` (e.g. the OMOP reader's concept_names)."""
    codes = set(store.code_names)
    if meds is not None:
        write_descriptions(store.directory, meds_descriptions(meds, codes))
    elif names is not None:
        write_descriptions(store.directory, names(codes))
