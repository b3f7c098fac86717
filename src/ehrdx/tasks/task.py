"""Prediction tasks over the event store: prediction times, label windows, masks.

A sample is one (patient, prediction time t). Its features are the patient's events at or before t
(static facts included); its labels are the label codes recorded in the window after t:
  next-visit   the patient's next visit (the first visit that starts after t)
  window:H     (t, t + H], e.g. window:365d, window:30d, window:12h
Masks (True = known):
  censoring    when follow-up (the patient's last event, death included) ends before the window does,
               labels that did not occur are unknown, not negatives (`censor=False` counts them as
               negatives). A next-visit sample without a next visit has no known label and is left out
               (counted).
  new onset    a label already recorded at or before t is unknown for that sample (`history` holds it;
               the new-onset mask is `mask & ~history`).
Everything is vectorised over events with numpy; no Python loop over patients or samples. Samples are
built a run of patients at a time (tasks/chunks.py), so the index lists held at once are one run's.
One job in one file (just over 400 lines): the task's definition, its samples and their masks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ehrdx.data.csv_errors import check_short_rows, csv_read_error, without_blank_lines
from ehrdx.data.samples import Samples
from ehrdx.data.sparse import SparseTable
from ehrdx.data.store import STATIC_TIME, EventStore, concat_ranges
from ehrdx.errors import DataError, reader_detail
from ehrdx.tasks import chunks
from ehrdx.tasks.chunks import PATIENTS_WITHOUT_SAMPLES, EntryBudget, concat_samples, patient_runs
from ehrdx.tasks.positives import introduction_counts, known_entries, label_entries
from ehrdx.tasks.scan import codes_of_labels, label_first_times, labels_missing_from  # noqa: F401 (read from here too)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_TIME_BITS = 36  # composite keys: (row << 36) | (time - origin); 2**36 s is about 2,000 years


def parse_duration(text: str, what: str = "--visit-gap") -> int:
    """Seconds in '0', '90s', '6h', '1d', '2w' or '1y' (365 days)."""
    text = str(text).strip()
    if text == "0":
        return 0
    m = re.fullmatch(r"(\d+)([smhdwy])", text)
    if not m:
        raise DataError(f"unreadable duration {text!r}", column=what,
                        fix="write a number with a unit s, m, h, d, w or y, e.g. 6h or 1d")
    return int(m.group(1)) * _UNITS[m.group(2)]


def duration_text(seconds: int) -> str:
    """Seconds written as parse_duration reads them, in the largest unit that divides them: 0, 90s, 6h, 2d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s" if seconds else "0"


