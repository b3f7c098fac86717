"""The hospital-shaped cohort (hospital.py) written as a MEDS dataset chunk by chunk: each chunk of
patients is generated, written as one shard per split (data/<split>/<chunk>.parquet) and dropped, so
peak memory is one chunk's, whatever the number of patients. Labels: `--labels prefix:ICD10CM//:3`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from ehrdx.data.meds import (
    MEDS_CODES_TYPES,
    MEDS_DATA_TYPES,
    MEDS_SPLITS,
    MEDS_SPLITS_TYPES,
    write_parquet_typed,
)
from ehrdx.data.store import STATIC_TIME
from ehrdx.data.synth.hospital import DX_PREFIX, ChunkEvents, HospitalShape, generate_chunk, make_catalog

GENERATOR = "ehrdx.synth_hospital v1"
LABEL_SPEC = f"prefix:{DX_PREFIX}:3"
SPLIT_SHARES = (0.7, 0.15, 0.15)


def chunk_frame(ev: ChunkEvents, names: pl.Series, first_id: int) -> pl.DataFrame:
    """A chunk's events as a MEDS frame (subject ids from first_id on), in (subject, time, code) order."""
    static = ev.time == STATIC_TIME
    return pl.DataFrame({
        "subject_id": ev.patient + first_id,
        "time": pl.Series(np.where(static, 0, ev.time) * 1_000_000).cast(pl.Datetime("us")),
        "static": static,
        "code": names.gather(ev.code),
        "numeric_value": ev.value,
    }).select(
        "subject_id", pl.when(pl.col("static")).then(None).otherwise(pl.col("time")).alias("time"), "code",
        pl.col("numeric_value").fill_nan(None))


def write_hospital(n_patients: int, out_dir: str | Path, seed: int = 0, shape: HospitalShape | None = None,
                   on_chunk: Callable[[int, int], None] | None = None) -> tuple[dict[str, Path], dict]:
    """Generate n_patients and write OUT/meds (a MEDS dataset with train/tuning/held_out splits) and
    OUT/cohort.json (the shape: visits per patient, events, codes). `on_chunk(done, total)` reports
    progress in patients. Returns the paths and the info written to cohort.json."""
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    shape = shape or HospitalShape()
    t0 = time.perf_counter()
    out = Path(out_dir)
    meds = out / "meds"
    (meds / "metadata").mkdir(parents=True, exist_ok=True)
    cat = make_catalog(shape, seed)
    names = pl.Series("code", cat.names)
    split_rng = np.random.default_rng([seed, 2])
    ids, splits, visits, encounters = [], [], [], []
    events = inpatient = 0
    used = np.zeros(len(cat.names), bool)
    for k, start in enumerate(range(0, n_patients, shape.chunk_patients)):
        n = min(shape.chunk_patients, n_patients - start)
        ev = generate_chunk(cat, n, shape, np.random.default_rng([seed, 1, k]))
        split = split_rng.choice(len(MEDS_SPLITS), n, p=SPLIT_SHARES)
        frame = chunk_frame(ev, names, start + 1).with_columns(pl.Series("split", split[ev.patient]))
        for s, name in enumerate(MEDS_SPLITS):
            part = frame.filter(pl.col("split") == s).drop("split")
            if part.height:
                (meds / "data" / name).mkdir(parents=True, exist_ok=True)
                write_parquet_typed(part, meds / "data" / name / f"{k}.parquet", MEDS_DATA_TYPES)
        ids.append(np.arange(start + 1, start + n + 1))
        splits.append(split)
        visits.append(ev.visits)
        encounters.append(ev.encounters)
        events += len(ev.code)
        inpatient += ev.inpatient_visits
        used[np.unique(ev.code)] = True
        del frame, ev
        if on_chunk:
            on_chunk(start + n, n_patients)
    split = np.concatenate(splits)
    write_parquet_typed(pl.DataFrame({"subject_id": np.concatenate(ids), "split": np.asarray(MEDS_SPLITS)[split]}),
                        meds / "metadata" / "subject_splits.parquet", MEDS_SPLITS_TYPES)
    codes = pl.DataFrame({"code": cat.names, "description": cat.descriptions, "parent_codes": cat.parents},
                         schema={"code": pl.Utf8, "description": pl.Utf8, "parent_codes": pl.List(pl.Utf8)})
    write_parquet_typed(codes, meds / "metadata" / "codes.parquet", MEDS_CODES_TYPES)
    (meds / "metadata" / "dataset.json").write_text(json.dumps({
        "dataset_name": "ehrdx_hospital", "dataset_version": "1", "etl_name": "ehrdx", "etl_version": "0.1.0",
        "meds_version": "0.4.0", "created_at": datetime.now(UTC).isoformat()}, indent=2))
    v = np.concatenate(visits)
    dx = np.char.startswith(np.asarray(cat.names), DX_PREFIX)
    categories = {c[len(DX_PREFIX):len(DX_PREFIX) + 3] for c in np.asarray(cat.names)[used & dx]}
    info = {
        "generator": GENERATOR, "n_patients": n_patients, "seed": seed, "n_events": events,
        "n_visits": int(v.sum()), "visits_per_patient": {
            "mean": round(float(v.mean()), 1), "median": float(np.median(v)),
            "p99": float(np.percentile(v, 99)), "max": int(v.max())},
        "inpatient_visit_share": round(inpatient / max(int(v.sum()), 1), 3),
        "encounters_per_patient": round(float(np.concatenate(encounters).mean()), 1),  # a stay is one
        "events_per_visit": round(events / max(int(v.sum()), 1), 2),
        "codes": len(cat.names), "codes_used": int(used.sum()), "label_categories_used": len(categories),
        "labels": LABEL_SPEC, "splits": {name: int((split == s).sum()) for s, name in enumerate(MEDS_SPLITS)},
        "shape": {k: getattr(shape, k) for k in shape.__dataclass_fields__},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "cohort.json").write_text(json.dumps(info, indent=2))
    return {"meds": meds, "info": out / "cohort.json"}, info
