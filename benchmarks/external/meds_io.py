"""What every converter shares: the patient split, the conversion's invariants, and writing MEDS.

A converted set is a MEDS directory (ehrdx.data.meds.write_meds: data/<split>/*.parquet with subject_id
int64, time datetime[us], code str, numeric_value float32; metadata/codes.parquet with descriptions;
metadata/subject_splits.parquet) plus metadata/label_candidates.parquet: the codes that are diseases
(code, label, description), from which the protocol picks its labels on training patients only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from ehrdx.data.meds import MEDS_CODES_TYPES, write_meds, write_parquet_typed

NON_EVENT_CODES = ("MEDS_BIRTH", "MEDS_DEATH")


def split_subjects(subject_ids: np.ndarray, seed: int) -> pl.DataFrame:
    """80/20 train/held_out by patient, and 10% of the training patients as tuning (seeded)."""
    ids = np.unique(np.asarray(subject_ids, dtype=np.int64))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(ids)
    n_test = round(0.2 * len(ids))
    test, train = perm[:n_test], perm[n_test:]
    n_tune = round(0.1 * len(train))
    split = np.array(["held_out"] * n_test + ["tuning"] * n_tune + ["train"] * (len(train) - n_tune))
    return pl.DataFrame({"subject_id": np.concatenate([test, train]), "split": split}).sort("subject_id")


def clean_events(events: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Sort by (subject, time) with static rows first; drop (and count) timed events after the patient's
    death and exact duplicates."""
    counts: dict[str, int] = {}
    events = events.select(pl.col("subject_id").cast(pl.Int64), pl.col("time").cast(pl.Datetime("us")),
                           pl.col("code").cast(pl.Utf8), pl.col("numeric_value").cast(pl.Float32))
    n = events.height
    events = events.unique(maintain_order=True)
    if events.height < n:
        counts["duplicate_events_dropped"] = n - events.height
    death = events.filter(pl.col("code") == "MEDS_DEATH").group_by("subject_id").agg(pl.col("time").min().alias("death"))
    joined = events.join(death, on="subject_id", how="left")
    after = (pl.col("death").is_not_null() & pl.col("time").is_not_null() & (pl.col("time") > pl.col("death")))
    n_after = int(joined.select(after.sum()).item())
    if n_after:
        counts["events_after_death_dropped"] = n_after
    events = joined.filter(~after).drop("death")
    return events.sort("subject_id", "time", nulls_last=False, maintain_order=True), counts


def check_invariants(events: pl.DataFrame) -> dict[str, int]:
    """What the benchmark and the fixture test assert of a converted set: the MEDS types, times sorted
    within a subject (static rows first), no timed event after death, no code empty. Returns the sizes."""
    assert events.schema["subject_id"] == pl.Int64 and events.schema["time"] == pl.Datetime("us")
    assert events.schema["code"] == pl.Utf8 and events.schema["numeric_value"] == pl.Float32
    assert events.get_column("code").is_not_null().all() and (events.get_column("code") != "").all()
    t = events.with_columns(pl.col("time").fill_null(pl.datetime(1, 1, 1, time_unit="us")).alias("t"))
    unsorted = t.select(((pl.col("t").diff().over("subject_id") < pl.duration(microseconds=0))).sum()).item()
    assert unsorted == 0, f"{unsorted} event(s) out of time order"
    death = events.filter(pl.col("code") == "MEDS_DEATH").group_by("subject_id").agg(pl.col("time").min().alias("d"))
    late = events.join(death, on="subject_id").filter(pl.col("time") > pl.col("d")).height
    assert late == 0, f"{late} event(s) after death"
    return {"patients": events.get_column("subject_id").n_unique(), "events": events.height,
            "codes": events.get_column("code").n_unique(),
            "numeric_events": int(events.get_column("numeric_value").is_not_null().sum())}


def write_set(root: str | Path, events: pl.DataFrame, *, codes: pl.DataFrame, candidates: pl.DataFrame,
              name: str, seed: int, provenance: dict) -> dict:
    """Clean, check and write one converted set; return its summary (also in metadata/provenance.json)."""
    root = Path(root)
    events, counts = clean_events(events)
    sizes = check_invariants(events)
    present = events.select(pl.col("code").unique())
    codes = present.join(codes.unique("code"), on="code", how="left").with_columns(
        pl.col("description").cast(pl.Utf8), pl.lit(None, dtype=pl.List(pl.Utf8)).alias("parent_codes")).sort("code")
    write_meds(root, events, splits=split_subjects(events.get_column("subject_id").to_numpy(), seed), codes=codes,
               dataset_name=name, shard_size=max(events.get_column("subject_id").n_unique(), 1))
    cands = candidates.join(present, on="code", how="semi").unique("code").sort("code")
    write_parquet_typed(cands.select("code", "label", pl.col("description").cast(pl.Utf8)),
                        root / "metadata" / "label_candidates.parquet", {k: MEDS_CODES_TYPES["code"] for k in
                                                                         ("code", "label", "description")})
    summary = {"name": name, **sizes, "label_candidate_codes": cands.height, "conversion_counts": counts,
               "split_seed": seed, **provenance}
    (root / "metadata" / "provenance.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def read_candidates(root: str | Path) -> pl.DataFrame:
    return pl.read_parquet(Path(root) / "metadata" / "label_candidates.parquet")


def slice_set(root: str | Path, out: str | Path, patients: int, seed: int) -> Path:
    """A small seeded slice of a converted set (e.g. the test fixture), with its splits, codes and label
    candidates restricted to those patients; the patients who died are kept first."""
    root, out = Path(root), Path(out)
    events = pl.concat([pl.read_parquet(f) for f in sorted((root / "data").glob("**/*.parquet"))])
    ids = np.unique(events.get_column("subject_id").to_numpy())
    dead = np.unique(events.filter(pl.col("code") == "MEDS_DEATH").get_column("subject_id").to_numpy())
    rng = np.random.default_rng(seed)
    alive = rng.permutation(np.setdiff1d(ids, dead))
    keep = np.concatenate([rng.permutation(dead)[: max(1, patients // 10)], alive])[:patients]
    events = events.filter(pl.col("subject_id").is_in(keep.tolist()))
    splits = pl.read_parquet(root / "metadata" / "subject_splits.parquet").filter(
        pl.col("subject_id").is_in(keep.tolist()))
    codes = pl.read_parquet(root / "metadata" / "codes.parquet").join(
        events.select(pl.col("code").unique()), on="code", how="semi")
    write_meds(out, events, splits=splits, codes=codes, dataset_name=f"{root.name}_slice",
               shard_size=max(len(keep), 1))
    cands = read_candidates(root).join(events.select(pl.col("code").unique()), on="code", how="semi")
    write_parquet_typed(cands, out / "metadata" / "label_candidates.parquet",
                        {k: MEDS_CODES_TYPES["code"] for k in ("code", "label", "description")})
    full = json.loads((root / "metadata" / "provenance.json").read_text())
    prov = {"name": f"{full.get('name')}_slice", **check_invariants(events), "slice_seed": seed, "slice_of": full}
    (out / "metadata" / "provenance.json").write_text(json.dumps(prov, indent=2, default=str))
    return out
