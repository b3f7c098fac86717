"""The built-in cohort: seeded, derived from its event stream, with a calibrated oracle."""

import numpy as np
import polars as pl

from ehrdx.data.synth import DISEASES, INDEX_DATE, generate_cohort, snapshot_table


def test_same_seed_same_cohort(small_cohort):
    again = generate_cohort(3000, seed=1)
    assert again.events.equals(small_cohort.events)
    assert again.table.equals(small_cohort.table)
    assert not generate_cohort(3000, seed=2).table.equals(small_cohort.table)


def test_events_are_meds_shaped(small_cohort):
    ev = small_cohort.events
    assert ev.schema["subject_id"] == pl.Int64 and ev.schema["time"] == pl.Datetime("us")
    assert ev.columns == ["subject_id", "time", "code", "numeric_value"]
    assert ev.filter(pl.col("code") == "MEDS_BIRTH").height == 3000
    # static facts have a null time; measurements carry values, other codes do not
    assert ev.filter(pl.col("time").is_null()).get_column("code").str.starts_with("GENDER//").all()
    labs = ev.filter(pl.col("code").str.starts_with("LAB//"))
    assert labs.get_column("numeric_value").is_not_null().all()


def test_table_is_the_snapshot_of_events_before_the_index_date(small_cohort):
    ev = small_cohort.events.with_columns(pl.col("time").dt.epoch("s").alias("time_s"))
    snap = snapshot_table(ev)
    assert snap.equals(small_cohort.table.drop("diseases"))
    # labels come only from the year after the index date; features only from before it
    after = ev.filter(pl.col("time") >= INDEX_DATE)
    assert after.get_column("code").str.starts_with("DX//").all()
    assert set(after.get_column("code").str.strip_prefix("DX//").unique()) <= set(DISEASES)


def test_oracle_is_calibrated_and_has_comorbidity():
    c = generate_cohort(30000, seed=5)
    y = np.column_stack([c.table.get_column("diseases").list.contains(d).to_numpy() for d in DISEASES])
    p = c.oracle.select([f"p_{d}" for d in DISEASES]).to_numpy()
    # mean oracle probability matches prevalence for every disease (within sampling noise)
    se = np.sqrt(p.mean(0) * (1 - p.mean(0)) / len(p))
    assert (np.abs(y.mean(0) - p.mean(0)) < 4 * se + 1e-3).all()
    # within deciles of the oracle, observed rates track it (calibration)
    flat_p, flat_y = p.ravel(), y.ravel()
    edges = np.quantile(flat_p, np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, flat_p, side="right") - 1, 0, 9)
    for b in range(10):
        assert abs(flat_y[bins == b].mean() - flat_p[bins == b].mean()) < 0.02
    # comorbidity: kidney disease is more common with diabetes than without
    e11, n18 = list(DISEASES).index("E11"), list(DISEASES).index("N18")
    assert y[y[:, e11], n18].mean() > 1.5 * y[~y[:, e11], n18].mean()
