"""The built-in cohort: one generator; the patient table is a snapshot of its event stream at an index
date, with an oracle given the generator's state there, calibrated against the labels."""

import hashlib
from datetime import timedelta

import numpy as np
import polars as pl

from ehrdx.data.synth import (
    DISEASES,
    INDEX_DATE,
    LABEL_WINDOW_DAYS,
    LABS,
    generate_cohort,
    generate_longitudinal,
    snapshot_table,
)


def test_same_seed_same_cohort(small_cohort):
    again = generate_cohort(3000, seed=1)
    assert again.events.equals(small_cohort.events)
    assert again.table.equals(small_cohort.table)
    assert again.oracle.equals(small_cohort.oracle)
    assert not generate_cohort(3000, seed=2, oracle_replicates=2).table.equals(small_cohort.table)


def test_events_are_meds_shaped(small_cohort):
    ev = small_cohort.events
    assert ev.schema["subject_id"] == pl.Int64 and ev.schema["time"] == pl.Datetime("us")
    assert ev.columns == ["subject_id", "time", "code", "numeric_value"]
    assert ev.filter(pl.col("code") == "MEDS_BIRTH").height == 3000
    # static facts have a null time; measurements carry values, other codes do not
    assert ev.filter(pl.col("time").is_null()).get_column("code").str.starts_with("GENDER//").all()
    labs = ev.filter(pl.col("code").str.starts_with("LAB//"))
    assert labs.get_column("numeric_value").is_not_null().all()


def test_the_event_stream_is_unchanged():
    """The longitudinal cohort (MEDS output, golden fixtures) is pinned: these hashes were taken from the
    generator before the table cohort became a snapshot of it."""
    c = generate_longitudinal(300, seed=4)
    digest = [hashlib.sha256(f.write_csv().encode()).hexdigest()[:16] for f in (c.events, c.oracle, c.label_map)]
    assert digest == ["f7156ea599fdc41b", "90a0bcad7d56d663", "c6a5e628f5da245f"]


def test_table_is_the_snapshot_of_the_event_stream_at_the_index_date(small_cohort):
    ev = small_cohort.events
    assert ev.equals(generate_longitudinal(3000, seed=1).events)  # one generator
    assert snapshot_table(ev).equals(small_cohort.table.drop("diseases"))
    table = small_cohort.table
    # patients who died before the index date are left out, and counted
    died = set(ev.filter((pl.col("code") == "MEDS_DEATH") & (pl.col("time") < INDEX_DATE))
               .get_column("subject_id"))
    assert died and not died & set(table.get_column("patient_id"))
    assert table.height == 3000 - len(died) == small_cohort.oracle.height
    assert small_cohort.info["excluded"] == {"died_before_index_date": len(died), "no_visit_before_index_date": 0}
    # features come from before the index date; labels from the diseases coded in the year after it
    end = INDEX_DATE + timedelta(days=LABEL_WINDOW_DAYS)
    for pid in table.get_column("patient_id").head(40):
        row = table.filter(pl.col("patient_id") == pid).row(0, named=True)
        mine = ev.filter(pl.col("subject_id") == pid)
        before = mine.filter(pl.col("time") < INDEX_DATE)
        hba1c = before.filter(pl.col("code") == "LAB//HBA1C").get_column("numeric_value")
        assert row[LABS["LAB//HBA1C"][0]] == (hba1c[-1] if len(hba1c) else None)
        codes = before.filter(pl.col("code").str.starts_with("DX//")).get_column("code").str.slice(4)
        assert set(row["diagnosis_codes"]) == set(codes)
        window = mine.filter((pl.col("time") > INDEX_DATE) & (pl.col("time") <= end)).get_column("code")
        coded = {c[4:7] for c in window if c.startswith("DX//") and c[4:7] in DISEASES}
        assert row["diseases"] == sorted(coded)


def test_oracle_is_calibrated_and_has_comorbidity():
    c = generate_cohort(10000, seed=5)
    y = np.column_stack([c.table.get_column("diseases").list.contains(d).to_numpy() for d in DISEASES])
    p = c.oracle.select([f"p_{d}" for d in DISEASES]).to_numpy()
    assert c.oracle.get_column("patient_id").equals(c.table.get_column("patient_id"))
    assert ((p >= 0) & (p <= 1)).all() and c.info["oracle_mean_standard_error"] < 0.015
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
    # calibrated whether the last visit was recent or long ago (the state at the index date includes that
    # no visit happened since, and that the patient is alive)
    last = (c.events.filter((pl.col("code") == "ENCOUNTER") & (pl.col("time") < INDEX_DATE))
            .group_by("subject_id").agg(pl.col("time").max().alias("last")).rename({"subject_id": "patient_id"}))
    days = c.table.join(last, on="patient_id", how="left").select(
        (pl.lit(INDEX_DATE) - pl.col("last")).dt.total_days()).to_series().to_numpy()
    for m in (days < 100, days >= 300):
        n_y, n_p = y[m].sum(1), p[m].sum(1)
        assert m.sum() > 1000 and abs(n_y.mean() - n_p.mean()) < 4 * n_y.std() / np.sqrt(m.sum())


def test_longitudinal_oracle_matches_the_labels_read_back_from_the_events(tmp_path):
    """The saved next-visit oracle is calibrated against the labels ehrdx derives from the MEDS events,
    for every label, including the finer codes after the split and the disease that appears later."""
    from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
    from ehrdx.estimator import EventClassifier
    from ehrdx.events_pipeline import open_store
    from ehrdx.sources.events import EventSource

    c = generate_longitudinal(4000, seed=7)
    paths = write_longitudinal(c, tmp_path)
    store = open_store(meds=paths["meds"], store_dir=tmp_path / "store")
    clf = EventClassifier(labels=f"map:{paths['label_map']}")
    clf.resolve_settings("events")  # what fit() sets first, for the hand-fitted parts below
    from ehrdx.tasks.labels import LabelVocab
    from ehrdx.tasks.task import label_first_times

    clf.label_vocab_ = LabelVocab.from_first_times(label_first_times(store, np.arange(len(store)), clf.selector_),
                                                   clf.selector_.info)
    assert set(clf.label_vocab_.labels) == {*DISEASES, "E11.2", "E11.9", "U07.1"}
    assert clf.label_vocab_.info["E11.2"]["parent"] == "E11"
    assert clf.label_vocab_.info["U07.1"]["introduced_at"] == "2020-03-01T00:00:00"
    s = clf.samples(store)
    p = EventSource(store).oracle(c.oracle, s, clf.labels_)
    for j, lab in enumerate(clf.labels_):
        m = s.mask[:, j]
        y, q = s.y[m, j], p[m, j]
        assert abs(y.mean() - q.mean()) < 4 * np.sqrt(q.mean() / m.sum()) + 1e-3, lab
        hi = q > np.quantile(q, 0.9)
        assert abs(y[hi].mean() - q[hi].mean()) < 4 * np.sqrt(q[hi].mean() / hi.sum()) + 1e-3, lab
    # before its date the new disease is masked, not a negative
    j = clf.labels_.index("U07.1")
    assert not s.mask[s.window_end < 1583020800, j].any()
