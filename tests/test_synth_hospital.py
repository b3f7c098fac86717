"""The hospital-shaped cohort (ehrdx synth --shape hospital): its shape, its labels, its determinism, and
the signal before a diagnosis that makes its quality numbers mean something."""

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from ehrdx.cli import app
from ehrdx.data.synth import HospitalShape, write_hospital
from ehrdx.data.synth.hospital import DX_PREFIX, RAMP, make_catalog
from ehrdx.events_pipeline import open_store
from ehrdx.tasks.select import LabelSelector

N = 400


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("hospital")
    paths, info = write_hospital(N, out, seed=3, shape=HospitalShape(chunk_patients=150))  # three chunks
    events = pl.read_parquet(paths["meds"] / "data" / "*" / "*.parquet")
    return paths, info, events


def test_histories_are_long_with_a_heavy_tail(cohort):
    paths, info, events = cohort
    timed = events.drop_nulls("time").filter(pl.col("code") != "MEDS_BIRTH")  # birth is not a visit
    per_patient = timed.group_by("subject_id").agg(pl.col("time").n_unique())["time"]
    assert per_patient.len() == N
    assert per_patient.sum() == info["n_visits"]  # every charting time has an event
    assert 100 <= per_patient.mean() <= 200  # drawn with mean 150
    assert per_patient.min() >= 3 and per_patient.max() <= 3000
    assert per_patient.quantile(0.99) > 5 * per_patient.median()  # a few patients have most of the visits
    assert info["n_events"] == events.height
    # every charting time is one visit of the store (events that share a timestamp)
    store = open_store(meds=paths["meds"], store_dir=paths["meds"].parent / "store")
    assert store.meta["visits"] == info["n_visits"] and store.meta["events"] == info["n_events"]


def test_codes_labs_with_values_and_1500_label_categories(cohort):
    _, info, events = cohort
    cat = make_catalog(HospitalShape(), seed=3)
    assert 4800 <= len(cat.names) <= 5200
    assert len({c[len(DX_PREFIX):len(DX_PREFIX) + 3] for c in cat.names if c.startswith(DX_PREFIX)}) == 1500
    kind = events.with_columns(pl.col("code").str.split("//").list.first().alias("kind"))
    with_value = kind.group_by("kind").agg(pl.col("numeric_value").is_not_null().mean()).sort("kind")
    share = dict(zip(with_value["kind"], with_value["numeric_value"], strict=True))
    # shares of booleans: exactly 1 or 0 when every or no event of a kind has a value
    assert share["LAB"] == 1.0 and share["VITAL"] == 1.0 and share["ICD10CM"] == 0.0 and share["ENC"] == 0.0
    selector = LabelSelector.parse(info["labels"])
    labels = {lab for code in events["code"].unique() for lab in selector.labels_of(code)}
    assert len(labels) == info["label_categories_used"] > 1000
    assert all(len(lab) == 3 for lab in labels)
    assert set(info["splits"]) == {"train", "tuning", "held_out"} and sum(info["splits"].values()) == N


def test_same_seed_same_cohort_other_seed_other_cohort(cohort, tmp_path):
    _, _, events = cohort
    small = HospitalShape(chunk_patients=150)
    again = pl.read_parquet(write_hospital(N, tmp_path / "a", seed=3, shape=small)[0]["meds"] / "data" / "*" / "*.parquet")
    assert again.sort("subject_id", "time", "code").equals(events.sort("subject_id", "time", "code"))
    other = pl.read_parquet(write_hospital(N, tmp_path / "b", seed=4, shape=small)[0]["meds"] / "data" / "*" / "*.parquet")
    assert not other.equals(events)


