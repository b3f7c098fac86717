"""History features for gradient boosting: counts, recent counts, recency and value trends per code, fit on
training patients and computed at each prediction time from the events at or before it only.

Columns (`HistoryFeaturizer.feature_names_`), in this order:
  patient block   age_years, n_visits, n_events, days_since_last_visit, days_since_previous_visit,
                  days_since_first_visit, visits_30d ... (visits started in each window): one entry per
                  sample, NaN where unknown (no birth, one visit)
  per code        count:C (whole history), count_30d:C ... (one per window: events in (t - w, t]),
                  recency:C = 1 / (1 + days since C was last seen)
  per numeric code  last:C, delta:C (last minus the value before), slope_per_year:C (least squares over the
                  whole history, per year), n_values:C

Sparse: a per-code entry exists only where the code is in the sample's history. A code never seen is the
implicit 0 of a sparse matrix, and every feature is built so that 0 means "never" and sits at the right
end of its scale: a count of 0, and recency 0 = seen infinitely long ago (recency is 1 for a code seen at
the prediction time and falls towards 0 with time, so a tree needs no extra split to tell "never" from
"long ago"). A value feature (last, delta, slope) of 0 is ambiguous between "never measured" and a
measured 0; n_values:C (0 = never) tells them apart. Missing patient facts are explicit NaN entries,
which LightGBM reads as missing.

Sex: the event store has no sex column; sources record it as a code (the built-in cohort and MEDS data:
a static GENDER//F or GENDER//M row), so count:GENDER//F (0 or 1) already carries it, like any code.
Static facts (null time) count in count:C but in no window and have no recency; numeric features use
timed values only for the slope.

Codes the encoder does not know (rarer than its min count in training, or new) fall into one
`<unknown>` code, as in the other models. Nothing at or after a sample's cutoff (the first event after its
prediction time) reaches its features: each feature reads the last event of a code before the cutoff and
what precedes it; later events only bound which samples an event is the last one for.

Vectorised: events are grouped by (patient, code) once, and each event is paired with the samples for
which it is the last of its code, so the work is O(events + non-zero features), not O(samples x history).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ehrdx.data.batches import packed_targets
from ehrdx.data.bits import BitTable, PackedTargets
from ehrdx.data.samples import Samples
from ehrdx.data.sequences import YEAR, EventEncoder, birth_times
from ehrdx.data.store import STATIC_TIME, EventStore, concat_ranges
from ehrdx.errors import DataError, ModelError

DAY = 86400
DEFAULT_WINDOWS = (30 * DAY, 365 * DAY)
CHUNK_SAMPLES = 50_000  # samples featurised at once (memory grows with samples x history codes)
UNKNOWN_CODE = "<unknown>"
PATIENT_FEATURES = ("age_years", "n_visits", "n_events", "days_since_last_visit", "days_since_previous_visit",
                    "days_since_first_visit")  # then visits_<window> per window
NUMERIC_FEATURES = ("last", "delta", "slope_per_year", "n_values")


def window_name(seconds: int) -> str:
    for unit, size in (("d", DAY), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class HistoryFeaturizer:
    """Which codes and numeric codes get columns (learned from training patients), and `transform`."""

    def __init__(self, windows: tuple[int, ...] = DEFAULT_WINDOWS, max_codes: int | None = None) -> None:
        self.windows = tuple(int(w) for w in windows)  # recent-count windows, seconds before the prediction time
        self.max_codes = max_codes  # keep only the most frequent codes in training (None: every encoder code)

    def fit(self, store: EventStore, train_rows: np.ndarray, encoder: EventEncoder) -> HistoryFeaturizer:
        """Columns for the encoder's codes (fit on training patients, rarer than its min count excluded),
        the `max_codes` most frequent of them in `train_rows` if set, and numeric columns for those of
        them that carry values in training."""
        if any(w <= 0 for w in self.windows):
            raise DataError(f"history windows must be positive, got {self.windows}", column="windows")
        ids = np.arange(1, encoder.n_codes)
        if self.max_codes is not None and len(ids) > self.max_codes:
            offsets = np.asarray(store.offsets)
            rows = np.asarray(train_rows, dtype=np.int64)
            model_ids = encoder.code_map(store)[np.asarray(store.codes)[concat_ranges(offsets[rows], offsets[rows + 1])]]
            freq = np.bincount(model_ids, minlength=encoder.n_codes)[ids]
            ids = np.sort(ids[np.argsort(-freq, kind="stable")[: self.max_codes]])
        numeric = np.intersect1d(encoder.numeric_codes(), ids)
        self.codes_ = [encoder.codes[i - 1] for i in ids]
        self.numeric_codes_ = [encoder.codes[i - 1] for i in numeric]
        return self

    # -- columns ---------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "codes_"):
            raise ModelError("this HistoryFeaturizer is not fitted yet: call fit() or from_dict()")

    @property
    def n_code_columns(self) -> int:
        return len(self.codes_) + 1  # + the unknown code

    @property
    def n_patient_features(self) -> int:
        return len(PATIENT_FEATURES) + len(self.windows)

    @property
    def feature_names_(self) -> list[str]:
        self._check_fitted()
        codes = [UNKNOWN_CODE, *self.codes_]
        names = [*PATIENT_FEATURES, *(f"visits_{window_name(w)}" for w in self.windows)]
        names += [f"count:{c}" for c in codes]
        for w in self.windows:
            names += [f"count_{window_name(w)}:{c}" for c in codes]
        names += [f"recency:{c}" for c in codes]
        for f in NUMERIC_FEATURES:
            names += [f"{f}:{c}" for c in self.numeric_codes_]
        return names

    @property
    def n_features(self) -> int:
        self._check_fitted()
        return (self.n_patient_features + (len(self.windows) + 2) * self.n_code_columns
                + len(NUMERIC_FEATURES) * len(self.numeric_codes_))

    def _maps(self, store: EventStore) -> tuple[np.ndarray, np.ndarray]:
        """Code column (0 = unknown) and numeric column (-1 = none) of every store code."""
        col = {c: i + 1 for i, c in enumerate(self.codes_)}
        num = {c: i for i, c in enumerate(self.numeric_codes_)}
        return (np.array([col.get(c, 0) for c in store.code_names], dtype=np.int64),
                np.array([num.get(c, -1) for c in store.code_names], dtype=np.int64))

    # -- transform -------------------------------------------------------------------------------
    def transform(self, store: EventStore, samples: Samples, counts: dict[str, int] | None = None,
                  chunk: int = CHUNK_SAMPLES) -> sp.csr_matrix:
        """[S, n_features] float32 CSR of every sample's history features (feature_names_ order). With
        `counts`, adds how many history events had a code the featuriser does not know ("codes:unseen").
        Works through `chunk` samples at a time (of a patient-sorted order) to bound memory."""
        self._check_fitted()
        maps = self._maps(store)
        order = np.lexsort((samples.cutoff, samples.row))  # by patient, then time
        arrays = [np.asarray(a, dtype=np.int64)[order] for a in (samples.row, samples.time, samples.cutoff,
                                                                   samples.n_visits)]
        parts = [self._transform_sorted(store, *(a[i : i + chunk] for a in arrays), maps, counts)
                 for i in range(0, max(len(order), 1), chunk)]
        out = sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        out = out[inverse]  # back to the caller's sample order
        out.sort_indices()
        return out

    def _transform_sorted(self, store: EventStore, s_row: np.ndarray, s_time: np.ndarray, s_cut: np.ndarray,
                          s_nv: np.ndarray, maps: tuple[np.ndarray, np.ndarray],
                          counts: dict[str, int] | None) -> sp.csr_matrix:
        """Features of samples sorted by (patient, cutoff), in that order."""
        S, K, M = len(s_row), self.n_code_columns, len(self.numeric_codes_)
        P, W = self.n_patient_features, len(self.windows)
        code_col, num_col = maps
        urow, s_u = np.unique(s_row, return_inverse=True)  # `u` numbers the patients involved
        offsets = np.asarray(store.offsets)
        last_cut = s_cut[np.flatnonzero(np.append(s_u[1:] != s_u[:-1], True))] if S else np.zeros(0, np.int64)
        pos = concat_ranges(offsets[urow], last_cut)  # every event some sample may read, no later one
        ev_u = np.repeat(np.arange(len(urow)), np.maximum(last_cut - offsets[urow], 0))
        times = np.asarray(store.times)[pos]
        codes = np.asarray(store.codes)[pos]
        values = np.asarray(store.values)[pos].astype(np.float64)
        big = len(store.times) + 2  # exceeds every event index: patient-major sort keys
        s_key = s_u * big + s_cut
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [
            self._patient_block(store, s_row, s_time, s_cut, s_nv)]

        col = code_col[codes]
        g = last_of_group(ev_u, pos, col, K, s_key, big)
        ps, pe = g.pair_sample, g.pair_event
        ev = g.order[pe]  # the event behind each pair
        n_hist = g.rank[pe] + 1
        if counts is not None:  # an event in the histories of several samples counts once for each
            unseen = int(n_hist[col[ev] == 0].sum())
            if unseen:
                counts["codes:unseen"] = counts.get("codes:unseen", 0) + unseen
        base_col = P + col[ev]
        parts.append((ps, base_col, n_hist.astype(np.float64)))
        # Windows: events of the group with time <= t - w are not in the window (static facts never are).
        timed = times != STATIC_TIME
        t0 = int(times[timed].min()) if timed.any() else 0
        span = (int(times[timed].max()) - t0 + 2) if timed.any() else 2
        if g.n_groups * span >= 2**62:
            raise DataError("too many (patient, code) groups over too long a period for history features",
                            file=str(store.directory), column="time", fix="featurise fewer samples at a time")
        tkey = np.where(timed, times - t0 + 1, 0)[g.order]  # ascending within each group
        gkey = g.group * span + tkey
        for k, w in enumerate(self.windows):
            q = np.clip(s_time[ps] - w - t0 + 1, 0, span - 1)
            n_le = np.searchsorted(gkey, g.group[pe] * span + q, side="right") - g.start[g.group[pe]]
            in_window = n_hist - np.minimum(n_le, n_hist)
            keep = in_window > 0
            parts.append((ps[keep], base_col[keep] + (k + 1) * K, in_window[keep].astype(np.float64)))
        ev_timed = timed[ev]
        days = (s_time[ps][ev_timed] - times[ev][ev_timed]) / DAY
        parts.append((ps[ev_timed], base_col[ev_timed] + (W + 1) * K, 1.0 / (1.0 + np.maximum(days, 0.0))))

        if M:
            parts += self._numeric_block(ev_u, pos, num_col[codes], times, values, s_key, big,
                                         P + (W + 2) * K, M)
        r = np.concatenate([p[0] for p in parts])
        c = np.concatenate([p[1] for p in parts])
        d = np.concatenate([p[2] for p in parts]).astype(np.float32)
        return sp.csr_matrix((d, (r, c)), shape=(S, self.n_features), dtype=np.float32)

    def _patient_block(self, store: EventStore, row: np.ndarray, time: np.ndarray, cutoff: np.ndarray,
                       nv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Age, visits, events and visit gaps of each sample; NaN where unknown."""
        t = time.astype(np.float64)
        vo = np.asarray(store.visit_offsets)
        v_start_t = np.asarray(store.times)[np.asarray(store.visit_starts)] if len(store.visit_starts) else np.zeros(0)

        def visit_time(k: np.ndarray, ok: np.ndarray) -> np.ndarray:
            return np.where(ok, v_start_t[np.clip(vo[row] + k, 0, max(len(v_start_t) - 1, 0))] if len(v_start_t)
                            else np.nan, np.nan)

        has = nv >= 1
        block = np.stack([
            (t - birth_times(store, row)) / YEAR,
            nv,
            cutoff - np.asarray(store.offsets)[row],
            (t - visit_time(nv - 1, has)) / DAY,
            (t - visit_time(nv - 2, nv >= 2)) / DAY,
            (t - visit_time(np.zeros_like(nv), has)) / DAY,
        ], axis=1)
        block = np.concatenate([block, self._recent_visits(vo, v_start_t, row, t, nv)], axis=1)
        S, P = block.shape
        return np.repeat(np.arange(S), P), np.tile(np.arange(P), S), block.ravel()

    def _recent_visits(self, vo: np.ndarray, v_start_t: np.ndarray, row: np.ndarray, t: np.ndarray,
                       nv: np.ndarray) -> np.ndarray:
        """[S, W] visits of each sample's first `nv` that started in each window (t - w, t]."""
        urow, u = np.unique(row, return_inverse=True)
        n_of = vo[urow + 1] - vo[urow]
        vt = v_start_t[concat_ranges(vo[urow], vo[urow + 1])].astype(np.int64)
        out = np.zeros((len(row), len(self.windows)))
        if len(vt) == 0:
            return out
        t0, span = int(vt.min()), int(vt.max() - vt.min()) + 2
        key = np.repeat(np.arange(len(urow)), n_of) * span + (vt - t0 + 1)  # sorted: patients, then time
        first = np.concatenate([[0], np.cumsum(n_of)[:-1]])[u]
        for k, w in enumerate(self.windows):
            q = np.clip(t.astype(np.int64) - w - t0 + 1, 0, span - 1)
            before = np.searchsorted(key, u * span + q, side="right") - first
            out[:, k] = nv - np.minimum(before, nv)
        return out

    def _numeric_block(self, ev_u, pos, num, times, values, s_key, big, first_col, M):
        """last, delta, slope per year and number of values of each numeric code in each sample's history."""
        valued = (num >= 0) & ~np.isnan(values)
        idx = np.flatnonzero(valued)
        g = last_of_group(ev_u[idx], pos[idx], num[idx], M, s_key, big)
        o = idx[g.order]  # valued events in group order
        v, t = values[o], times[o]
        timed = t != STATIC_TIME
        first = g.start[g.group]  # first valued event of the group (never after any event it is compared to)
        n_static = np.add.reduceat((~timed).astype(np.int64), g.start) if len(g.start) else np.zeros(0, np.int64)
        ref = first + n_static[g.group]  # first timed value of the group (used only by timed events after it)
        x = np.where(timed, (t - t[np.minimum(ref, len(t) - 1)]) / YEAR, 0.0)
        y = v - v[first]
        w = timed.astype(np.float64)
        sums = segmented_cumsum(np.stack([w, w * x, w * y, w * x * x, w * x * y], axis=1), g.rank)
        ps, pe = g.pair_sample, g.pair_event
        n, sx, sy, sxx, sxy = (sums[pe, k] for k in range(5))
        denom = n * sxx - sx * sx
        ok = (n >= 2) & (denom > 1e-12 * np.maximum(n * sxx, 1e-300))
        slope = (n[ok] * sxy[ok] - sx[ok] * sy[ok]) / denom[ok]
        col = first_col + num[o[pe]]
        has_prev = g.rank[pe] >= 1
        delta = v[pe][has_prev] - v[pe - 1][has_prev]
        return [(ps, col, v[pe]), (ps[has_prev], col[has_prev] + M, delta), (ps[ok], col[ok] + 2 * M, slope),
                (ps, col + 3 * M, (g.rank[pe] + 1).astype(np.float64))]

    # -- artifacts -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        self._check_fitted()
        return {"kind": "history", "windows": list(self.windows), "max_codes": self.max_codes,
                "codes": list(self.codes_), "numeric_codes": list(self.numeric_codes_)}

    @classmethod
    def from_dict(cls, d: dict) -> HistoryFeaturizer:
        out = cls(tuple(d["windows"]), d.get("max_codes"))
        out.codes_ = list(d["codes"])
        out.numeric_codes_ = list(d["numeric_codes"])
        return out


