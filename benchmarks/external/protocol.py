"""The one protocol run on every external set.

  prediction times  yearly: 1 January 00:00 of each of the last `years` calendar years whose whole next
                    year lies before the data set's last event, for every patient with an event at or
                    before it and one after it; a set whose generator simulates given years (its
                    study_start, study_end) keeps its times within them (ehrdx leaves out, and counts, times before a first
                    visit); or `visits`: the end of every visit (ehrdx's default).
  task              window:365d with censoring (ehrdx): labels recorded in (t, t + 365 d]; where follow-up
                    (the patient's last event, death included) ends earlier, a label that did not occur
                    is unknown, not negative. New onset = labels not recorded at or before t.
  visits            runs of events with gaps of at most --visit-gap (1 day by default: a hospital stay's
                    hourly vitals are one visit, not hundreds; see the findings on the transformer)
  split             the set's MEDS subject_splits: 80% / 20% of patients, 10% of the training patients as
                    tuning (early stopping, LightGBM's early stopping), seeded at conversion.
  labels            the set's label candidates (disease codes, grouped into labels by the converter); of
                    these, the `n_labels` labels with the most *training* patients having a positive
                    prediction time, among labels with at least `min_patients` such patients.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ehrdx.data.samples import Samples
from ehrdx.data.store import STATIC_TIME, EventStore
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.select import LabelSelector
from ehrdx.tasks.targets import Targets, targets_from_samples
from ehrdx.tasks.task import TaskSpec, build_samples, code_label_index, label_first_times
from external.meds_io import read_candidates

DAY = 86400


@dataclass
class Prepared:
    """A set made ready for every model: the store, patient rows per split, the chosen labels, the
    samples (prediction times, labels, masks) per split in `labels` order, and the same as Targets."""

    name: str
    store: EventStore
    task: TaskSpec
    rows: dict[str, np.ndarray]
    labels: list[str]
    descriptions: dict[str, str]
    selector: LabelSelector
    samples: dict[str, Samples]
    targets: Targets
    summary: dict = field(default_factory=dict)


def yearly_times(store: EventStore, rows: np.ndarray, years: int, study_start: str | None = None,
                 study_end: str | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(rows, times) on 1 January of the last `years` years whose next 365 days end by the last event
    (and not before `study_start`, where a generator back-dates history before the years it simulates)."""
    times = np.asarray(store.times)
    offsets = np.asarray(store.offsets)
    timed = times != STATIC_TIME
    end = int(times[timed].max())
    if study_end:
        end = min(end, int(datetime.fromisoformat(study_end).replace(tzinfo=UTC).timestamp()))
    last = datetime.fromtimestamp(end - 365 * DAY, UTC).year
    if datetime(last, 1, 1, tzinfo=UTC).timestamp() + 365 * DAY > end:
        last -= 1
    cal = [last - k for k in range(years)][::-1]
    if study_start:
        cal = [y for y in cal if datetime(y, 1, 1, tzinfo=UTC) >= datetime.fromisoformat(study_start).replace(tzinfo=UTC)]
    starts = np.array([int(datetime(y, 1, 1, tzinfo=UTC).timestamp()) for y in cal], dtype=np.int64)
    first = np.full(len(store), np.iinfo(np.int64).max)
    final = np.full(len(store), np.iinfo(np.int64).min)
    owner = np.repeat(np.arange(len(store)), np.diff(offsets))
    np.minimum.at(first, owner[timed], times[timed])
    np.maximum.at(final, owner[timed], times[timed])
    rows = np.asarray(rows, dtype=np.int64)
    r = np.repeat(rows, len(starts))
    t = np.tile(starts, len(rows))
    keep = (first[r] <= t) & (final[r] > t)
    return r[keep], t[keep], cal


