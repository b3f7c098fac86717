"""Built-in synthetic cohort: timestamped event streams with a known oracle.

Each patient has latent health factors that drive lab values and symptom codes recorded at visits over
years before an index date. Diseases are diagnosed in the year after the index date with a probability
that is an exact function of what the patient table shows at the index date (age, sex, last lab values,
codes seen so far), so the saved oracle probability is the best any model can achieve on that table.
Diseases depend on each other (comorbidity): secondary diseases (kidney disease, heart failure, ...)
are more likely when their primary diseases (diabetes, hypertension, ...) occur.

The events are written MEDS-style (subject_id, time, code, numeric_value); the patient table is
derived from them as a snapshot at the index date, exactly as a user would derive it from their EHR.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

INDEX_DATE = datetime(2024, 1, 1)
LABEL_WINDOW_DAYS = 365
HISTORY_YEARS = 8

# Labs: code, column in the table, population mean used when a lab was never measured.
LABS = {
    "LAB//HBA1C": ("hba1c", 5.7),
    "LAB//SBP": ("systolic_bp", 130.0),
    "LAB//CHOLESTEROL": ("cholesterol", 200.0),
    "LAB//BMI": ("bmi", 27.5),
    "LAB//FEV1_PCT": ("fev1_pct", 85.0),
    "LAB//EGFR": ("egfr", 80.0),
}
SYMPTOMS = ["DX//R73.0", "DX//Z72.0", "DX//R05", "DX//R07.4", "DX//F41.9", "DX//G47.0", "DX//R53"]
NOISE_CODES = [f"DX//{c}" for c in ["Z00.0", "J06.9", "M54.5", "K21.9", "H52.4", "L30.9", "J30.4", "N39.0", "R51", "M25.5", "B34.9", "K59.0", "Z23", "R10.4", "H10.9", "L70.0", "M79.6", "R11.2", "J20.9", "R42", "T14.1", "Z30.0", "K52.9", "H61.2", "R21", "M54.2", "Z01.4", "J02.9", "L02.9", "R50.9"]]

DISEASES = {
    "E11": "Type 2 diabetes mellitus",
    "I10": "Essential hypertension",
    "E78": "Disorders of lipoprotein metabolism (hyperlipidaemia)",
    "J44": "Chronic obstructive pulmonary disease",
    "F32": "Depressive episode",
    "E66": "Obesity",
    "N18": "Chronic kidney disease",
    "I50": "Heart failure",
    "I25": "Chronic ischaemic heart disease",
    "I48": "Atrial fibrillation and flutter",
}
def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function: a probability from a log-odds."""
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class SyntheticCohort:
    events: pl.DataFrame  # subject_id, time, code, numeric_value (MEDS-style)
    table: pl.DataFrame  # one row per patient: snapshot at the index date + diseases
    oracle: pl.DataFrame  # patient_id + one probability column per disease
    info: dict