@dataclass
class LastOfGroup:
    """Events grouped by (patient, column), in event order within a group, and every (sample, event) pair in
    which the event is the last of its group before the sample's cutoff."""

    order: np.ndarray  # events in group order (indices into the caller's event arrays)
    group: np.ndarray  # group of each ordered event
    rank: np.ndarray  # its 0-based place in its group
    start: np.ndarray  # where each group starts in `order`
    pair_sample: np.ndarray  # sample of each pair (index into the sorted samples)
    pair_event: np.ndarray  # event of each pair (index into `order`)

    @property
    def n_groups(self) -> int:
        return len(self.start)


def last_of_group(ev_u: np.ndarray, pos: np.ndarray, col: np.ndarray, n_cols: int, s_key: np.ndarray,
                  big: int) -> LastOfGroup:
    """`ev_u`, `pos`, `col`: patient, absolute event index and column of each event, in store order;
    `s_key` = patient * big + cutoff of each sample, sorted. Event e (next of its group at q, or none) is
    the last of its group for the samples of its patient with e < cutoff <= q."""
    g = ev_u * n_cols + col
    order = np.argsort(g, kind="stable")
    gs, ps, us = g[order], pos[order], ev_u[order]
    n = len(order)
    new = np.ones(n, dtype=bool)
    new[1:] = gs[1:] != gs[:-1]
    group = np.cumsum(new) - 1
    start = np.flatnonzero(new)
    rank = np.arange(n) - start[group]
    nxt = np.full(n, big - 1, dtype=np.int64)  # no next event: last for every later cutoff
    nxt[:-1] = np.where(new[1:], big - 1, ps[1:])
    lo = np.searchsorted(s_key, us * big + ps, side="right")
    hi = np.searchsorted(s_key, us * big + nxt, side="right")
    pair_sample = concat_ranges(lo, hi)
    pair_event = np.repeat(np.arange(n), np.maximum(hi - lo, 0))
    return LastOfGroup(order, group, rank, start, pair_sample, pair_event)


