"""syntha-ehr (a Gaussian copula fitted on Turkish EHR episodes, with Synthea-style modules), the recipe
of its documented `generate_longitudinal_cohort` tool: the bundled 'tolerant' copula
(`load_generator_from_json`, random_seed = seed), physiologic constraints, then
`expand_to_trajectories` (Poisson mean 4 encounters over 3 years, random_seed = seed + 2).

Each episode row becomes: ENCOUNTER//episode at its date; LAB//<lab> and VITAL//<bp> with numeric
values; COUNT//<n_drugs, charlson_cci, ...> with values; COND//<flag> for each comorbidity flag set.
MEDS_BIRTH = first episode date minus age; GENDER//M or F static. Label candidates: the 20 comorbidity
flags, each its own label. syntha's patient ids are unseeded uuids, so subjects are numbered in the
order the generator emits them. By syntha's design comorbidity flags are sticky from the baseline
(set at the first episode, kept at every later one): no disease begins during follow-up, so this set
has no new-onset positives and its 'all labels' scores measure carrying history forward.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pandas as pd
import polars as pl

from external.meds_io import write_set

COUNTS = ("n_drugs", "n_medications", "drug_class_count", "charlson_cci", "comorbidity_count")


def generate(patients: int, seed: int) -> pd.DataFrame:
    from syntha import schema
    from syntha.export_model import load_generator_from_json
    from syntha.generator.constraints import ConstraintConfig, PhysiologicConstraints
    from syntha.longitudinal import TrajectoryConfig, expand_to_trajectories

    text = (resources.files("syntha.bundled_models") / "tolerant.json").read_text(encoding="utf-8")
    gen = load_generator_from_json(json.loads(text), random_seed=seed)
    constraints = PhysiologicConstraints(ConstraintConfig())
    raw, _ = constraints.apply(gen.sample(int(patients * 1.5) + 8))
    baselines = raw.head(patients).reset_index(drop=True)
    date_lo = pd.Timestamp(gen.model.extras.get("date_lo") or "2015-01-01")
    date_hi = pd.Timestamp(gen.model.extras.get("date_hi") or "2024-12-31")
    expanded = expand_to_trajectories(baselines, date_lo, date_hi, TrajectoryConfig(random_seed=seed + 2))
    expanded, _ = constraints.apply(expanded)
    keep = [c for c in ("HASTA_ID", "episode_date", "age", "gender_is_male", *schema.LAB_COLUMNS,
                        *schema.VITAL_COLUMNS, *COUNTS, *schema.COMORBIDITY_COLUMNS) if c in expanded.columns]
    return expanded[keep]


def build(root: Path, work: Path, *, patients: int, seed: int) -> dict:
    from importlib.metadata import version

    from syntha import schema

    episodes = pl.from_pandas(generate(patients, seed))
    ids = episodes.select("HASTA_ID").unique(maintain_order=True).with_row_index("subject_id")
    ep = episodes.join(ids, on="HASTA_ID").with_columns(pl.col("episode_date").cast(pl.Datetime("us")).alias("time"))
    frames = [ep.select("subject_id", "time", pl.lit("ENCOUNTER//episode").alias("code"),
                        pl.lit(None, dtype=pl.Float64).alias("numeric_value"))]
    first = ep.sort("time").group_by("subject_id", maintain_order=True).first()
    frames.append(first.select("subject_id", (pl.col("time") - pl.duration(days=(pl.col("age").cast(pl.Float64)
                                                                                  * 365.25).round().cast(pl.Int64))).alias("time"),
                               pl.lit("MEDS_BIRTH").alias("code"), pl.lit(None, dtype=pl.Float64).alias("numeric_value")))
    frames.append(first.select("subject_id", pl.lit(None, dtype=pl.Datetime("us")).alias("time"),
                               pl.when(pl.col("gender_is_male").cast(pl.Float64) > 0.5).then(pl.lit("GENDER//M"))
                               .otherwise(pl.lit("GENDER//F")).alias("code"),
                               pl.lit(None, dtype=pl.Float64).alias("numeric_value")))
    for prefix, cols in (("LAB", schema.LAB_COLUMNS), ("VITAL", schema.VITAL_COLUMNS), ("COUNT", COUNTS)):
        for c in cols:
            if c in ep.columns:
                frames.append(ep.filter(pl.col(c).is_not_null()).select(
                    "subject_id", "time", pl.lit(f"{prefix}//{c}").alias("code"),
                    pl.col(c).cast(pl.Float64).alias("numeric_value")))
    for c in schema.COMORBIDITY_COLUMNS:
        if c in ep.columns:
            frames.append(ep.filter(pl.col(c).cast(pl.Float64) > 0.5).select(
                "subject_id", "time", pl.lit(f"COND//{c}").alias("code"), pl.lit(None, dtype=pl.Float64).alias("numeric_value")))
    events = pl.concat(frames)
    candidates = pl.DataFrame({"code": [f"COND//{c}" for c in schema.COMORBIDITY_COLUMNS],
                               "label": list(schema.COMORBIDITY_COLUMNS),
                               "description": list(schema.COMORBIDITY_COLUMNS)})
    codes = events.select(pl.col("code").unique()).with_columns(pl.lit(None, dtype=pl.Utf8).alias("description"))
    provenance = {"source": "syntha-ehr", "package_version": version("syntha-ehr"), "cohort": "tolerant",
                  "trajectory": "encounters_per_patient_mean=4, years_of_history=3, lab_drift_scale=0.05",
                  "episodes": episodes.height}
    return write_set(root, events, codes=codes, candidates=candidates, name="syntha", seed=seed,
                     provenance=provenance)