def _history_events(n: int, rng: np.random.Generator) -> pl.DataFrame:
    sex_female = rng.random(n) < 0.52
    age = rng.uniform(20, 90, n)
    z = rng.standard_normal((n, 4))  # metabolic, cardiovascular, lung, mood
    smoker = rng.random(n) < sigmoid(-1.2 + 0.6 * z[:, 2])

    n_visits = 1 + rng.poisson(2.0 + 0.06 * (age - 20) + 0.5 * np.abs(z[:, 0]))
    v_pat = np.repeat(np.arange(n), n_visits)
    n_v = len(v_pat)
    days_before = rng.uniform(1, HISTORY_YEARS * 365, n_v)
    order = np.lexsort((-days_before, v_pat))
    v_pat, days_before = v_pat[order], days_before[order]
    # Lab drift: values creep up with time spent in the history (later visits nearer the index date).
    years_to_index = days_before / 365.0

    zm, zc, zl, zd = (z[v_pat, i] for i in range(4))
    a = age[v_pat]
    sm = smoker[v_pat]
    lab_values = {
        "LAB//HBA1C": 5.6 + 0.55 * zm + 0.008 * (a - 50) - 0.03 * years_to_index * (zm > 0) + rng.normal(0, 0.3, n_v),
        "LAB//SBP": 128 + 9 * zc + 0.35 * (a - 50) + rng.normal(0, 8, n_v),
        "LAB//CHOLESTEROL": 200 + 22 * (0.7 * zc + 0.3 * zm) + rng.normal(0, 15, n_v),
        "LAB//BMI": 27.5 + 3.5 * zm + rng.normal(0, 1.0, n_v),
        "LAB//FEV1_PCT": 88 - 9 * zl - 7 * sm - 0.15 * (a - 50) + rng.normal(0, 5, n_v),
        "LAB//EGFR": 92 - 0.7 * (a - 40) - 4 * zm + rng.normal(0, 7, n_v),
    }
    measure_p = {"LAB//HBA1C": 0.45, "LAB//SBP": 0.8, "LAB//CHOLESTEROL": 0.35, "LAB//BMI": 0.6,
                 "LAB//FEV1_PCT": 0.2, "LAB//EGFR": 0.4}
    symptom_p = {
        "DX//R73.0": sigmoid(-3.2 + 1.6 * zm),
        "DX//Z72.0": 0.35 * sm,
        "DX//R05": sigmoid(-3.0 + 1.2 * zl + 0.8 * sm),
        "DX//R07.4": sigmoid(-3.5 + 1.2 * zc),
        "DX//F41.9": sigmoid(-3.2 + 1.4 * zd),
        "DX//G47.0": sigmoid(-3.3 + 1.1 * zd),
        "DX//R53": sigmoid(-3.0 + 0.5 * zd + 0.3 * zm),
    }
    visit_time_s = (-days_before * 86400).astype(np.int64)  # seconds relative to the index date
    parts_pat, parts_t, parts_code, parts_val = [v_pat], [visit_time_s], [np.full(n_v, "ENCOUNTER", dtype=object)], [
        np.full(n_v, np.nan)]
    for code, values in lab_values.items():
        m = rng.random(n_v) < measure_p[code]
        parts_pat.append(v_pat[m]); parts_t.append(visit_time_s[m])
        parts_code.append(np.full(m.sum(), code, dtype=object)); parts_val.append(np.round(values[m], 2))
    for code, p in symptom_p.items():
        m = rng.random(n_v) < p
        parts_pat.append(v_pat[m]); parts_t.append(visit_time_s[m])
        parts_code.append(np.full(m.sum(), code, dtype=object)); parts_val.append(np.full(m.sum(), np.nan))
    zipf = 1.0 / np.arange(1, len(NOISE_CODES) + 1)
    n_noise = rng.poisson(1.2, n_v)
    noise_pat = np.repeat(np.arange(n_v), n_noise)
    noise_codes = np.asarray(NOISE_CODES, dtype=object)[rng.choice(len(NOISE_CODES), len(noise_pat), p=zipf / zipf.sum())]
    parts_pat.append(v_pat[noise_pat]); parts_t.append(visit_time_s[noise_pat])
    parts_code.append(noise_codes); parts_val.append(np.full(len(noise_pat), np.nan))

    index_s = int(INDEX_DATE.timestamp())
    birth_s = (index_s - age * 365.25 * 86400).astype(np.int64)
    ids = np.arange(1, n + 1, dtype=np.int64)
    t_rel = np.concatenate(parts_t)
    events = pl.DataFrame({
        "subject_id": ids[np.concatenate(parts_pat)],
        "time_s": t_rel + index_s,
        "code": np.concatenate(parts_code).astype(str),
        "numeric_value": np.concatenate(parts_val).astype(np.float32),
    })
    static = pl.DataFrame({
        "subject_id": np.concatenate([ids, ids]),
        "time_s": np.concatenate([birth_s, np.zeros(n, dtype=np.int64)]),
        "code": np.concatenate([np.full(n, "MEDS_BIRTH", dtype=object),
                                np.where(sex_female, "GENDER//F", "GENDER//M")]).astype(str),
        "numeric_value": np.full(2 * n, np.nan, dtype=np.float32),
    })
    static = static.with_columns(
        pl.when(pl.col("code").str.starts_with("GENDER//")).then(None).otherwise(pl.col("time_s")).alias("time_s")
    )
    return pl.concat([static, events])