def write_label_map(path: Path, codes_of: dict[str, list[str]], descriptions: dict[str, str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["code", "label", "description"])
        for label, codes in sorted(codes_of.items()):
            for code in sorted(codes):
                w.writerow([code, label, descriptions.get(label) or ""])
    return path


def prepare(name: str, meds: Path, work: Path, *, n_labels: int, min_patients: int, years: int,
            times_mode: str, visit_gap_seconds: int = 0) -> Prepared:
    store_dir = work / "store"
    shutil.rmtree(store_dir, ignore_errors=True)
    store = open_store(meds=meds, store_dir=store_dir, visit_gap_seconds=visit_gap_seconds)
    tr, va, te = patient_splits(store, meds, 0)
    rows = {"train": tr, "tuning": va, "held_out": te}
    cand = read_candidates(meds)
    codes_of: dict[str, list[str]] = {}
    desc: dict[str, str] = {}
    for code, label, d in cand.select("code", "label", "description").iter_rows():
        codes_of.setdefault(label, []).append(code)
        if d and label not in desc:
            desc[label] = d
    everything = LabelSelector.parse(f"map:{write_label_map(work / 'label_candidates.csv', codes_of, desc)}")
    task = TaskSpec.parse("window:365d")
    all_rows = np.sort(np.concatenate([tr, va, te]))
    calendar = None
    if times_mode == "yearly":
        provenance = json.loads((Path(meds) / "metadata" / "provenance.json").read_text())
        r, t, calendar = yearly_times(store, all_rows, years, provenance.get("study_start"),
                                      provenance.get("study_end"))
        given = (r, t)
    else:
        given = None
    vocab = LabelVocab.from_first_times(label_first_times(store, tr, everything), everything.info)
    s = build_samples(store, all_rows, task, code_label_index(store, everything, vocab), len(vocab), times=given)
    # Label choice on training patients only: patients with a positive prediction time per label.
    in_train = np.isin(s.row, tr)
    pos = (s.y > 0.5) & s.mask & in_train[:, None]
    patients = np.array([len(np.unique(s.row[pos[:, j]])) for j in range(len(vocab))])
    order = sorted((j for j in range(len(vocab)) if patients[j] >= min_patients),
                   key=lambda j: (-patients[j], vocab.labels[j]))[:n_labels]
    chosen = sorted(order, key=lambda j: vocab.labels[j])
    labels = [vocab.labels[j] for j in chosen]
    s = Samples(s.row, s.time, s.cutoff, s.n_visits, s.window_end, s.y[:, chosen], s.mask[:, chosen],
                s.history[:, chosen], s.counts)
    usable = s.mask.any(1)
    s.counts["samples_without_known_chosen_label_left_out"] = int((~usable).sum())
    s = s.subset(usable)
    selector = LabelSelector.parse(f"map:{write_label_map(work / 'labels.csv', {k: codes_of[k] for k in labels}, desc)}")
    samples = {k: s.subset(np.isin(s.row, v)) for k, v in rows.items()}
    summary = {
        "patients": len(store), "events": int(store.meta["events"]), "codes": int(store.meta["codes"]),
        "visits": int(store.meta["visits"]), "store_counts": dict(store.counts),
        "split_patients": {k: len(v) for k, v in rows.items()},
        "prediction_times": {k: len(v) for k, v in samples.items()},
        "prediction_time_rule": f"1 January of {calendar[0]}-{calendar[-1]}" if calendar else "every visit end",
        "sample_counts": dict(s.counts), "label_candidates": len(vocab), "labels": len(labels),
        "label_train_patients": {vocab.labels[j]: int(patients[j]) for j in chosen},
        "positives_test": int(((samples["held_out"].y > 0.5) & samples["held_out"].mask).sum()),
        "new_onset_positives_test": int(((samples["held_out"].y > 0.5) & samples["held_out"].mask
                                         & ~samples["held_out"].history).sum()),
    }
    return Prepared(name, store, task, rows, labels, {k: desc[k] for k in labels if k in desc}, selector, samples,
                    targets_from_samples(store, s, labels), summary)