def precursor_signal(events: pl.DataFrame, seed: int, shift: int) -> tuple[float, float]:
    """For each category first coded after a patient's first year: the mean standardised value of its
    precursor lab (that of category d + shift: shift 0 is the true one, another is a control) in the year
    before the first code minus the same patient's mean more than two years before; and the share of those first codes
    preceded within a year by the precursor symptom."""
    cat = make_catalog(HospitalShape(), seed)
    D = len(cat.n_sub)
    names = np.asarray(cat.names)
    category = [names[cat.first_sub[d]][len(DX_PREFIX):len(DX_PREFIX) + 3] for d in range(D)]
    d_other = (np.arange(D) + shift) % D
    lab = pl.DataFrame({"cat": category, "lab": names[cat.first_lab + cat.precursor_lab[d_other]],
                        "symptom": [category[s] for s in cat.precursor_symptom[d_other]]})
    timed = events.drop_nulls("time").with_columns(pl.col("time").dt.epoch("s"))
    dx = timed.filter(pl.col("code").str.starts_with(DX_PREFIX)).with_columns(
        pl.col("code").str.slice(len(DX_PREFIX), 3).alias("cat"))
    start = timed.group_by("subject_id").agg(pl.col("time").min().alias("entry"))
    first = (dx.group_by("subject_id", "cat").agg(pl.col("time").min().alias("t0")).join(start, on="subject_id")
             .filter(pl.col("t0") > pl.col("entry") + RAMP).join(lab, on="cat"))
    lab_mean = dict(zip(names[cat.first_lab:cat.first_lab + len(cat.lab_mean)], cat.lab_mean, strict=True))
    lab_sd = dict(zip(names[cat.first_lab:cat.first_lab + len(cat.lab_mean)], cat.lab_sd, strict=True))
    values = timed.filter(pl.col("code").str.starts_with("LAB//")).with_columns(
        ((pl.col("numeric_value") / pl.col("code").replace_strict(lab_mean)).log()
         / pl.col("code").replace_strict(lab_sd)).alias("z"))
    near = first.join(values, left_on=["subject_id", "lab"], right_on=["subject_id", "code"]).with_columns(
        (pl.col("t0") - pl.col("time")).alias("before"))
    period = pl.when(pl.col("before") > 2 * RAMP).then(pl.lit("early")).when(
        (pl.col("before") > 0) & (pl.col("before") <= RAMP)).then(pl.lit("recent")).otherwise(None)
    both = (near.with_columns(period.alias("period")).drop_nulls("period")
            .group_by("subject_id", "cat", "period").agg(pl.col("z").mean())
            .pivot(on="period", index=["subject_id", "cat"], values="z").drop_nulls())  # the same patient's lab
    sym = first.join(dx.select("subject_id", pl.col("cat").alias("symptom"), pl.col("time").alias("ts")),
                     on=["subject_id", "symptom"], how="left").with_columns(
        ((pl.col("ts") < pl.col("t0")) & (pl.col("ts") >= pl.col("t0") - RAMP)).fill_null(False).alias("hit"))
    preceded = sym.group_by("subject_id", "cat").agg(pl.col("hit").any())["hit"].mean()
    return (both["recent"] - both["early"]).mean(), preceded


def test_labs_and_symptoms_before_a_first_diagnosis_carry_signal(cohort):
    _, _, events = cohort
    lab_shift, symptom_share = precursor_signal(events, seed=3, shift=0)
    control_shift, control_share = precursor_signal(events, seed=3, shift=7)
    assert lab_shift > 0.35 and lab_shift > 3 * abs(control_shift)  # a triangle up to 1.5 lab_sd at the code
    assert symptom_share > 0.3 and symptom_share > 2 * control_share


def test_cli_writes_the_hospital_shape_and_refuses_the_builtin_options(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["synth", "--shape", "hospital", "--patients", "60", "--seed", "1", "--out",
                            str(tmp_path / "h")])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "h" / "cohort.json").read_text())
    assert info["n_patients"] == 60 and info["labels"] == "prefix:ICD10CM//:3"
    assert (tmp_path / "h" / "meds" / "metadata" / "subject_splits.parquet").exists()
    r = runner.invoke(app, ["synth", "--shape", "hospital", "--format", "meds", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--format" in r.output
    r = runner.invoke(app, ["synth", "--shape", "clinic", "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "--shape" in r.output