def segmented_cumsum(x: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sums of the rows of `x` [n, k] within runs (rank = place in the run, 0 first),
    by doubling: log2(longest run) vectorised passes. Each sum adds only its own run's rows, so it is as
    precise as the run allows, unlike a global cumsum minus the run's start."""
    out = x.astype(np.float64, copy=True)
    d = 1
    longest = int(rank.max()) + 1 if len(rank) else 0
    while d < longest:
        step = out.copy()
        step[d:] += np.where((rank[d:] >= d)[:, None], out[:-d], 0.0)
        out = step
        d *= 2
    return out


@dataclass
class HistorySet(PackedTargets):
    """Samples with what a model needs to compute their history features itself (gradient boosting fits a
    HistoryFeaturizer on its training set's patients): the store, the samples, the input code encoder."""

    store: EventStore
    samples: Samples
    encoder: EventEncoder
    y_bits: BitTable  # [N, L] multi-hot targets, packed (read a label at a time: `y_bits[:, j]`)
    mask_bits: BitTable  # [N, L] True where the label is known (and counts for training), packed

    def __post_init__(self) -> None:  # dense tables given: packed, as the other sample sets do
        self.y_bits, self.mask_bits = packed_targets(self.y_bits, self.mask_bits)

    def __len__(self) -> int:
        return len(self.samples)