def snapshot_table(events: pl.DataFrame, index_date: datetime = INDEX_DATE) -> pl.DataFrame:
    """The patient table at the index date, derived from events strictly before it."""
    index_s = int(index_date.timestamp())
    before = events.filter(pl.col("time_s").is_not_null() & (pl.col("time_s") < index_s))
    ids = events.select(pl.col("subject_id").unique().sort())
    birth = before.filter(pl.col("code") == "MEDS_BIRTH").select(
        "subject_id", ((index_s - pl.col("time_s")) / (365.25 * 86400)).round(1).alias("age"))
    sex = events.filter(pl.col("code").str.starts_with("GENDER//")).select(
        "subject_id", pl.col("code").str.strip_prefix("GENDER//").alias("sex"))
    labs = (
        before.filter(pl.col("code").is_in(list(LABS)))
        .sort("subject_id", "time_s")
        .group_by("subject_id", "code")
        .agg(pl.col("numeric_value").last())
        .pivot(on="code", index="subject_id", values="numeric_value")
    )
    for code in LABS:
        if code not in labs.columns:
            labs = labs.with_columns(pl.lit(None, dtype=pl.Float32).alias(code))
    labs = labs.rename({code: col for code, (col, _) in LABS.items()})
    codes = (
        before.filter(pl.col("code").str.starts_with("DX//"))
        .sort("subject_id", "time_s", "code")
        .group_by("subject_id", maintain_order=True)
        .agg(pl.col("code").str.strip_prefix("DX//").unique(maintain_order=True).alias("diagnosis_codes"))
    )
    table = (
        ids.join(birth, on="subject_id", how="left")
        .join(sex, on="subject_id", how="left")
        .join(labs, on="subject_id", how="left")
        .join(codes, on="subject_id", how="left")
        .with_columns(pl.col("diagnosis_codes").fill_null(pl.lit([], dtype=pl.List(pl.Utf8))))
        .rename({"subject_id": "patient_id"})
    )
    return table.select("patient_id", "age", "sex", *[c for c, _ in LABS.values()], "diagnosis_codes")


def disease_logits(table: pl.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, list]]]:
    """Log-odds of primary diseases, and for secondary ones their base log-odds plus parent effects.

    A function of the snapshot table only: a lab never measured counts at its population mean.
    """
    lab = {col: table.get_column(col).cast(pl.Float64).fill_null(mean).to_numpy() for col, mean in LABS.values()}
    age = table.get_column("age").to_numpy()
    female = (table.get_column("sex") == "F").to_numpy()
    code_lists = table.get_column("diagnosis_codes")

    def has(code: str) -> np.ndarray:
        return code_lists.list.contains(code).to_numpy().astype(np.float64)

    relu = lambda x: np.maximum(x, 0.0)
    primary = {
        "E11": -3.0 + 2.8 * relu(lab["hba1c"] - 6.0) + 0.9 * has("R73.0") + 0.05 * (lab["bmi"] - 27.5)
        + 0.015 * (age - 55),
        "I10": -2.2 + 0.07 * (lab["systolic_bp"] - 130) + 0.02 * (age - 55) + 0.04 * (lab["bmi"] - 27.5),
        "E78": -2.4 + 0.035 * (lab["cholesterol"] - 200) + 0.02 * (age - 55),
        "J44": -4.2 + 1.4 * has("Z72.0") + 0.9 * has("R05") - 0.07 * (lab["fev1_pct"] - 85) + 0.025 * (age - 55),
        "F32": -3.3 + 1.3 * has("F41.9") + 1.0 * has("G47.0") + 0.4 * has("R53") + 0.35 * female,
        "E66": -3.0 + 0.45 * relu(lab["bmi"] - 29.0) + 0.1 * (lab["bmi"] - 27.5),
    }
    secondary = {
        "N18": (-4.2 - 0.05 * (lab["egfr"] - 75) + 0.02 * (age - 60), ["E11", "I10"], [1.3, 0.9]),
        "I50": (-4.6 + 0.04 * (age - 60) + 0.6 * has("R53"), ["I10", "E11"], [1.4, 0.8]),
        "I25": (-3.8 + 1.3 * has("R07.4") + 0.03 * (age - 55) + 0.4 * (~female), ["E78", "I10"], [1.1, 0.5]),
        "I48": (-5.2 + 0.06 * (age - 65), ["I10", "E11"], [1.0, 0.3]),
    }
    return primary, {k: (v[0], list(zip(v[1], v[2]))) for k, v in secondary.items()}


def oracle_probabilities(table: pl.DataFrame) -> dict[str, np.ndarray]:
    """Exact P(disease | table row): primaries are independent given the row, so each secondary's
    marginal sums over its two parents' four states."""
    primary, secondary = disease_logits(table)
    p = {k: sigmoid(v) for k, v in primary.items()}
    for name, (base, parents) in secondary.items():
        (pa, wa), (pb, wb) = parents
        total = np.zeros_like(base)
        for a in (0, 1):
            for b in (0, 1):
                weight = (p[pa] if a else 1 - p[pa]) * (p[pb] if b else 1 - p[pb])
                total += weight * sigmoid(base + wa * a + wb * b)
        p[name] = total
    return {k: p[k] for k in DISEASES}


