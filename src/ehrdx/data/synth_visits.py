"""Built-in longitudinal cohort: visits over years, diseases diagnosed along the way, an exact oracle.

Each patient enters follow-up between 2016 and 2020 and visits until 2024-01-01 (or death). At each
visit, labs are measured (values drift with latent health factors and time), symptom and noise codes
are recorded, and diseases are coded. The chance that a disease is first coded at visit k+1 is an
exact function of what is observable at the end of visit k (last and previous lab values, how recently
each symptom was recorded, the diseases already coded, age, sex); a disease already coded is coded
again with a fixed probability. So for the next-visit task the oracle P(label at visit k+1 | history up
to the end of visit k) is known exactly and saved beside the data: it is the best any model can do.

Some of what drives onset is temporal (a rising lab value, a symptom in the last year), which counts
of past codes and last values cannot see: this is what a sequence model should pick up.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from ehrdx.data.synth import DISEASES, NOISE_CODES, sigmoid

START_DATE = datetime(2016, 1, 1)
END_DATE = datetime(2024, 1, 1)
# How the disease list changes over time (both appear in the data and in the label map):
NEW_DISEASE, NEW_DISEASE_DATE = "U07.1", datetime(2020, 3, 1)  # a disease that exists from a date on
SPLIT_CODE, SPLIT_DATE = "E11", datetime(2021, 1, 1)  # from then on coded as E11.2 or E11.9
SPLIT_INTO = {"E11.2": "Type 2 diabetes mellitus with kidney complications",
              "E11.9": "Type 2 diabetes mellitus without complications"}
DAY = 86400
YEAR = 365.25 * DAY
MAX_VISITS = 40
LABEL_PREFIX = "DX//"

LAB_CODES = ["LAB//HBA1C", "LAB//SBP", "LAB//CHOLESTEROL", "LAB//BMI", "LAB//FEV1_PCT", "LAB//EGFR"]
LAB_MEAN = np.array([5.7, 130.0, 200.0, 27.5, 85.0, 80.0])  # counts for a lab never measured
SYMPTOM_CODES = ["DX//R73.0", "DX//Z72.0", "DX//R05", "DX//R07.4", "DX//F41.9", "DX//G47.0", "DX//R53"]
DISEASE_NAMES = list(DISEASES)
SIMULATED = [*DISEASE_NAMES, NEW_DISEASE]
N_SIM = len(SIMULATED)
# Probability that a disease already coded is coded again at a later visit.
RECODE = np.array([0.7, 0.7, 0.5, 0.6, 0.4, 0.4, 0.6, 0.7, 0.5, 0.6, 0.1])
HBA1C, SBP, CHOL, BMI, FEV1, EGFR = range(6)
R73, Z72, R05, R074, F419, G470, R53 = range(7)
E11, I10, E78, J44, F32, E66, N18, I50, I25, I48, U07 = range(11)


@dataclass
class LongitudinalCohort:
    events: pl.DataFrame  # MEDS-shaped: subject_id, time, code, numeric_value
    oracle: pl.DataFrame  # subject_id, prediction_time, n_visit, p_<label>, coded_<label> (before)
    label_map: pl.DataFrame  # code, label, description
    info: dict


@dataclass
class _State:
    """What is observable about each patient at the end of their latest visit."""

    age: np.ndarray
    female: np.ndarray
    last: np.ndarray  # [n, 6] last lab values, NaN if never measured
    prev: np.ndarray  # [n, 6] the value before the last one, NaN if none
    symptom_time: np.ndarray  # [n, 7] seconds of the latest record of each symptom, -inf if never
    now: np.ndarray  # [n] time of the latest visit (s)
    coded: np.ndarray  # [n, 11] disease coded at or before the latest visit


def onset_logits(s: _State) -> np.ndarray:
    """Log-odds [n, 11] that each disease not yet coded is first coded at the next visit."""
    last = np.where(np.isnan(s.last), LAB_MEAN, s.last)
    rise = np.nan_to_num(s.last - s.prev, nan=0.0)  # change between the last two measurements
    recent = (s.now[:, None] - s.symptom_time) <= 180 * DAY  # symptom recorded within the last 6 months
    ever = np.isfinite(s.symptom_time)
    dx = s.coded.astype(np.float64)
    a, f = s.age, s.female.astype(np.float64)
    relu = lambda x: np.maximum(x, 0.0)
    out = np.empty((len(a), N_SIM))
    out[:, E11] = (-5.4 + 1.5 * relu(last[:, HBA1C] - 6.0) + 8.0 * relu(rise[:, HBA1C]) + 2.0 * recent[:, R73]
                   + 0.04 * (last[:, BMI] - 27.5) + 0.015 * (a - 55))
    out[:, I10] = -4.6 + 0.05 * (last[:, SBP] - 130) + 0.08 * relu(rise[:, SBP]) + 0.02 * (a - 55)
    out[:, E78] = -4.6 + 0.03 * (last[:, CHOL] - 200) + 0.02 * (a - 55)
    out[:, J44] = (-6.4 + 1.0 * ever[:, Z72] + 2.8 * recent[:, R05] - 0.05 * (last[:, FEV1] - 85)
                   + 0.025 * (a - 55))
    out[:, F32] = -5.8 + 2.8 * recent[:, F419] + 2.2 * recent[:, G470] + 0.35 * f
    out[:, E66] = -5.0 + 0.4 * relu(last[:, BMI] - 29.0) + 0.08 * (last[:, BMI] - 27.5) + 1.0 * relu(rise[:, BMI])
    out[:, N18] = (-5.8 - 0.04 * (last[:, EGFR] - 75) + 0.15 * relu(-rise[:, EGFR]) + 0.02 * (a - 60)
                   + 1.2 * dx[:, E11] + 0.8 * dx[:, I10])
    out[:, I50] = -6.6 + 0.04 * (a - 60) + 2.4 * recent[:, R53] + 1.3 * dx[:, I10] + 0.8 * dx[:, E11]
    out[:, I25] = (-6.0 + 3.0 * recent[:, R074] + 0.03 * (a - 55) + 0.4 * (1 - f) + 1.0 * dx[:, E78]
                   + 0.5 * dx[:, I10])
    out[:, I48] = -6.6 + 0.06 * (a - 65) + 0.9 * dx[:, I10] + 0.3 * dx[:, E11]
    out[:, U07] = -4.2 + 0.02 * (a - 55) + 1.2 * recent[:, R05] + 0.8 * dx[:, J44]
    return out


def next_visit_probabilities(s: _State) -> np.ndarray:
    """P(disease coded at the next visit | observable state): recoding if coded, onset otherwise. The new
    disease can be coded at a visit only if the visit before it was on or after its date."""
    p = np.where(s.coded, RECODE[None, :], sigmoid(onset_logits(s)))
    p[:, U07] *= s.now >= NEW_DISEASE_DATE.timestamp()
    return p


def split_code_probabilities(s: _State, p: np.ndarray) -> dict[str, np.ndarray]:
    """After the split date, an E11 record is E11.2 if kidney disease is already coded, else E11.9
    (decided by the state at the end of the visit before it, like everything else)."""
    after = s.now >= SPLIT_DATE.timestamp()
    kidney = s.coded[:, N18]
    return {"E11.2": p[:, E11] * after * kidney, "E11.9": p[:, E11] * after * ~kidney}


def generate_longitudinal(n_patients: int = 20_000, seed: int = 0) -> LongitudinalCohort:
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n = n_patients
    start_s, end_s = int(START_DATE.timestamp()), int(END_DATE.timestamp())
    female = rng.random(n) < 0.52
    age0 = rng.uniform(25, 85, n)
    z = rng.standard_normal((n, 4))  # metabolic, cardiovascular, lung, mood
    smoker = rng.random(n) < sigmoid(-1.2 + 0.6 * z[:, 2])
    drift = np.maximum(z[:, 0] + 0.7 * rng.standard_normal(n), 0.0)  # metabolic worsening per year
    entry = start_s + rng.uniform(0, 4 * YEAR, n).astype(np.int64)
    birth = (entry - age0 * YEAR).astype(np.int64)
    mean_gap_days = 300 * np.exp(-0.15 * np.abs(z[:, 0]) - 0.004 * (age0 - 50))

    s = _State(age=age0.copy(), female=female, last=np.full((n, 6), np.nan), prev=np.full((n, 6), np.nan),
               symptom_time=np.full((n, 7), -np.inf), now=entry.astype(np.float64),
               coded=np.zeros((n, N_SIM), bool))
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    oracle_parts: list[dict[str, np.ndarray]] = []
    {c: np.array(c, dtype=object) for c in [*LAB_CODES, *SYMPTOM_CODES, "ENCOUNTER"]}

    def emit(who: np.ndarray, t: np.ndarray, code: str | np.ndarray, value: np.ndarray | None = None) -> None:
        codes = np.full(len(who), code, dtype=object) if isinstance(code, str) else code
        vals = np.full(len(who), np.nan) if value is None else value
        parts.append((who, t, codes, vals))

    active = np.ones(n, bool)
    episode = np.zeros((n, 7))
    visit_time = entry.copy()
    died_at = np.full(n, -1, dtype=np.int64)
    p_next = next_visit_probabilities(s)  # before the first visit: no history
    for k in range(MAX_VISITS):
        who = np.flatnonzero(active)
        if len(who) == 0:
            break
        t = visit_time[who]
        years = (t - entry[who]) / YEAR
        age = (t - birth[who]) / YEAR
        m = len(who)
        emit(who, t, "ENCOUNTER")
        # Diseases coded at this visit, drawn from the probabilities fixed at the end of the previous one.
        dx_now = rng.random((m, N_SIM)) < p_next[who]
        split = s.now[who] >= SPLIT_DATE.timestamp()  # state at the end of the previous visit
        for j in range(N_SIM):
            hit = dx_now[:, j]
            code = np.full(m, LABEL_PREFIX + SIMULATED[j], dtype=object)
            if j == E11:
                code = np.where(split, np.where(s.coded[who, N18], "DX//E11.2", "DX//E11.9"), code)
            emit(who[hit], t[hit], code[hit])
        # Labs: latent factors, age and (for metabolic labs) worsening over the years of follow-up.
        zm, zc, zl = z[who, 0], z[who, 1], z[who, 2]
        sm, dr = smoker[who], drift[who]
        values = np.stack([
            5.5 + 0.5 * zm + 0.008 * (age - 50) + 0.2 * dr * years + rng.normal(0, 0.15, m),
            127 + 9 * zc + 0.35 * (age - 50) + 1.5 * years * np.maximum(zc, 0) + rng.normal(0, 8, m),
            200 + 22 * (0.7 * zc + 0.3 * zm) + rng.normal(0, 15, m),
            27.5 + 3.5 * zm + 0.25 * dr * years + rng.normal(0, 1.0, m),
            88 - 9 * zl - 7 * sm - 0.15 * (age - 50) - 1.0 * sm * years + rng.normal(0, 5, m),
            92 - 0.7 * (age - 40) - 4 * zm - 1.5 * dr * years + rng.normal(0, 7, m),
        ], axis=1)
        measure_p = np.stack([0.3 + 0.3 * sigmoid(zm), np.full(m, 0.8), np.full(m, 0.35), np.full(m, 0.6),
                              np.full(m, 0.2), np.full(m, 0.4)], axis=1)
        measured = rng.random((m, 6)) < measure_p
        for j, code in enumerate(LAB_CODES):
            hit = measured[:, j]
            emit(who[hit], t[hit], code, np.round(values[hit, j], 2))
        # Symptoms come in episodes: a persistent per-visit disturbance on top of the patient's risk.
        episode[who] = 0.5 * episode[who] + rng.standard_normal((m, 7))
        ep = episode[who]
        symptom_p = sigmoid(np.stack([
            -3.8 + 1.0 * zm + 0.3 * dr * years,
            np.where(sm, -0.6, -9.0),
            -3.6 + 0.8 * zl + 0.6 * sm,
            -4.0 + 0.8 * zc + 0.05 * years,
            -3.4 + 0.8 * z[who, 3],
            -3.6 + 0.7 * z[who, 3],
            -3.4 + 0.4 * z[who, 3] + 0.2 * zm,
        ], axis=1) + 1.6 * ep * np.array([1, 0, 1, 1, 1, 1, 1]))
        sym = rng.random((m, 7)) < symptom_p
        for j, code in enumerate(SYMPTOM_CODES):
            hit = sym[:, j]
            emit(who[hit], t[hit], code)
        zipf = 1.0 / np.arange(1, len(NOISE_CODES) + 1)
        n_noise = rng.poisson(1.0, m)
        src = np.repeat(np.arange(m), n_noise)
        emit(who[src], t[src], np.asarray(NOISE_CODES, dtype=object)[
            rng.choice(len(NOISE_CODES), len(src), p=zipf / zipf.sum())])

        # Update what is observable at the end of this visit.
        s.prev[who] = np.where(measured, s.last[who], s.prev[who])
        s.last[who] = np.where(measured, np.round(values, 2), s.last[who])
        s.symptom_time[who] = np.where(sym, t[:, None].astype(np.float64), s.symptom_time[who])
        s.coded[who] |= dx_now
        s.age[who] = age
        s.now[who] = t
        p_next = next_visit_probabilities(s)
        fine = split_code_probabilities(s, p_next)
        oracle_parts.append({"row": who, "time": t, "n_visit": np.full(m, k + 1), "p": p_next[who],
                             "fine": {c: v[who] for c, v in fine.items()}, "coded": s.coded[who].copy()})

        # Death ends follow-up; otherwise the next visit comes after an exponential gap.
        p_death = sigmoid(-7.0 + 0.07 * (age - 60) + 1.0 * s.coded[who, I50])
        dies = rng.random(m) < p_death
        died_at[who[dies]] = t[dies] + rng.integers(DAY, 200 * DAY, dies.sum())
        gap = np.maximum(rng.exponential(mean_gap_days[who]) * DAY, DAY).astype(np.int64)
        visit_time[who] = t + gap
        active[who] = ~dies & (visit_time[who] < end_s)

    ids = np.arange(1, n + 1, dtype=np.int64)
    dead = np.flatnonzero((died_at > 0) & (died_at < end_s))
    emit(dead, died_at[dead], "MEDS_DEATH")
    emit(np.arange(n), birth, "MEDS_BIRTH")
    rows = np.concatenate([p[0] for p in parts])
    events = pl.DataFrame({
        "subject_id": ids[rows],
        "time": pl.Series(np.concatenate([p[1] for p in parts]).astype(np.int64) * 1_000_000).cast(pl.Datetime("us")),
        "code": np.concatenate([p[2] for p in parts]).astype(str),
        "numeric_value": np.concatenate([p[3] for p in parts]).astype(np.float32),
    })
    static = pl.DataFrame({
        "subject_id": ids, "time": pl.Series([None] * n, dtype=pl.Datetime("us")),
        "code": np.where(female, "GENDER//F", "GENDER//M"), "numeric_value": np.full(n, np.nan, np.float32),
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
    return LongitudinalCohort(events=events, oracle=oracle, label_map=label_map, info=info)


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
    parts = split_patients(y, seed=cohort.info["seed"])
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
