"""clinosim (a physiology-driven hospital simulator, US catchment population) via its CLI:

    clinosim simulate --country US --population N --seed S --start 2019-01-01 --end 2024-01-01 --format cif

Its CIF output (one JSON per episode, with the patient's record) is converted to MEDS:
  MEDS_BIRTH at date_of_birth, GENDER//<sex> (static), MEDS_DEATH at the end of date_of_death;
  ICD10CM//<code> at each chronic condition's onset_date (the simulator's own disease timeline, which
  reaches back before the simulated years), and the episode's admission diagnosis at its first
  admission and discharge diagnosis at its last discharge;
  ENCOUNTER//<type> at each admission; LAB//<name> and VITAL//<name> with numeric values;
  ORDER//<type>//<name>, MED//<drug>, CPT//<code>, CVX//<code> at their times.
A visit is a run of events at one timestamp (ehrdx's default). Label candidates: every ICD10CM code
outside chapters R (symptoms and signs) and V-Z (external causes, encounter reasons such as Z00 check-ups), labelled by its
3-character category (E11.9 -> E11). Patient ids (POP-000123, newborns' longer ids) become 0..n-1 in
sorted order. Prediction times lie within the simulated years (study_start, study_end): clinosim
derives dates of birth from ages at the run date, so some births fall after the simulated end (and
after the patient's encounters; ehrdx counts those as events_before_birth). clinosim's "population" is the catchment: about 90% of it has an encounter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl

from external.meds_io import write_set

START, END = "2019-01-01", "2024-01-01"
VITALS = ("temperature_celsius", "heart_rate", "systolic_bp", "diastolic_bp", "respiratory_rate", "spo2",
          "pain_score", "news2_score", "gcs_score")


def simulate(out: Path, population: int, seed: int) -> Path:
    cif = out / "cif" / "structural" / "patients"
    if not cif.is_dir():
        exe = Path(sys.executable).parent / "clinosim"
        subprocess.run([str(exe), "simulate", "--country", "US", "--population", str(population), "--seed",
                        str(seed), "--start", START, "--end", END, "--format", "cif", "-o", str(out)],
                       check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    return cif


def _number(v) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def episode_events(d: dict) -> list[tuple]:
    """(patient, time text or None, code, value) rows of one CIF episode file."""
    p = d["patient"]
    pid = p["patient_id"]
    rows = [(pid, p.get("date_of_birth"), "MEDS_BIRTH", None), (pid, None, f"GENDER//{p.get('sex')}", None)]
    if p.get("date_of_death"):
        # a date: at the end of that day, so the day's own care (vitals, labs) is not after the death
        day = p["date_of_death"]
        rows.append((pid, f"{day}T23:59:59" if len(day) == 10 else day, "MEDS_DEATH", None))
    rows += [(pid, c["onset_date"], f"ICD10CM//{c['code']}", None) for c in p.get("chronic_conditions") or []
             if c.get("onset_date") and c.get("code")]
    encs = d.get("encounters") or []
    for e in encs:
        rows.append((pid, e.get("admission_datetime"), f"ENCOUNTER//{e.get('encounter_type')}", None))
    cd = d.get("clinical_diagnosis") or {}
    if encs and cd.get("admission_diagnosis_code"):
        rows.append((pid, encs[0].get("admission_datetime"), f"ICD10CM//{cd['admission_diagnosis_code']}", None))
    if encs and cd.get("discharge_diagnosis_code"):
        when = encs[-1].get("discharge_datetime") or encs[-1].get("admission_datetime")
        rows.append((pid, when, f"ICD10CM//{cd['discharge_diagnosis_code']}", None))
    rows += [(pid, r.get("result_datetime"), f"LAB//{r.get('lab_name')}", _number(r.get("value")))
             for r in d.get("lab_results") or []]
    for v in d.get("vital_signs") or []:
        rows += [(pid, v.get("timestamp"), f"VITAL//{k}", _number(v.get(k))) for k in VITALS
                 if _number(v.get(k)) is not None]
    rows += [(pid, o.get("ordered_datetime"), f"ORDER//{o.get('order_type')}//{o.get('display_name')}", None)
             for o in d.get("orders") or []]
    rows += [(pid, m.get("actual_datetime") or m.get("scheduled_datetime"), f"MED//{m.get('drug_name')}", None)
             for m in d.get("medication_administrations") or [] if m.get("status") == "given"]
    rows += [(pid, x.get("start_datetime"), f"CPT//{x.get('procedure_code_us') or x.get('procedure_type')}", None)
             for x in d.get("procedures") or []]
    rows += [(pid, i.get("occurrence_date"), f"CVX//{i.get('vaccine_cvx')}", None)
             for i in d.get("immunizations") or [] if i.get("status") == "completed"]
    return rows


def build(root: Path, work: Path, *, patients: int, seed: int) -> dict:
    from importlib.metadata import version

    sim = work / f"clinosim_p{patients}_s{seed}"
    cif = simulate(sim, patients, seed)
    rows: list[tuple] = []
    files = sorted(cif.glob("*.json"))
    for f in files:
        rows += episode_events(json.loads(f.read_text()))
    raw = pl.DataFrame(rows, schema={"pid": pl.Utf8, "t": pl.Utf8, "code": pl.Utf8, "numeric_value": pl.Float64},
                       orient="row")
    pids = raw.select(pl.col("pid").unique().sort()).with_row_index("subject_id")
    time = pl.coalesce(pl.col("t").str.to_datetime(format=f, strict=False, time_unit="us")
                       for f in ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"))
    events = raw.join(pids, on="pid").select(pl.col("subject_id").cast(pl.Int64), time.alias("time"), "code",
                                             "numeric_value")
    unparsed = events.filter(pl.col("time").is_null() & ~pl.col("code").str.starts_with("GENDER//")).height
    events = events.filter(pl.col("time").is_not_null() | pl.col("code").str.starts_with("GENDER//"))
    icd = events.filter(pl.col("code").str.starts_with("ICD10CM//")).select(pl.col("code").unique())
    candidates = icd.filter(~pl.col("code").str.slice(9, 1).is_in(list("RVWXYZ"))).with_columns(
        pl.col("code").str.slice(9, 3).alias("label"), pl.lit(None, dtype=pl.Utf8).alias("description"))
    provenance = {"source": "clinosim", "package_version": version("clinosim"),
                  "command": f"clinosim simulate --country US --population {patients} --seed {seed} "
                             f"--start {START} --end {END} --format cif", "episode_files": len(files), "study_start": START, "study_end": END,
                  "rows_without_time_dropped": unparsed}
    codes = events.select(pl.col("code").unique()).with_columns(pl.lit(None, dtype=pl.Utf8).alias("description"))
    return write_set(root, events, codes=codes, candidates=candidates, name="clinosim", seed=seed,
                     provenance=provenance)