def _sample_diseases(table: pl.DataFrame, rng: np.random.Generator) -> dict[str, np.ndarray]:
    primary, secondary = disease_logits(table)
    has = {k: rng.random(len(v)) < sigmoid(v) for k, v in primary.items()}
    for name, (base, parents) in secondary.items():
        logit = base + sum(w * has[parent] for parent, w in parents)
        has[name] = rng.random(len(base)) < sigmoid(logit)
    return {k: has[k] for k in DISEASES}


def generate_cohort(n_patients: int = 20_000, seed: int = 0) -> SyntheticCohort:
    """Generate a cohort: history events, snapshot table, diseases in the year after the index date."""
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    events = _history_events(n_patients, rng)
    table = snapshot_table(events)
    has = _sample_diseases(table, rng)

    # Diagnosis events in the label window (index date, index date + 365 days].
    index_s = int(INDEX_DATE.timestamp())
    pid = table.get_column("patient_id").to_numpy()
    rows_pat, rows_code = [], []
    for name, flag in has.items():
        rows_pat.append(pid[flag]); rows_code.append(np.full(flag.sum(), f"DX//{name}", dtype=object))
    label_pat = np.concatenate(rows_pat)
    label_events = pl.DataFrame({
        "subject_id": label_pat.astype(np.int64),
        "time_s": index_s + rng.integers(1, LABEL_WINDOW_DAYS * 86400, len(label_pat)),
        "code": np.concatenate(rows_code).astype(str),
        "numeric_value": np.full(len(label_pat), np.nan, dtype=np.float32),
    })
    events = pl.concat([events, label_events])
    # Labels are read back from the event stream, as from real data.
    end_s = index_s + LABEL_WINDOW_DAYS * 86400
    diseases = (
        events.filter((pl.col("time_s") > index_s) & (pl.col("time_s") <= end_s)
                      & pl.col("code").is_in([f"DX//{d}" for d in DISEASES]))
        .group_by("subject_id")
        .agg(pl.col("code").str.strip_prefix("DX//").unique().sort().alias("diseases"))
        .rename({"subject_id": "patient_id"})
    )
    table = table.join(diseases, on="patient_id", how="left").with_columns(
        pl.col("diseases").fill_null(pl.lit([], dtype=pl.List(pl.Utf8)))
    )
    oracle = pl.DataFrame({"patient_id": pid, **{f"p_{k}": v for k, v in oracle_probabilities(table).items()}})
    events = (
        events.with_columns(pl.from_epoch("time_s", time_unit="s").cast(pl.Datetime("us")).alias("time"))
        .select("subject_id", "time", "code", pl.col("numeric_value").fill_nan(None))
        .sort("subject_id", "time", "code", nulls_last=False)
    )
    info = {
        "generator": "ehrdx.synth v1",
        "n_patients": n_patients,
        "seed": seed,
        "index_date": INDEX_DATE.isoformat(),
        "label_window_days": LABEL_WINDOW_DAYS,
        "diseases": DISEASES,
        "n_events": events.height,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return SyntheticCohort(events=events, table=table, oracle=oracle, info=info)


def table_to_csv_frame(table: pl.DataFrame) -> pl.DataFrame:
    """List columns as ';'-separated strings, for CSV."""
    return table.with_columns(
        [pl.col(c).list.join(";") for c, dt in table.schema.items() if isinstance(dt, pl.List)]
    )


def write_cohort(cohort: SyntheticCohort, out_dir: str | Path, table_format: str = "parquet") -> dict[str, Path]:
    """Write events.parquet, patients.{parquet,csv}, oracle.parquet and cohort.json into out_dir.
    (The longitudinal cohort, written as MEDS, is in ehrdx.data.synth_visits.)"""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"oracle": out / "oracle.parquet", "info": out / "cohort.json", "events": out / "events.parquet"}
    cohort.events.write_parquet(paths["events"])
    cohort.oracle.write_parquet(paths["oracle"])
    if table_format == "csv":
        paths["table"] = out / "patients.csv"
        table_to_csv_frame(cohort.table).write_csv(paths["table"])
    else:
        paths["table"] = out / "patients.parquet"
        cohort.table.write_parquet(paths["table"])
    paths["info"].write_text(json.dumps(cohort.info, indent=2))
    return paths