def read_prediction_times(path: str | Path, store: EventStore, counts: dict[str, int] | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(store rows, times in seconds) from a CSV/Parquet file with subject_id and prediction_time columns,
    such as a MEDS label file (e.g. written by ACES). Other columns are ignored. `counts` gets what reading
    changed: times whose fraction of a second was cut off (meds.FRACTION_CUT)."""
    import polars as pl

    from ehrdx.data.meds import FRACTION_CUT, normalise_events

    path = Path(path)
    if not path.exists():
        raise DataError("prediction times file not found", file=str(path), fix="check the path")
    csv = path.suffix.lower() not in (".parquet", ".pq")
    try:  # a CSV is read as text: other columns (a label, a note) may hold anything
        frame = pl.read_csv(path, glob=False, infer_schema=False) if csv else pl.read_parquet(path, glob=False)
    except pl.exceptions.PolarsError as exc:
        named = csv_read_error(path, exc) if csv else None  # a row longer than the header: named, with the fix
        if named is not None and named.fix:
            raise named from exc
        raise DataError(f"could not be read ({reader_detail(exc)})", file=str(path),
                        fix="a prediction times file is CSV or Parquet with subject_id and prediction_time") from exc
    if csv:
        frame = without_blank_lines(frame, path)
        check_short_rows(frame, path)
    if "prediction_time" not in frame.columns:
        raise DataError("no 'prediction_time' column", file=str(path), column="prediction_time",
                        fix="a prediction times file has subject_id and prediction_time (the MEDS label schema)")
    if "subject_id" not in frame.columns:
        raise DataError("no 'subject_id' column", file=str(path), column="subject_id",
                        fix="a prediction times file has subject_id and prediction_time (the MEDS label schema), "
                            "whatever the events table's --subject-col is called: rename that column to subject_id")
    if frame.height == 0:  # predict would write an empty file, evaluate score nothing, as if all were well
        raise DataError("no prediction times (the file has no rows)", file=str(path),
                        fix="give one row per (subject_id, prediction_time)")
    if "subject_id" in frame.columns:  # the ids as the user wrote them (007 is not 7) -> the store's ids
        frame = frame.with_columns(pl.Series("subject_id", store.store_ids(frame.get_column("subject_id"),
                                                                           str(path))))
    # the file's row number rides along as the code, so that errors name rows as written even when the
    # reader sorted rows out of order
    shard = normalise_events(frame.select("subject_id", "prediction_time").with_columns(
        pl.int_range(pl.len()).cast(pl.Utf8).alias("code")), str(path), time_col="prediction_time", value_col=None)
    f = shard.frame.sort(pl.col("code").cast(pl.Int64))
    if f.get_column("time").is_null().any():
        rows = f.get_column("time").is_null().arg_true().head(5).to_list()
        raise DataError("empty prediction times", file=str(path), column="prediction_time", rows=rows,
                        fix="every row needs a time")
    # in whole seconds, as they are kept: 10:00:00.2 and 10:00:00.7 are one prediction time
    dup = f.select(pl.struct("subject_id", pl.col("time").dt.epoch("s")).is_duplicated()).to_series()
    if dup.any():  # each copy would be predicted and scored again, weighting that time several times
        rows = dup.arg_true().head(5).to_list()
        raise DataError(f"{int(dup.sum())} row(s) give a patient's prediction time more than once (after "
                        "converting UTC offsets and cutting fractions of a second)", file=str(path),
                        column="prediction_time", rows=rows,
                        fix="give each (subject_id, prediction_time) once, e.g. "
                            "polars' unique(['subject_id', 'prediction_time']); a targets long table has a "
                            "row per label: give its unique pairs")
    rows = rows_of_subjects(store, f.get_column("subject_id").to_numpy(), str(path))
    seconds = f.get_column("time").dt.epoch("s").to_numpy()
    if counts is not None and shard.counts.get(FRACTION_CUT):
        counts[FRACTION_CUT] = counts.get(FRACTION_CUT, 0) + shard.counts[FRACTION_CUT]
    after = after_death(store, rows, seconds)
    if after.any():  # no prediction is made for a patient after death: an export or join gone wrong
        raise DataError(f"{int(after.sum())} prediction time(s) after the patient's death (MEDS_DEATH)",
                        file=str(path), column="prediction_time", rows=np.flatnonzero(after)[:5].tolist(),
                        fix="give times at or before each patient's death")
    return rows, seconds


def after_death(store: EventStore, rows: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Whether each (store row, time in seconds) lies after that patient's first MEDS_DEATH event: no
    prediction is made there (predict --times and explain --time refuse it)."""
    if "MEDS_DEATH" not in store.code_names or not len(rows):
        return np.zeros(len(rows), bool)
    pos = np.flatnonzero(np.asarray(store.codes) == store.code_names.index("MEDS_DEATH"))
    death = np.full(len(store.subject_ids), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(death, np.searchsorted(np.asarray(store.offsets), pos, side="right") - 1,
                  np.asarray(store.times)[pos])
    return np.asarray(seconds, dtype=np.int64) > death[rows]


def rows_of_subjects(store: EventStore, subjects: np.ndarray, source: str) -> np.ndarray:
    """Store rows of the given store subject ids (int64; map ids as users write them with
    ``EventStore.store_ids``); an id the store lacks is an error naming the source rows."""
    ids = np.asarray(store.subject_ids)
    order = np.argsort(ids, kind="stable")
    subj = np.asarray(subjects, dtype=np.int64)
    at = np.searchsorted(ids[order], subj)
    found = (at < len(ids)) & (ids[order][np.minimum(at, max(len(ids) - 1, 0))] == subj) if len(ids) else \
        np.zeros(len(subj), bool)
    if not found.all():
        bad = np.flatnonzero(~found)[:5].tolist()
        raise DataError(f"{int((~found).sum())} row(s) for subjects not in the event data", file=source,
                        column="subject_id", rows=bad, values=[int(subj[r]) for r in bad],
                        fix="give only subjects that are in the MEDS dataset / events table")
    return order[at]


@dataclass
class TaskSpec:
    kind: str = "next-visit"  # next-visit | window
    horizon_seconds: int | None = None
    new_onset: bool = False
    censor: bool = True

    @classmethod
    def parse(cls, text: str, new_onset: bool = False, censor: bool = True) -> TaskSpec:
        if text == "next-visit":
            return cls("next-visit", None, new_onset, censor)
        m = re.fullmatch(r"window:(\d+)([smhdwy])", text.strip())
        if m and int(m.group(1)) == 0:  # (t, t]: no label could ever be positive
            raise DataError(f"task {text!r}: the window (t, t+N] is empty with N = 0", column="--task",
                            fix="a window of at least 1 unit, e.g. window:365d")
        if m:
            return cls("window", int(m.group(1)) * _UNITS[m.group(2)], new_onset, censor)
        raise DataError(f"unknown task {text!r}", column="--task",
                        fix="use next-visit or window:<N><unit> with unit s, m, h, d, w or y (e.g. window:365d)")

    @property
    def name(self) -> str:
        if self.kind == "next-visit":
            return "next-visit"
        return f"window:{duration_text(self.horizon_seconds or 0)}"

    def to_dict(self) -> dict:
        return {"task": self.name, "new_onset": self.new_onset, "censor": self.censor}

    @classmethod
    def from_dict(cls, d: dict) -> TaskSpec:
        return cls.parse(d["task"], d["new_onset"], d["censor"])


@dataclass
class LabelIndex:
    """Which vocabulary labels each store code is a record of, as CSR: code c's labels are
    labels[ptr[c]:ptr[c + 1]]."""

    ptr: np.ndarray  # [codes + 1] int64
    labels: np.ndarray  # [pairs] int64

    def expand(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(event position, label) pairs for events with these codes, in event order."""
        n = self.ptr[codes + 1] - self.ptr[codes]
        rep = np.repeat(np.arange(len(codes)), n)
        first = np.repeat(np.cumsum(n) - n, n)
        return rep, self.labels[self.ptr[codes[rep]] + np.arange(len(rep)) - first]


def code_label_index(store: EventStore, selector, vocab) -> LabelIndex:
    """For every store code, the vocabulary indices of the labels it records."""
    ptr = [0]
    flat: list[int] = []
    for code in store.code_names:
        flat += [vocab.index(lab) for lab in selector.labels_of(code) if lab in vocab]
        ptr.append(len(flat))
    return LabelIndex(np.asarray(ptr, dtype=np.int64), np.asarray(flat, dtype=np.int64))


def check_features_before(store: EventStore, rows: np.ndarray, times: np.ndarray, cutoff: np.ndarray) -> None:
    """Leakage guard, run on every set of samples: a sample's features are its own patient's events
    before `cutoff`, and the last of them (events are in time order) is at or before its prediction
    time. One vectorised pass; raises LeakageError otherwise."""
    from ehrdx.errors import LeakageError

    offsets = np.asarray(store.offsets)
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return
    if ((cutoff < offsets[rows]) | (cutoff > offsets[rows + 1])).any():
        raise LeakageError("a sample's feature range reaches into another patient's events")
    has = cutoff > offsets[rows]
    last_t = np.asarray(store.times)[cutoff[has] - 1]
    late = (last_t != STATIC_TIME) & (last_t > np.asarray(times, dtype=np.int64)[has])
    if late.any():
        raise LeakageError(f"{int(late.sum())} sample(s) would read events after their prediction time")


def _event_positions(store: EventStore, rows: np.ndarray) -> np.ndarray:
    offsets = np.asarray(store.offsets)
    starts, ends = offsets[rows], offsets[rows + 1]
    return concat_ranges(starts, ends)


def visit_end_times(store: EventStore, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The default prediction times: the end of every visit of the given patients (row, time)."""
    vo = np.asarray(store.visit_offsets)
    visits = concat_ranges(vo[rows], vo[rows + 1])
    sample_rows = np.repeat(rows, vo[rows + 1] - vo[rows])
    times = np.asarray(store.times)[np.asarray(store.visit_ends)[visits] - 1]
    return sample_rows, times


def mask_before_introduction(mask: np.ndarray, window_end: np.ndarray, introduced: np.ndarray,
                             introduced_from: Sequence[str | None] | None = None) -> dict[str, int]:
    """Mask (in place) the entries of labels whose window ends before the label's introduced_at; return
    the count, in all and per rule that gave the dates (``label_entries_before_introduction_masked`` and
    ``...:<rule>``; only non-zero counts)."""
    unknown = (np.asarray(window_end)[:, None] < np.asarray(introduced)[None, :]) & mask
    per_label = unknown.sum(0)
    mask &= ~unknown
    return introduction_counts(per_label, introduced_from)


def build_samples(
    store: EventStore,
    rows: np.ndarray,
    task: TaskSpec,
    label_index: LabelIndex,
    n_labels: int,
    *,
    times: tuple[np.ndarray, np.ndarray] | None = None,
    require_labels: bool = True,
    introduced: np.ndarray | None = None,
    introduced_from: Sequence[str | None] | None = None,
    chunk_entries: int | None = None,
) -> Samples:
    """Samples for the given patients at visit ends (default) or at given (row, time) pairs.

    With `require_labels`, samples that can have no known label (no next visit) are left out and counted.
    `introduced` (seconds per label) masks a label for samples whose window ends before it existed;
    `introduced_from` (per label, where that date came from) splits the count of masked entries by rule.
    Built a run of patients at a time (tasks/chunks.py), each run holding about `chunk_entries` events,
    samples and label entries (default chunks.CHUNK_ENTRIES): the result is the same whatever the runs.
    """
    rows = np.asarray(rows, dtype=np.int64)
    s_row, s_time = visit_end_times(store, rows) if times is None else (np.asarray(times[0], np.int64),
                                                                           np.asarray(times[1], np.int64))
    order = np.lexsort((s_time, s_row))
    s_row, s_time = s_row[order], s_time[order]

    ev_times = np.asarray(store.times)
    timed = ev_times != STATIC_TIME
    origin = int(ev_times[timed].min()) - 1 if timed.any() else 0
    span = int(ev_times[timed].max()) - origin + 1 if timed.any() else 1
    if s_time.size:
        span = max(span, int(s_time.max()) - origin + 1)
        if task.horizon_seconds:
            span += task.horizon_seconds
    if span >= 2**_TIME_BITS or len(store) >= 2 ** (63 - _TIME_BITS):
        raise DataError("event times span too long a period to index", file=str(store.directory),
                        column="time", fix="check for far-past or far-future times")
    del timed

    runs = patient_runs(s_row)  # samples of patient i: runs[i]:runs[i + 1]
    offsets = np.asarray(store.offsets)
    patients = s_row[runs[:-1]]
    budget = EntryBudget(offsets[patients + 1] - offsets[patients] + np.diff(runs),
                         chunk_entries or chunks.CHUNK_ENTRIES)
    parts = []
    for p0, p1 in budget:
        a, b = runs[p0], runs[p1]
        part, entries = _samples_of(store, s_row[a:b], s_time[a:b], task, label_index, n_labels, origin,
                                    require_labels, introduced, introduced_from)
        budget.built(entries)
        parts.append(part)
    if not parts:  # no sample: the empty tables, as a build of nothing gives them
        parts.append(_samples_of(store, s_row, s_time, task, label_index, n_labels, origin, require_labels,
                                 introduced, introduced_from)[0])
    out = concat_samples(parts)
    # The counts above are of samples; a patient all of whose samples went (one visit and no next one, no
    # visit at all) would vanish from the patient counts unsaid.
    given = np.unique(rows if times is None else s_row)
    lost = len(given) - len(np.unique(out.row))
    if lost:
        out.counts[PATIENTS_WITHOUT_SAMPLES] = int(lost)
    return out


def _key(r: np.ndarray, t: np.ndarray, origin: int) -> np.ndarray:
    """Composite sort keys (row << 36) | (time - origin)."""
    t = np.clip(np.asarray(t, np.int64) - origin, 0, 2**_TIME_BITS - 1)
    return (np.asarray(r, np.int64) << _TIME_BITS) | t


def _samples_of(store: EventStore, s_row: np.ndarray, s_time: np.ndarray, task: TaskSpec, label_index: LabelIndex,
                n_labels: int, origin: int, require_labels: bool, introduced: np.ndarray | None,
                introduced_from: Sequence[str | None] | None) -> tuple[Samples, int]:
    """build_samples of the samples (s_row, s_time), sorted by (row, time), of a run of whole patients;
    and how many label entries (positives and history) it found."""
    counts: dict[str, int] = {}
    offsets = np.asarray(store.offsets)
    ev_times = np.asarray(store.times)

    # Event rows and keys (only over the patients involved).
    pos = _event_positions(store, np.unique(s_row)) if len(s_row) else np.zeros(0, np.int64)
    ev_row = np.searchsorted(offsets, pos, side="right") - 1
    ev_t = ev_times[pos]
    ev_key = _key(ev_row, np.where(ev_t != STATIC_TIME, ev_t, origin), origin)  # static facts: before all
    del ev_row, ev_t  # sorted: events are in (row, time) order in the store
    s_key = _key(s_row, s_time, origin)
    cutoff = pos[np.searchsorted(ev_key, s_key, side="right") - 1] + 1 if len(pos) else np.zeros(0, np.int64)
    # A sample whose patient has no event at all at or before t gets cutoff at the patient's start.
    first_key = _key(s_row, np.full(len(s_row), origin), origin)
    no_events = np.searchsorted(ev_key, s_key, side="right") <= np.searchsorted(ev_key, first_key, side="left")
    cutoff = np.where(no_events, offsets[s_row], cutoff)

    vo = np.asarray(store.visit_offsets)
    v_starts = np.asarray(store.visit_starts)
    v_ends = np.asarray(store.visit_ends)
    # Visits started at or before the cutoff: visit starts are sorted, so search the global array.
    n_visits = np.searchsorted(v_starts, cutoff, side="left") - vo[s_row]
    n_visits = np.clip(n_visits, 0, vo[s_row + 1] - vo[s_row])

    keep = n_visits > 0
    if (~keep).any():  # two causes, said apart: a patient with no visit at all, or a time before the first
        no_visit = (vo[s_row + 1] == vo[s_row])[~keep]
        if (~no_visit).any():
            counts["prediction_times_before_first_visit"] = int((~no_visit).sum())
        if no_visit.any():
            counts["prediction_times_of_patients_without_visits"] = int(no_visit.sum())
    s_row, s_time, cutoff, n_visits, s_key = s_row[keep], s_time[keep], cutoff[keep], n_visits[keep], s_key[keep]
    check_features_before(store, s_row, s_time, cutoff)

    # Window end per sample.
    if task.kind == "next-visit":
        # The next visit is the first that starts after t (a visit in progress at t counts among the
        # n_visits); the window runs from t to its end, so the rest of a visit in progress is in it too.
        nxt = vo[s_row] + n_visits
        has_next = nxt < vo[s_row + 1]
        safe = np.minimum(nxt, max(len(v_ends) - 1, 0))
        w_end = np.where(has_next, ev_times[np.maximum(v_ends[safe] - 1, 0)] if len(v_ends) else 0, s_time)
        known = has_next
        censored = ~has_next
    else:
        w_end = s_time + int(task.horizon_seconds)
        last_t = ev_times[offsets[s_row + 1] - 1]
        censored = last_t < w_end
        known = np.ones(len(s_row), bool)

    n, L = len(s_row), n_labels
    at, lab_id = label_index.expand(np.asarray(store.codes)[pos].astype(np.int64))
    (p_sample, p_label), (h_sample, h_label) = label_entries(s_key, _key(s_row, w_end, origin), ev_key[at],
                                                             lab_id, _TIME_BITS)
    del at, lab_id, ev_key, pos
    entries = len(p_sample) + len(h_sample)
    real = known[p_sample]  # a sample without a label window has no positives
    y = SparseTable.from_entries(n, L, p_sample[real], p_label[real])  # straight from the index lists
    history = SparseTable.from_entries(n, L, h_sample, h_label)
    del h_sample, h_label  # the index lists: as large as the table's int64 keys
    # Known: every label of a sample with a whole window; a censored window still knows what it recorded.
    mask, masked = known_entries(y, known & ~censored if task.censor else known, w_end,
                                 introduced if n else None, introduced_from)
    counts.update(masked)
    if task.kind == "window" and censored.any():
        counts["censored_samples"] = int(censored.sum())
    if task.kind == "next-visit" and (~known).any():
        counts["samples_without_next_visit"] = int((~known).sum())
    out = Samples(s_row, s_time, cutoff, n_visits.astype(np.int32), np.asarray(w_end, np.int64), y, mask, history,
                  counts)
    if require_labels:
        usable = out.mask_bits.rows_any()
        dropped = int((~usable).sum())
        if dropped:
            counts["samples_without_known_labels_left_out"] = dropped
            out = out.subset(usable)
    return out, entries
