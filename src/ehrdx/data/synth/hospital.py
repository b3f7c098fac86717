"""A hospital-shaped cohort (issue 15): inpatient stays and outpatient visits at the scale of a hospital's
records. Long histories (a lognormal number of charting times per patient, mean about 150, a tail to
3,000), about 5,000 codes (ICD10CM-style diagnoses, labs with values, medications, procedures, vitals)
and about 1,500 three-character diagnosis categories to use as labels (`--labels prefix:ICD10CM//:3`).

Each patient has latent health factors (the first one, frailty, also drives how often they are seen and
admitted). Each diagnosis category has a base rate (a few common, most rare), loadings on the factors, an
age effect, a recoding rate (chronic categories are coded again at many later encounters, acute ones
rarely), a precursor lab and a precursor symptom category. Whether a category starts during follow-up is
drawn once per patient and category; it is first coded at a random encounter. In the year before that,
the precursor lab drifts up to 1.5 of its spreads from the patient's own level (and back over the year
after: treated) and is ordered more often, and the precursor symptom is coded: what a model can learn before the first
code. Every lab's level also follows the latent factors, so labs carry risk in general.

An encounter is an outpatient visit (one charting time) or an inpatient stay (many charting times hours
apart, diagnoses coded at discharge). Each charting time is one visit of the event store (events that
share a timestamp). Everything is drawn with numpy over a whole chunk of patients: no loop over patients,
encounters or events. hospital_meds.py writes the chunks as MEDS shards one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from ehrdx.data.store import STATIC_TIME, concat_ranges

DAY, HOUR = 86400, 3600
YEAR = int(365.25 * DAY)
ORIGIN = int(datetime(2008, 1, 1).timestamp())  # earliest entry into follow-up
FACTORS = 8  # latent health factors; factor 0 is frailty
DX_PREFIX = "ICD10CM//"
RAMP = YEAR  # how long before its first code a category's precursors show
LAB_SHIFT = 1.5  # precursor lab drift at onset, in units of the lab's spread (lab_sd, log scale)
SPECIAL = ["ENC//OUTPATIENT", "ENC//ADMISSION", "ENC//DISCHARGE", "GENDER//F", "GENDER//M", "MEDS_BIRTH",
           "VITAL//HEART_RATE", "VITAL//SYSTOLIC_BP"]
OUT, ADMIT, DISCHARGE, FEMALE, MALE, BIRTH, HEART_RATE, SBP = range(len(SPECIAL))


@dataclass(frozen=True)
class HospitalShape:
    """What the cohort looks like; the defaults are the issue's hospital."""

    mean_visits: float = 150.0  # mean charting times (store visits) per patient, before clipping
    visits_sigma: float = 1.1  # log-scale spread of visits per patient beyond what frailty explains
    min_visits: int = 3
    max_visits: int = 3000
    categories: int = 1500  # diagnosis categories (the labels)
    labs: int = 400
    meds: int = 900
    procedures: int = 400
    stay_slots: float = 24.0  # mean charting times per inpatient stay
    prevalence: float = 0.3  # chance that the most common category starts during a patient's follow-up
    chunk_patients: int = 10_000  # patients generated and written at a time (bounds memory)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def zipf(n: int, exponent: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** exponent
    return p / p.sum()


@dataclass
class Catalog:
    """Every code (index = code id) and what each diagnosis category and lab does; fixed by the seed."""

    names: list[str]
    descriptions: list[str | None]
    parents: list[list[str] | None]
    first_sub: np.ndarray  # [D] code id of category d's first code
    n_sub: np.ndarray  # [D] codes in category d (1: the category itself is the code)
    logit: np.ndarray  # [D] log-odds of starting during follow-up for an average patient
    load: np.ndarray  # [D, FACTORS]
    age: np.ndarray  # [D] log-odds per 10 years of age
    recode: np.ndarray  # [D] chance of being coded again at each later encounter
    precursor_lab: np.ndarray  # [D] lab index
    precursor_symptom: np.ndarray  # [D] category index (an R-chapter category)
    med: np.ndarray  # [D] medication index, given at encounters where the category is coded
    lab_mean: np.ndarray  # [L]
    lab_sd: np.ndarray  # [L]
    lab_load: np.ndarray  # [L, FACTORS]
    first_lab: int
    first_med: int
    first_proc: int


