"""The generative process: what each patient is (hidden traits), what is recorded at a visit, and the
probability that each disease is coded at the next visit. The longitudinal cohort runs it visit by visit;
the table cohort's oracle runs it forward from the index date. Every constant lives here, once.

Each patient enters follow-up between 2016 and 2020 and visits until 2024-01-01 (or death). At each
visit, labs are measured (values drift with latent health factors and time), symptom and noise codes
are recorded, and diseases are coded. The chance that a disease is first coded at visit k+1 is an
exact function of what is observable at the end of visit k (last and previous lab values, how recently
each symptom was recorded, the diseases already coded, age, sex); a disease already coded is coded
again with a fixed probability. Some of what drives onset is temporal (a rising lab value, a symptom in
the last year), which counts of past codes and last values cannot see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime

import numpy as np

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

# Labs: code -> (column in the patient table, population mean that counts for a lab never measured).
LABS = {
    "LAB//HBA1C": ("hba1c", 5.7),
    "LAB//SBP": ("systolic_bp", 130.0),
    "LAB//CHOLESTEROL": ("cholesterol", 200.0),
    "LAB//BMI": ("bmi", 27.5),
    "LAB//FEV1_PCT": ("fev1_pct", 85.0),
    "LAB//EGFR": ("egfr", 80.0),
}
LAB_CODES = list(LABS)
LAB_MEAN = np.array([mean for _, mean in LABS.values()])
SYMPTOM_CODES = ["DX//R73.0", "DX//Z72.0", "DX//R05", "DX//R07.4", "DX//F41.9", "DX//G47.0", "DX//R53"]
NOISE_CODES = [f"DX//{c}" for c in [
    "Z00.0", "J06.9", "M54.5", "K21.9", "H52.4", "L30.9", "J30.4", "N39.0", "R51", "M25.5", "B34.9", "K59.0",
    "Z23", "R10.4", "H10.9", "L70.0", "M79.6", "R11.2", "J20.9", "R42", "T14.1", "Z30.0", "K52.9", "H61.2",
    "R21", "M54.2", "Z01.4", "J02.9", "L02.9", "R50.9"]]
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
DISEASE_NAMES = list(DISEASES)
SIMULATED = [*DISEASE_NAMES, NEW_DISEASE]
N_SIM = len(SIMULATED)
# Probability that a disease already coded is coded again at a later visit.
RECODE = np.array([0.7, 0.7, 0.5, 0.6, 0.4, 0.4, 0.6, 0.7, 0.5, 0.6, 0.1])
HBA1C, SBP, CHOL, BMI, FEV1, EGFR = range(6)
R73, Z72, R05, R074, F419, G470, R53 = range(7)
E11, I10, E78, J44, F32, E66, N18, I50, I25, I48, U07 = range(11)

Emit = Callable[..., None]  # emit(rows, times, code or codes, values=None): record events


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _Rows:
    def take(self, rows: np.ndarray):
        """A copy holding the given rows (patients, or replicas of them)."""
        return type(self)(**{f.name: getattr(self, f.name)[rows].copy() for f in fields(self)})


@dataclass
class Traits(_Rows):
    """Fixed per patient and never recorded, except sex and birth: what drives labs, symptoms and visits."""

    female: np.ndarray  # [n] bool
    age0: np.ndarray  # [n] age at entry (years)
    z: np.ndarray  # [n, 4] latent health factors: metabolic, cardiovascular, lung, mood
    smoker: np.ndarray  # [n] bool
    drift: np.ndarray  # [n] metabolic worsening per year of follow-up
    entry: np.ndarray  # [n] start of follow-up (s)
    birth: np.ndarray  # [n] (s)
    mean_gap_days: np.ndarray  # [n] mean time between visits


def draw_traits(n: int, rng: np.random.Generator) -> Traits:
    female = rng.random(n) < 0.52
    age0 = rng.uniform(25, 85, n)
    z = rng.standard_normal((n, 4))
    smoker = rng.random(n) < sigmoid(-1.2 + 0.6 * z[:, 2])
    drift = np.maximum(z[:, 0] + 0.7 * rng.standard_normal(n), 0.0)
    entry = int(START_DATE.timestamp()) + rng.uniform(0, 4 * YEAR, n).astype(np.int64)
    birth = (entry - age0 * YEAR).astype(np.int64)
    mean_gap_days = 300 * np.exp(-0.15 * np.abs(z[:, 0]) - 0.004 * (age0 - 50))
    return Traits(female, age0, z, smoker, drift, entry, birth, mean_gap_days)


@dataclass
class PatientState(_Rows):
    """What is observable about each patient at the end of their latest visit, plus the latent symptom
    episode (a disturbance that persists from visit to visit)."""

    age: np.ndarray
    female: np.ndarray
    last: np.ndarray  # [n, 6] last lab values, NaN if never measured
    prev: np.ndarray  # [n, 6] the value before the last one, NaN if none
    symptom_time: np.ndarray  # [n, 7] seconds of the latest record of each symptom, -inf if never
    now: np.ndarray  # [n] time of the latest visit (s)
    coded: np.ndarray  # [n, 11] disease coded at or before the latest visit
    episode: np.ndarray  # [n, 7] latent symptom episode, not observable

    @classmethod
    def at_entry(cls, tr: Traits) -> PatientState:
        n = len(tr.female)
        return cls(age=tr.age0.copy(), female=tr.female, last=np.full((n, 6), np.nan),
                   prev=np.full((n, 6), np.nan), symptom_time=np.full((n, 7), -np.inf),
                   now=tr.entry.astype(np.float64), coded=np.zeros((n, N_SIM), bool), episode=np.zeros((n, 7)))


def onset_logits(s: PatientState) -> np.ndarray:
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


def next_visit_probabilities(s: PatientState) -> np.ndarray:
    """P(disease coded at the next visit | observable state): recoding if coded, onset otherwise. The new
    disease can be coded at a visit only if the visit before it was on or after its date."""
    p = np.where(s.coded, RECODE[None, :], sigmoid(onset_logits(s)))
    p[:, U07] *= s.now >= NEW_DISEASE_DATE.timestamp()
    return p


def split_code_probabilities(s: PatientState, p: np.ndarray) -> dict[str, np.ndarray]:
    """After the split date, an E11 record is E11.2 if kidney disease is already coded, else E11.9
    (decided by the state at the end of the visit before it, like everything else)."""
    after = s.now >= SPLIT_DATE.timestamp()
    kidney = s.coded[:, N18]
    return {"E11.2": p[:, E11] * after * kidney, "E11.9": p[:, E11] * after * ~kidney}


def death_probability(s: PatientState, who: np.ndarray) -> np.ndarray:
    """P(death before the next visit), drawn at the end of each visit."""
    return sigmoid(-7.0 + 0.07 * (s.age[who] - 60) + 1.0 * s.coded[who, I50])


def visit(s: PatientState, tr: Traits, who: np.ndarray, t: np.ndarray, p_coded: np.ndarray,
          rng: np.random.Generator, emit: Emit | None = None) -> np.ndarray:
    """One visit of patients `who` at times `t`: diseases coded with the probabilities p_coded [m, 11]
    fixed at the end of the visit before, labs measured, symptoms recorded. Updates s in place and returns
    what was coded [m, 11]. With `emit`, also records the events (and noise codes, which change no state)."""
    years = (t - tr.entry[who]) / YEAR
    age = (t - tr.birth[who]) / YEAR
    m = len(who)
    if emit:
        emit(who, t, "ENCOUNTER")
    dx_now = rng.random((m, N_SIM)) < p_coded
    if emit:
        split = s.now[who] >= SPLIT_DATE.timestamp()  # state at the end of the previous visit
        for j in range(N_SIM):
            hit = dx_now[:, j]
            code = np.full(m, LABEL_PREFIX + SIMULATED[j], dtype=object)
            if j == E11:
                code = np.where(split, np.where(s.coded[who, N18], "DX//E11.2", "DX//E11.9"), code)
            emit(who[hit], t[hit], code[hit])
    # Labs: latent factors, age and (for metabolic labs) worsening over the years of follow-up.
    zm, zc, zl = tr.z[who, 0], tr.z[who, 1], tr.z[who, 2]
    sm, dr = tr.smoker[who], tr.drift[who]
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
    if emit:
        for j, code in enumerate(LAB_CODES):
            hit = measured[:, j]
            emit(who[hit], t[hit], code, np.round(values[hit, j], 2))
    # Symptoms come in episodes: a persistent per-visit disturbance on top of the patient's risk.
    s.episode[who] = 0.5 * s.episode[who] + rng.standard_normal((m, 7))
    ep = s.episode[who]
    symptom_p = sigmoid(np.stack([
        -3.8 + 1.0 * zm + 0.3 * dr * years,
        np.where(sm, -0.6, -9.0),
        -3.6 + 0.8 * zl + 0.6 * sm,
        -4.0 + 0.8 * zc + 0.05 * years,
        -3.4 + 0.8 * tr.z[who, 3],
        -3.6 + 0.7 * tr.z[who, 3],
        -3.4 + 0.4 * tr.z[who, 3] + 0.2 * zm,
    ], axis=1) + 1.6 * ep * np.array([1, 0, 1, 1, 1, 1, 1]))
    sym = rng.random((m, 7)) < symptom_p
    if emit:
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
    return dx_now


def end_of_visit(s: PatientState, tr: Traits, who: np.ndarray, t: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Death ends follow-up; otherwise the next visit comes after an exponential gap of at least a day.
    Returns who dies [m], their death times, and everyone's next visit time [m] (s)."""
    dies = rng.random(len(who)) < death_probability(s, who)
    died_at = t[dies] + rng.integers(DAY, 200 * DAY, dies.sum())
    gap = np.maximum(rng.exponential(tr.mean_gap_days[who]) * DAY, DAY).astype(np.int64)
    return dies, died_at, t + gap
