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

from ehrdx.errors import DataError, reader_detail

FILE = "descriptions.json"


def meds_descriptions(root: str | Path, codes: set[str]) -> tuple[dict[str, str], str | None]:
    """Descriptions of `codes` from a MEDS dataset's metadata/codes.parquet (empty when it has none), and
    why the file was not used where it is there but unreadable (None otherwise). The names are optional:
    a model trains without them, it only prints raw codes, so such a file is said, not refused."""
    path = Path(root) / "metadata" / "codes.parquet"
    if not path.is_file():
        return {}, None
    left_out = "code descriptions left out (labels are shown by their codes only)"
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        return {}, str(DataError(f"not a readable parquet file ({reader_detail(exc)}): {left_out}", file=str(path),
                                 fix="rewrite it as MEDS code metadata (code, description), or remove it"))
    missing = [c for c in ("code", "description") if c not in frame.columns]
    if missing:
        return {}, str(DataError(f"no {' or '.join(repr(c) for c in missing)} column (columns: "
                                 f"{', '.join(frame.columns) or 'none'}): {left_out}", file=str(path),
                                 fix="MEDS codes.parquet holds code and description"))
    try:
        frame = frame.select(pl.col("code").cast(pl.Utf8), pl.col("description").cast(pl.Utf8))
    except pl.exceptions.PolarsError as exc:
        return {}, str(DataError(f"code or description is not text ({reader_detail(exc)}): {left_out}",
                                 file=str(path), fix="write code and description as strings (MEDS)"))
    return named(frame, codes), None


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
    codes.parquet, or `names(codes) -> {code: description}` (e.g. the OMOP reader's concept_names). An
    unreadable codes.parquet becomes one of the store's warnings (printed, and kept in metrics.json)."""
    codes = set(store.code_names)
    if meds is not None:
        found, why_not = meds_descriptions(meds, codes)
        write_descriptions(store.directory, found)
        if why_not:
            store.add_warning(why_not)
    elif names is not None:
        write_descriptions(store.directory, names(codes))
