"""The longitudinal cohort: the generative process (process.py) run visit by visit, written as MEDS, with
the exact next-visit oracle: P(label at visit k+1 | history up to the end of visit k), saved beside the
data, is the best any model can do on the next-visit task. It is also the event stream that the table
cohort (snapshot.py) is a snapshot of.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from ehrdx.data.synth.process import (
    DISEASE_NAMES,
    DISEASES,
    END_DATE,
    LABEL_PREFIX,
    MAX_VISITS,
    NEW_DISEASE,
    NEW_DISEASE_DATE,
    SIMULATED,
    SPLIT_CODE,
    SPLIT_DATE,
    SPLIT_INTO,
    START_DATE,
    PatientState,
    Traits,
    draw_traits,
    end_of_visit,
    next_visit_probabilities,
    split_code_probabilities,
    visit,
)


@dataclass
class LongitudinalCohort:
    events: pl.DataFrame  # MEDS-shaped: subject_id, time, code, numeric_value
    oracle: pl.DataFrame  # subject_id, prediction_time, n_visit, p_<label>, coded_<label> (before)
    label_map: pl.DataFrame  # code, label, description
    info: dict


@dataclass
class IndexState:
    """The generator's full state at an index date, for patients with a visit before it: each patient's
    state at the end of their last visit before the index date, and their hidden traits."""

    rows: np.ndarray  # [k] patient rows (subject_id - 1)
    n_visits: np.ndarray  # [k] visits so far (follow-up stops after MAX_VISITS)
    state: PatientState  # [k] at the end of the last visit before the index date
    traits: Traits  # [k]


def simulate(n_patients: int, seed: int, index_date: datetime | None = None
             ) -> tuple[LongitudinalCohort, IndexState | None]:
    """Run the process for n_patients; with index_date, also keep everyone's state at it (no random draw
    depends on it: the cohort is the same with or without)."""
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n = n_patients
    end_s = int(END_DATE.timestamp())
    tr = draw_traits(n, rng)
    s = PatientState.at_entry(tr)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    oracle_parts: list[dict[str, np.ndarray]] = []

    def emit(who: np.ndarray, t: np.ndarray, code: str | np.ndarray, value: np.ndarray | None = None) -> None:
        codes = np.full(len(who), code, dtype=object) if isinstance(code, str) else code
        vals = np.full(len(who), np.nan) if value is None else value
        parts.append((who, t, codes, vals))

    index_s = None if index_date is None else int(index_date.timestamp())
    kept_rows, kept_states, kept_visits = [], [], []
    active = np.ones(n, bool)
    visit_time = tr.entry.copy()
    died_at = np.full(n, -1, dtype=np.int64)
    p_next = next_visit_probabilities(s)  # before the first visit: no history
    for k in range(MAX_VISITS):
        who = np.flatnonzero(active)
        if len(who) == 0:
            break
        t = visit_time[who]
        m = len(who)
        # Diseases coded at this visit are drawn from the probabilities fixed at the end of the previous one.
        visit(s, tr, who, t, p_next[who], rng, emit)
        p_next = next_visit_probabilities(s)
        fine = split_code_probabilities(s, p_next)
        oracle_parts.append({"row": who, "time": t, "n_visit": np.full(m, k + 1), "p": p_next[who],
                             "fine": {c: v[who] for c, v in fine.items()}, "coded": s.coded[who].copy()})
        dies, died, visit_time[who] = end_of_visit(s, tr, who, t, rng)
        died_at[who[dies]] = died
        active[who] = ~dies & (visit_time[who] < end_s)
        if index_s is not None:  # this was the last visit before the index date
            ends = dies | (visit_time[who] >= index_s) | (k == MAX_VISITS - 1)
            last = who[(t < index_s) & ends]
            kept_rows.append(last)
            kept_states.append(s.take(last))
            kept_visits.append(np.full(len(last), k + 1))

    ids = np.arange(1, n + 1, dtype=np.int64)
    dead = np.flatnonzero((died_at > 0) & (died_at < end_s))
    emit(dead, died_at[dead], "MEDS_DEATH")
    emit(np.arange(n), tr.birth, "MEDS_BIRTH")
    rows = np.concatenate([p[0] for p in parts])
    events = pl.DataFrame({
        "subject_id": ids[rows],
        "time": pl.Series(np.concatenate([p[1] for p in parts]).astype(np.int64) * 1_000_000).cast(pl.Datetime("us")),
        "code": np.concatenate([p[2] for p in parts]).astype(str),
        "numeric_value": np.concatenate([p[3] for p in parts]).astype(np.float32),
    })
    static = pl.DataFrame({
        "subject_id": ids, "time": pl.Series([None] * n, dtype=pl.Datetime("us")),
        "code": np.where(tr.female, "GENDER//F", "GENDER//M"), "numeric_value": np.full(n, np.nan, np.float32),
    })
    events = (pl.concat([static, events]).with_columns(pl.col("numeric_value").fill_nan(None))
              .sort("subject_id", "time", "code", nulls_last=False))

    o_rows = np.concatenate([o["row"] for o in oracle_parts])
    p = np.concatenate([o["p"] for o in oracle_parts])
    coded = np.concatenate([o["coded"] for o in oracle_parts])
    oracle = pl.DataFrame({
        "subject_id": ids[o_rows],
        "prediction_time": pl.Series(np.concatenate([o["time"] for o in oracle_parts]) * 1_000_000).cast(
            pl.Datetime("us")),
        "n_visit": np.concatenate([o["n_visit"] for o in oracle_parts]).astype(np.int32),
        **{f"p_{d}": p[:, j] for j, d in enumerate(SIMULATED)},
        **{f"p_{c}": np.concatenate([o["fine"][c] for o in oracle_parts]) for c in SPLIT_INTO},
        **{f"coded_{d}": coded[:, j] for j, d in enumerate(SIMULATED)},
    }).sort("subject_id", "prediction_time")
    label_map = pl.DataFrame({
        "code": [LABEL_PREFIX + d + ("*" if d == SPLIT_CODE else "") for d in DISEASE_NAMES]
        + [LABEL_PREFIX + c for c in SPLIT_INTO] + [LABEL_PREFIX + NEW_DISEASE],
        "label": [*DISEASE_NAMES, *SPLIT_INTO, NEW_DISEASE],
        "description": [DISEASES[d] for d in DISEASE_NAMES] + list(SPLIT_INTO.values()) + ["COVID-19"],
        "parent": [None] * len(DISEASE_NAMES) + [SPLIT_CODE] * len(SPLIT_INTO) + [None],
        "introduced_at": [None] * len(DISEASE_NAMES) + [SPLIT_DATE.isoformat()] * len(SPLIT_INTO)
        + [NEW_DISEASE_DATE.isoformat()],
    })
    info = {
        "generator": "ehrdx.synth_visits v1", "n_patients": n, "seed": seed,
        "follow_up": [START_DATE.isoformat(), END_DATE.isoformat()], "diseases": DISEASES,
        "label_codes": LABEL_PREFIX + "<disease>", "n_events": events.height, "n_visits": len(o_rows),
        "n_deaths": len(dead), "oracle_task": "next-visit",
        "label_changes": {"new_disease": {"code": LABEL_PREFIX + NEW_DISEASE, "from": NEW_DISEASE_DATE.isoformat()},
                          "code_split": {"code": LABEL_PREFIX + SPLIT_CODE, "into": [LABEL_PREFIX + c for c in SPLIT_INTO],
                                         "from": SPLIT_DATE.isoformat()}}, "seconds": round(time.perf_counter() - t0, 2),
    }
    cohort = LongitudinalCohort(events=events, oracle=oracle, label_map=label_map, info=info)
    if index_s is None:
        return cohort, None
    kept = np.concatenate(kept_rows)
    order = np.argsort(kept)
    state = PatientState(**{f: np.concatenate([getattr(x, f) for x in kept_states])[order]
                            for f in vars(kept_states[0])})
    return cohort, IndexState(rows=kept[order], n_visits=np.concatenate(kept_visits)[order], state=state,
                              traits=tr.take(kept[order]))


def generate_longitudinal(n_patients: int = 20_000, seed: int = 0) -> LongitudinalCohort:
    return simulate(n_patients, seed)[0]


def write_longitudinal(cohort: LongitudinalCohort, out_dir: str | Path) -> dict[str, Path]:
    """OUT/meds (MEDS dataset with train/tuning/held_out splits), OUT/oracle.parquet, OUT/label_map.csv,
    OUT/cohort.json."""
    from ehrdx.data.meds import MEDS_SPLITS, write_meds
    from ehrdx.data.splits import split_patients

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Splits stratified by the diseases each patient is ever coded with.
    ever = cohort.oracle.group_by("subject_id").agg(
        [pl.col(f"coded_{d}").any() for d in SIMULATED]).sort("subject_id")
    ids = ever.get_column("subject_id").to_numpy()
    y = ever.select([f"coded_{d}" for d in SIMULATED]).to_numpy().astype(np.float32)
    parts = split_patients(y, seed=cohort.info["seed"], rule=1)  # the cohort's splits as first published
    splits = pl.concat([pl.DataFrame({"subject_id": ids[rows], "split": [name] * len(rows)})
                        for name, rows in zip(MEDS_SPLITS, parts)])
    described = {LABEL_PREFIX + d: DISEASES[d] for d in DISEASE_NAMES}
    described |= {LABEL_PREFIX + c: text for c, text in SPLIT_INTO.items()} | {LABEL_PREFIX + NEW_DISEASE: "COVID-19"}
    codes = cohort.events.select(pl.col("code").unique().sort()).with_columns(
        pl.col("code").replace_strict(described, default=None).alias("description"),
        pl.when(pl.col("code").str.starts_with(LABEL_PREFIX))
        .then(pl.concat_list(pl.lit(LABEL_PREFIX) + pl.col("code").str.slice(len(LABEL_PREFIX), 3)))
        .otherwise(None).alias("parent_codes"))
    paths = {
        "meds": write_meds(out / "meds", cohort.events, splits=splits, codes=codes, dataset_name="ehrdx_longitudinal"),
        "oracle": out / "oracle.parquet", "label_map": out / "label_map.csv", "info": out / "cohort.json",
    }
    cohort.oracle.write_parquet(paths["oracle"])
    cohort.label_map.write_csv(paths["label_map"])
    paths["info"].write_text(json.dumps(cohort.info, indent=2))
    return paths