def make_catalog(shape: HospitalShape, seed: int) -> Catalog:
    rng = np.random.default_rng([seed, 0])
    letters = "ABCDEFGHIJKLMNOPQRSTVWXYZ"  # ICD-10 has no U chapter for diseases
    pool = [f"{a}{i:02d}" for a in letters for i in range(100)]
    if shape.categories > len(pool):
        raise ValueError(f"at most {len(pool)} diagnosis categories")
    cats = sorted(rng.choice(pool, shape.categories, replace=False).tolist())
    D, L = len(cats), shape.labs
    n_sub = rng.choice([1, 2, 3, 4], D, p=[0.3, 0.3, 0.25, 0.15])
    names, desc, parents = list(SPECIAL), [None] * len(SPECIAL), [None] * len(SPECIAL)
    first_sub = np.zeros(D, np.int64)
    for d, c in enumerate(cats):  # catalog size only (1,500), not per event
        first_sub[d] = len(names)
        subs = [c] if n_sub[d] == 1 else [f"{c}.{k}" for k in range(n_sub[d])]
        names += [DX_PREFIX + s for s in subs]
        desc += [f"synthetic diagnosis category {c}"] * len(subs)  # shared: the label's own (not the real ICD's)
        parents += [None] if n_sub[d] == 1 else [[DX_PREFIX + c]] * n_sub[d]
    first_lab = len(names)
    names += [f"LAB//L{j:04d}" for j in range(L)]
    first_med = len(names)
    names += [f"RX//M{j:04d}" for j in range(shape.meds)]
    first_proc = len(names)
    names += [f"PROC//P{j:04d}" for j in range(shape.procedures)]
    desc += [None] * (len(names) - len(desc))
    parents += [None] * (len(names) - len(parents))

    p = np.minimum(shape.prevalence / (rng.permutation(D) + 1.0) ** 0.75, 0.9)
    load = np.zeros((D, FACTORS))
    load[np.arange(D), rng.integers(0, FACTORS, D)] = rng.uniform(0.5, 1.2, D)
    chronic = rng.random(D) < 0.5
    symptoms = np.flatnonzero(np.char.startswith(np.array(cats), "R"))
    lab_load = np.zeros((L, FACTORS))
    lab_load[np.arange(L), rng.integers(0, FACTORS, L)] = rng.uniform(0.3, 1.0, L) * rng.choice([-1, 1], L)
    return Catalog(
        names=names, descriptions=desc, parents=parents, first_sub=first_sub, n_sub=n_sub,
        logit=np.log(p / (1 - p)), load=load, age=rng.normal(0.3, 0.2, D),
        recode=np.where(chronic, rng.uniform(0.1, 0.3, D), rng.uniform(0.0, 0.05, D)),
        precursor_lab=rng.choice(min(30, L), D), precursor_symptom=rng.choice(symptoms, D), med=rng.choice(shape.meds, D),
        lab_mean=rng.uniform(1, 200, L).round(1), lab_sd=rng.uniform(0.05, 0.3, L), lab_load=lab_load,
        first_lab=first_lab, first_med=first_med, first_proc=first_proc)


@dataclass
class ChunkEvents:
    """One chunk's events, sorted by patient, time (static facts first) and code; and each patient's traits."""

    patient: np.ndarray  # [N] int64 row within the chunk
    time: np.ndarray  # [N] int64 seconds; STATIC_TIME for static facts
    code: np.ndarray  # [N] int32 code id (Catalog.names)
    value: np.ndarray  # [N] float32, NaN where none
    female: np.ndarray  # [n] bool
    visits: np.ndarray  # [n] charting times per patient
    encounters: np.ndarray  # [n] outpatient visits and inpatient stays per patient
    inpatient_visits: int  # charting times that belong to inpatient stays


class _Events:
    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, patient, time, code, value=None) -> None:
        patient = np.asarray(patient, np.int64)
        code = np.broadcast_to(np.asarray(code, np.int32), patient.shape)
        value = np.full(len(patient), np.nan, np.float32) if value is None else np.asarray(value, np.float32)
        self.parts.append((patient, np.asarray(time, np.int64), code, value))

    def sorted(self) -> tuple[np.ndarray, ...]:
        patient, time, code, value = (np.concatenate([p[i] for p in self.parts]) for i in range(4))
        order = np.lexsort((code, time, patient))
        return patient[order], time[order], code[order], value[order]


