"""The patient-table cohort: a snapshot of the longitudinal cohort's events at an index date.

One row per patient alive and in follow-up at the index date: age, sex, each lab's last value, the
diagnosis codes recorded before the index date (symptoms, other codes, and diseases already coded), and as
labels the diseases coded in the following year (E11.2 and E11.9 count as E11; the labels are the ten
chronic DISEASES, so U07.1 shows only as a past code). The table is derived from the events exactly as a
user would derive it from their EHR; the events are those of generate_longitudinal with the same seed.

The oracle. What a row shows does not determine P(label | row) in closed form (the row hides when each
code was recorded, the lab value before the last, the latent health factors, the symptom episodes), so the
saved oracle is P(label | the generator's state at the index date): each patient's hidden traits and whole
history up to the index date, including that they are alive with no visit since their last one. It is an
upper bound for any model of the table, not a level such a model can reach. It is computed by running the
process forward from the index date `replicates` times per patient (Monte Carlo; its standard error is in
cohort.json).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from ehrdx.data.synth.longitudinal import IndexState, simulate
from ehrdx.data.synth.process import (
    DAY,
    DISEASES,
    END_DATE,
    LABEL_PREFIX,
    LABS,
    MAX_VISITS,
    SPLIT_CODE,
    SPLIT_INTO,
    death_probability,
    end_of_visit,
    next_visit_probabilities,
    visit,
)

INDEX_DATE = datetime(2023, 1, 1)
LABEL_WINDOW_DAYS = 365  # the window ends with follow-up, on 2024-01-01
ORACLE_REPLICATES = 64
# Codes that are a table label: each disease's code, and the codes E11 is split into.
LABEL_CODES = {LABEL_PREFIX + d: d for d in DISEASES} | {LABEL_PREFIX + c: SPLIT_CODE for c in SPLIT_INTO}


@dataclass
class SyntheticCohort:
    events: pl.DataFrame  # subject_id, time, code, numeric_value (MEDS-style): the longitudinal events
    table: pl.DataFrame  # one row per patient: snapshot at the index date + diseases in the year after
    oracle: pl.DataFrame  # patient_id + p_<disease>: P(disease | generator's state at the index date)
    info: dict


def _seconds(events: pl.DataFrame) -> pl.DataFrame:
    return events if "time_s" in events.columns else events.with_columns(pl.col("time").dt.epoch("s").alias("time_s"))


def snapshot_table(events: pl.DataFrame, index_date: datetime = INDEX_DATE) -> pl.DataFrame:
    """The patient table at the index date, from events strictly before it (`time`, or `time_s` in
    seconds): patients alive at the index date with at least one visit before it."""
    index_s = int(index_date.timestamp())
    events = _seconds(events)
    before = events.filter(pl.col("time_s").is_not_null() & (pl.col("time_s") < index_s))
    ids = (before.filter(pl.col("code") == "ENCOUNTER").select("subject_id").unique()
           .join(before.filter(pl.col("code") == "MEDS_DEATH").select("subject_id"), on="subject_id", how="anti")
           .sort("subject_id"))
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


def window_labels(events: pl.DataFrame, index_date: datetime = INDEX_DATE,
                  days: int = LABEL_WINDOW_DAYS) -> pl.DataFrame:
    """patient_id, diseases: the diseases coded in (index date, index date + days], for patients with any."""
    index_s = int(index_date.timestamp())
    return (
        _seconds(events)
        .filter((pl.col("time_s") > index_s) & (pl.col("time_s") <= index_s + days * DAY)
                & pl.col("code").is_in(list(LABEL_CODES)))
        .group_by("subject_id")
        .agg(pl.col("code").replace_strict(LABEL_CODES).unique().sort().alias("diseases"))
        .rename({"subject_id": "patient_id"})
    )


def _gap_cdf(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """P(gap <= x seconds) for the gap between visits: whole seconds of an exponential, at least a day."""
    return np.where(x < DAY, 0.0, 1 - np.exp(-(x + 1) / mean))


def oracle_given_index_state(at: IndexState, index_date: datetime, days: int, seed: int,
                             replicates: int = ORACLE_REPLICATES, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """P(each disease is coded at a visit in (index date, index date + days] | the generator's state at the
    index date) [k, 10], and its Monte Carlo standard error [k, 10].

    The state at the index date is the state at the end of the last visit before it, plus what the index
    date itself tells: no visit since, and alive. Given that, whether death was drawn at that visit and the
    time of the next visit are drawn again from their exact conditional law (the gap is exponential, so
    the wait from the index date is the same exponential). Each replicate then runs the process forward
    and adds, at each visit in the window, P(coded there) while the disease is not yet coded in the window
    (unbiased for P(coded in the window), with less variance than counting draws); at the first visit,
    whose probabilities are fixed by the state, that term is P(coded there) x P(the visit falls in the
    window), exactly."""
    rng = np.random.default_rng([seed, 1])
    index_s, end_s = int(index_date.timestamp()), int(END_DATE.timestamp())
    window_s = min(index_s + days * DAY, end_s - 1)
    k = len(at.rows)
    mean, se = np.zeros((k, len(DISEASES))), np.zeros((k, len(DISEASES)))
    for lo in range(0, k, chunk):
        rep = np.repeat(np.arange(lo, min(lo + chunk, k)), replicates)
        s, tr, n_vis = at.state.take(rep), at.traits.take(rep), at.n_visits[rep].copy()
        r = np.arange(len(rep))
        since = index_s - s.now
        p_death = death_probability(s, r)
        gap_mean = tr.mean_gap_days * DAY
        no_visit_yet = np.where(since <= DAY, 1.0, np.exp(-since / gap_mean))
        death_after_index = np.clip((200 * DAY - np.maximum(since, DAY)) / (199 * DAY), 0.0, 1.0)
        visit_comes, dead_later = (1 - p_death) * no_visit_yet, p_death * death_after_index
        w = visit_comes / np.maximum(visit_comes + dead_later, 1e-300)  # P(another visit | alive at the index date)
        wait = rng.exponential(gap_mean)
        visit_time = np.where(since <= DAY, s.now + np.maximum(wait, DAY), index_s + wait).astype(np.int64)
        active = (visit_time <= window_s) & (n_vis < MAX_VISITS)
        # P(index date < first visit <= window end)
        first_in_window = np.where(since <= DAY, _gap_cdf(window_s - s.now, gap_mean) - _gap_cdf(since, gap_mean),
                                   np.exp(-1 / gap_mean) - np.exp(-(window_s - index_s + 1) / gap_mean))
        p_next = next_visit_probabilities(s)
        q = (first_in_window * (n_vis < MAX_VISITS))[:, None] * p_next
        open_ = np.ones_like(q, dtype=bool)  # not yet coded in the window
        first = True
        while active.any():
            who = np.flatnonzero(active)
            t = visit_time[who]
            p = p_next[who]
            counts = (t > index_s)[:, None]
            if not first:
                q[who] += p * (open_[who] & counts)
            first = False
            dx = visit(s, tr, who, t, p, rng)
            open_[who] &= ~(dx & counts)
            n_vis[who] += 1
            p_next[who] = next_visit_probabilities(s.take(who))
            dies, _, visit_time[who] = end_of_visit(s, tr, who, t, rng)
            active[who] = ~dies & (visit_time[who] <= window_s) & (n_vis[who] < MAX_VISITS)
        q = (w[:, None] * q[:, : len(DISEASES)]).reshape(-1, replicates, len(DISEASES))
        mean[lo: lo + chunk] = np.minimum(q.mean(1), 1.0)
        se[lo: lo + chunk] = q.std(1, ddof=1) / np.sqrt(replicates)
    return mean, se


def generate_cohort(n_patients: int = 20_000, seed: int = 0,
                    oracle_replicates: int = ORACLE_REPLICATES) -> SyntheticCohort:
    """The longitudinal cohort's events, the patient table at the index date with the diseases coded in
    the year after it, and the oracle given the generator's state at the index date."""
    t0 = time.perf_counter()
    long, at_index = simulate(n_patients, seed, INDEX_DATE)
    events = long.events
    table = snapshot_table(events).join(window_labels(events), on="patient_id", how="left").with_columns(
        pl.col("diseases").fill_null(pl.lit([], dtype=pl.List(pl.Utf8))))
    pid = table.get_column("patient_id").to_numpy()
    rows = np.minimum(np.searchsorted(at_index.rows, pid - 1), len(at_index.rows) - 1)
    assert (at_index.rows[rows] == pid - 1).all(), "every table row has its state at the index date"
    kept = IndexState(rows=at_index.rows[rows], n_visits=at_index.n_visits[rows],
                      state=at_index.state.take(rows), traits=at_index.traits.take(rows))
    p, p_se = oracle_given_index_state(kept, INDEX_DATE, LABEL_WINDOW_DAYS, seed, oracle_replicates)
    oracle = pl.DataFrame({"patient_id": pid, **{f"p_{d}": p[:, j] for j, d in enumerate(DISEASES)}})
    index_s = int(INDEX_DATE.timestamp())
    dead = events.filter((pl.col("code") == "MEDS_DEATH") & (pl.col("time").dt.epoch("s") < index_s)).height
    info = {
        "generator": "ehrdx.synth v2: a snapshot of ehrdx.synth_visits v1",
        "n_patients": n_patients,
        "seed": seed,
        "index_date": INDEX_DATE.isoformat(),
        "label_window_days": LABEL_WINDOW_DAYS,
        "diseases": DISEASES,
        "n_events": events.height,
        "n_table_rows": table.height,
        "excluded": {"died_before_index_date": dead, "no_visit_before_index_date": n_patients - table.height - dead},
        "oracle": "P(disease coded in the window | generator's state at the index date: hidden traits and "
                  "whole history); an upper bound for a model of the table, estimated by Monte Carlo",
        "oracle_replicates": oracle_replicates,
        "oracle_mean_standard_error": round(float(p_se.mean()), 5),
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
    (The longitudinal cohort, written as MEDS, is write_longitudinal.)"""
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