def grouped_cumsum(x: np.ndarray, first: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cumulative sum of x within consecutive groups (group[i]: the group of i, first[g]: its first index)."""
    cs = np.cumsum(x)
    return cs - (cs[first] - x[first])[group]


def generate_chunk(cat: Catalog, n: int, shape: HospitalShape, rng: np.random.Generator) -> ChunkEvents:
    ev = _Events()
    female = rng.random(n) < 0.52
    age = rng.uniform(18, 90, n)
    z = rng.standard_normal((n, FACTORS))
    frail = z[:, 0]
    entry = ORIGIN + rng.uniform(0, 5 * YEAR, n)
    span = rng.uniform(1, 10, n) * YEAR
    mu = np.log(shape.mean_visits) - (0.25 + shape.visits_sigma ** 2) / 2
    visits = np.clip(np.rint(np.exp(mu + 0.5 * frail + shape.visits_sigma * rng.standard_normal(n))),
                     shape.min_visits, shape.max_visits).astype(np.int64)

    # Encounters: split each patient's charting times into outpatient visits (1) and stays (several).
    M = int(visits.sum())
    slot_patient = np.repeat(np.arange(n), visits)
    inpatient = rng.random(M) < sigmoid(-2.2 + 0.8 * frail)[slot_patient]
    length = np.where(inpatient, 1 + rng.geometric(1 / (shape.stay_slots - 1), M), 1)
    before = np.cumsum(length) - length
    start = before - before[np.cumsum(visits) - visits][slot_patient]
    keep = start < visits[slot_patient]
    enc_patient, enc_inp = slot_patient[keep], inpatient[keep]
    enc_len = np.minimum(length[keep], (visits[slot_patient] - start)[keep])
    n_enc = np.bincount(enc_patient, minlength=n)
    enc_first = np.cumsum(n_enc) - n_enc
    E = len(enc_patient)

    # Times: charting times in a stay are 10 min + ~4 h apart; encounters ~span/n_enc apart, after discharge.
    slot_enc = np.repeat(np.arange(E), enc_len)
    enc_slot0 = np.cumsum(enc_len) - enc_len
    step = rng.exponential(4 * HOUR, M) + 600
    step[enc_slot0] = 0
    offset = grouped_cumsum(step, enc_slot0, slot_enc)
    last_slot = enc_slot0 + enc_len - 1
    duration = offset[last_slot]
    inc = np.zeros(E)
    inc[1:] = rng.exponential(span[enc_patient] / n_enc[enc_patient])[1:] + DAY + duration[:-1]
    inc[enc_first] = 0
    enc_start = entry[enc_patient] + grouped_cumsum(inc, enc_first, enc_patient)
    slot_time = np.floor(enc_start[slot_enc] + offset).astype(np.int64)
    slot_inp = enc_inp[slot_enc]
    code_time = slot_time[last_slot]  # diagnoses are coded at the visit, or at discharge

    # Encounter codes, vitals and labs at every charting time.
    out = ~enc_inp
    ev.add(enc_patient[out], code_time[out], OUT)
    ev.add(enc_patient[enc_inp], slot_time[enc_slot0[enc_inp]], ADMIT)
    ev.add(enc_patient[enc_inp], code_time[enc_inp], DISCHARGE)
    inp_slots = np.flatnonzero(slot_inp)
    vital = inp_slots[rng.random(len(inp_slots)) < 0.5]  # a charting time in a stay: vitals or labs
    p_vital = slot_patient[vital]
    ev.add(p_vital, slot_time[vital], HEART_RATE, 78 + 6 * z[p_vital, 1] + 8 * frail[p_vital]
           + rng.normal(0, 9, len(vital)))
    bp = rng.random(len(vital)) < 0.2
    ev.add(p_vital[bp], slot_time[vital[bp]], SBP, 128 + 10 * z[p_vital[bp], 1] + rng.normal(0, 12, bp.sum()))
    n_labs = np.where(slot_inp, 0, rng.poisson(0.8, M))
    lab_inp = np.setdiff1d(inp_slots, vital, assume_unique=True)
    n_labs[lab_inp] = 1
    lab_slot = np.repeat(np.arange(M), n_labs)
    lab_patient, lab_time = [slot_patient[lab_slot]], [slot_time[lab_slot]]
    lab_id = [rng.choice(cat.lab_mean.size, len(lab_slot), p=zipf(cat.lab_mean.size, 1.0))]

    # Diagnoses: which categories start, when they are first coded, and later recodes.
    logit = (cat.logit[None, :] + z @ cat.load.T + 0.3 * frail[:, None]
             + cat.age[None, :] * (age[:, None] - 55) / 10)
    pp, dd = np.nonzero(rng.random(logit.shape, dtype=np.float32) < sigmoid(logit))
    del logit
    onset_local = np.floor(rng.random(len(pp)) * n_enc[pp]).astype(np.int64)
    onset = enc_first[pp] + onset_local
    onset_time = code_time[onset]
    dx_code = cat.first_sub[dd] + rng.integers(0, cat.n_sub[dd])  # a patient keeps one code per category
    later = n_enc[pp] - 1 - onset_local
    k = rng.binomial(later, cat.recode[dd])
    pair = np.repeat(np.arange(len(pp)), k)
    step_in = np.floor(rng.random(len(pair)) * later[pair]).astype(np.int64)
    enc = np.unique(np.stack([pair, onset[pair] + 1 + step_in], 1), axis=0)  # (pair, encounter), once each
    coded_pair = np.concatenate([np.arange(len(pp)), enc[:, 0]])
    coded_enc = np.concatenate([onset, enc[:, 1]])
    ev.add(pp[coded_pair], code_time[coded_enc], dx_code[coded_pair])
    med = rng.random(len(coded_pair)) < 0.5
    ev.add(pp[coded_pair[med]], code_time[coded_enc[med]], cat.first_med + cat.med[dd[coded_pair[med]]])

    # Precursors at the encounters in the year before the first code: the symptom, and the lab ordered.
    enc_key = (enc_patient << 32) | (code_time - ORIGIN)
    lo = np.searchsorted(enc_key, (pp << 32) | np.maximum(onset_time - RAMP - ORIGIN, 0))
    w_pair = np.repeat(np.arange(len(pp)), np.maximum(onset - lo, 0))
    w_enc = concat_ranges(lo, onset)
    sym = rng.random(len(w_pair)) < 0.35
    ev.add(pp[w_pair[sym]], code_time[w_enc[sym]], cat.first_sub[cat.precursor_symptom[dd[w_pair[sym]]]])
    ordered = rng.random(len(w_pair)) < 0.6
    lab_patient.append(pp[w_pair[ordered]])
    lab_time.append(code_time[w_enc[ordered]])
    lab_id.append(cat.precursor_lab[dd[w_pair[ordered]]])

    # Lab values: the patient's level (latent factors), noise, and the drift towards a category's onset.
    lp, lt, lj = np.concatenate(lab_patient), np.concatenate(lab_time), np.concatenate(lab_id)
    L = cat.lab_mean.size
    key = pp * L + cat.precursor_lab[dd]
    order = np.argsort(key, kind="stable")
    skey, s_onset = key[order], onset_time[order]
    lab_key = lp * L + lj  # each onset whose precursor this lab is: a triangle peaking at the first code
    lo, hi = np.searchsorted(skey, lab_key, "left"), np.searchsorted(skey, lab_key, "right")
    which = np.repeat(np.arange(len(lp)), hi - lo)
    tri = np.clip(1 - np.abs(lt[which] - s_onset[concat_ranges(lo, hi)]) / RAMP, 0, 1)
    ramp = np.bincount(which, weights=tri, minlength=len(lp))
    level = (z[lp] * cat.lab_load[lj]).sum(1)
    value = cat.lab_mean[lj] * np.exp(cat.lab_sd[lj] * (0.6 * level + 0.6 * rng.standard_normal(len(lp))
                                                        + LAB_SHIFT * ramp))
    ev.add(lp, lt, cat.first_lab + lj, np.round(value, 2))

    # Procedures at discharge (and sometimes at a visit), other medications at visits; static facts.
    n_proc = np.where(enc_inp, rng.poisson(1.0, E), rng.random(E) < 0.1)
    proc_enc = np.repeat(np.arange(E), n_proc)
    ev.add(enc_patient[proc_enc], code_time[proc_enc],
           cat.first_proc + rng.choice(len(cat.names) - cat.first_proc, len(proc_enc),
                                       p=zipf(len(cat.names) - cat.first_proc, 1.0)))
    rx_enc = np.repeat(np.arange(E), np.where(enc_inp, 0, rng.poisson(0.3, E)))
    ev.add(enc_patient[rx_enc], code_time[rx_enc],
           cat.first_med + rng.choice(cat.first_proc - cat.first_med, len(rx_enc), p=zipf(cat.first_proc - cat.first_med, 1.0)))
    ev.add(np.arange(n), np.full(n, STATIC_TIME), np.where(female, FEMALE, MALE))
    ev.add(np.arange(n), np.floor(entry - age * YEAR), BIRTH)
    patient, time, code, value = ev.sorted()
    return ChunkEvents(patient, time, code, value, female, visits, n_enc, int(slot_inp.sum()))
