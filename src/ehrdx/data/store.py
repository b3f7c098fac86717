"""The compact event store: flat arrays plus per-patient offsets, memory-mapped when read.

Layout of a store directory (all arrays little-endian raw binary, described in meta.json):
  subject_ids  int64 [P]       patients in store order
  offsets      int64 [P + 1]   patient p's events are [offsets[p], offsets[p + 1])
  times        int64 [E]       seconds since 1970-01-01; static facts (null time) hold STATIC_TIME
  codes        int32 [E]       index into codes.json (a data-level index, not a model vocabulary)
  values       float32 [E]     numeric value, NaN where there is none
  visit_starts int64 [V]       event index where each visit starts (see visit_gap_seconds)
  visit_ends   int64 [V]       event index one past each visit's last event
  visit_offsets int64 [P + 1]  patient p's visits are [visit_offsets[p], visit_offsets[p + 1])

Built shard by shard, so memory is bounded by the largest shard, not the dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from contextlib import ExitStack, nullcontext
from itertools import pairwise
from pathlib import Path

import numpy as np
import polars as pl

from ehrdx.data.meds import EventShard
from ehrdx.data.subject_ids import SubjectIdMap, canonical_ints, write_map
from ehrdx.errors import DataError, command_line, ident, on_command_line

STATIC_TIME = np.iinfo(np.int64).min
ARRAYS = {
    "subject_ids": np.int64, "offsets": np.int64, "times": np.int64, "codes": np.int32,
    "values": np.float32, "visit_starts": np.int64, "visit_ends": np.int64, "visit_offsets": np.int64,
}
STORE_VERSION = 2
# Events that belong to no visit: facts about the patient, not encounters.
NON_VISIT_CODES = ("MEDS_BIRTH", "MEDS_DEATH")


def concat_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The concatenation of arange(s, e) over the pairs (s, e), vectorised: the positions of slices of the
    flat arrays, e.g. all events of some patients from `offsets[rows]` and `offsets[rows + 1]`. An empty
    or reversed pair contributes nothing."""
    lengths = np.maximum(ends - starts, 0)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=first[1:])
    return np.repeat(starts - first, lengths) + np.arange(total, dtype=np.int64)


def add_names(names: dict[str, list[str]], more: dict[str, list[str]], counts: dict[str, int]) -> None:
    """Add a shard's or part's names to `names` (each once, in first-seen order); a count with names
    counts them, not shards x names (three shards with one extra column: one ignored column)."""
    for k, v in more.items():
        names[k] = list(dict.fromkeys([*names.get(k, []), *v]))
        counts[k] = len(names[k])


def build_store(shards: Iterable[EventShard], out_dir: str | Path, visit_gap_seconds: int = 0,
                until_seconds: int | None = None) -> EventStore:
    """Convert normalised event shards into a store. Subjects must not span shards.

    A visit is a run of a patient's timed events in which each follows the previous one by at most
    `visit_gap_seconds` (0: events sharing a timestamp form a visit). Static facts (null time),
    MEDS_BIRTH and MEDS_DEATH belong to no visit; at equal times they sort after visit events.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    counts: dict[str, int] = {}
    names: dict[str, list[str]] = {}
    sources: list[str] = []
    n_events = n_visits = 0
    first_visit_left_out = None  # the first visit event after --until: what a later --until would keep
    seen_subjects: dict[int, str] = {}
    subject_maps: list[pl.DataFrame] = []
    with ExitStack() as stack:
        files = {name: stack.enter_context(open(out / f"{name}.bin.tmp", "wb")) for name in ARRAYS}
        files["offsets"].write(np.zeros(1, np.int64).tobytes())
        files["visit_offsets"].write(np.zeros(1, np.int64).tobytes())
        for shard in shards:
            sources.append(shard.source)
            if shard.subject_map is not None:
                subject_maps.append(shard.subject_map)
                if len(subject_maps) > 1:
                    raise DataError("text subject ids in more than one shard", file=shard.source,
                                    column="subject_id", fix="give one events table (text ids are mapped per file)")
            for k, v in shard.counts.items():
                counts[k] = counts.get(k, 0) + v
            add_names(names, shard.names, counts)
            f = shard.frame
            if until_seconds is not None:
                late = f.get_column("time").dt.epoch("s") > until_seconds
                n_late = int(late.fill_null(False).sum())
                if n_late:
                    counts["events_after_until_left_out"] = counts.get("events_after_until_left_out", 0) + n_late
                    first = f.filter(late.fill_null(False) & ~pl.col("code").is_in(list(NON_VISIT_CODES))) \
                        .get_column("time").dt.epoch("s").min()
                    if first is not None and (first_visit_left_out is None or first < first_visit_left_out):
                        first_visit_left_out = int(first)
                    f = f.filter(~late.fill_null(False))
            if f.height == 0:
                continue
            # Stable sort: static rows first, then by time, birth/death after visit events at the same
            # time (so they never split a visit); the reader already counted disorder.
            f = f.sort("subject_id", "time", pl.col("code").is_in(list(NON_VISIT_CODES)), nulls_last=False,
                       maintain_order=True)
            new = [c for c in f.get_column("code").unique(maintain_order=True).to_list() if c not in vocab]
            for c in sorted(new):
                vocab[c] = len(vocab)
            code_ids = f.get_column("code").replace_strict(vocab, return_dtype=pl.Int32).to_numpy()
            times = f.get_column("time").dt.epoch("s").fill_null(STATIC_TIME).to_numpy().astype(np.int64)
            values = f.get_column("numeric_value").cast(pl.Float32).fill_null(np.nan).to_numpy()
            subj = f.get_column("subject_id").to_numpy()

            change = np.flatnonzero(np.diff(subj)) + 1
            starts = np.concatenate([[0], change])
            ids = subj[starts]
            for sid in ids.tolist():
                if sid in seen_subjects:
                    raise DataError(f"subject {ident(sid)} appears in two shards ({seen_subjects[sid]} and {shard.source})",
                                    file=shard.source, column="subject_id",
                                    fix="each subject's events must sit in one shard, as MEDS requires")
                seen_subjects[sid] = shard.source
            ends = np.concatenate([change, [len(subj)]])
            # A visit begins at a patient's first timed event and wherever time jumps by more than the gap.
            same_subject = np.concatenate([[False], subj[1:] == subj[:-1]])
            # Static facts, birth and death carry no visit.
            non_visit_ids = [vocab[c] for c in NON_VISIT_CODES if c in vocab]
            is_static = (times == STATIC_TIME) | np.isin(code_ids, non_visit_ids)
            prev_static = np.concatenate([[True], is_static[:-1]])
            gap = np.concatenate([[0], np.diff(times)])
            continues = same_subject & ~prev_static & ~is_static & (gap <= visit_gap_seconds)
            visit_start = ~is_static & ~continues
            vstarts = np.flatnonzero(visit_start)
            vends = np.flatnonzero(~is_static & ~np.concatenate([continues[1:], [False]])) + 1
            visits_per_subject = np.add.reduceat(visit_start.astype(np.int64), starts) if len(starts) else []

            files["subject_ids"].write(ids.astype(np.int64).tobytes())
            files["offsets"].write((n_events + ends).astype(np.int64).tobytes())
            files["times"].write(times.tobytes())
            files["codes"].write(code_ids.astype(np.int32).tobytes())
            files["values"].write(values.astype(np.float32).tobytes())
            files["visit_starts"].write((n_events + vstarts).astype(np.int64).tobytes())
            files["visit_ends"].write((n_events + vends).astype(np.int64).tobytes())
            files["visit_offsets"].write((n_visits + np.cumsum(visits_per_subject)).astype(np.int64).tobytes())
            n_events += len(subj)
            n_visits += len(vstarts)
    for name in ARRAYS:
        os.replace(out / f"{name}.bin.tmp", out / f"{name}.bin")
    (out / "codes.json").write_text(json.dumps(list(vocab)))
    meta = {
        "store_version": STORE_VERSION, "visit_gap_seconds": visit_gap_seconds, "until_seconds": until_seconds, "patients": len(seen_subjects), "events": n_events, "visits": n_visits,
        "codes": len(vocab), "dtypes": {k: np.dtype(v).str for k, v in ARRAYS.items()},
        "counts": counts, "sources": sources, **({"names": names} if names else {}),
        **({"first_visit_after_until": first_visit_left_out} if first_visit_left_out is not None else {}),
    }
    if subject_maps:  # absent in stores of integer ids (and in every store before text ids were kept)
        meta["subject_id_map"] = write_map(out, subject_maps[0])
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return EventStore(out)


def shard_groups(paths: list[Path], n: int) -> list[list[Path]]:
    """`paths` cut into at most `n` consecutive groups of about equal size in bytes (order kept, so the
    parts merge into the same store as one build over all shards)."""
    n = max(1, min(n, len(paths)))
    sizes = np.array([p.stat().st_size for p in paths], dtype=np.float64)
    bounds = np.searchsorted(np.cumsum(sizes), sizes.sum() * np.arange(1, n) / n, side="left") + 1
    cuts = [0, *sorted(set(np.clip(bounds, 1, len(paths) - 1).tolist())), len(paths)]
    return [paths[a:b] for a, b in pairwise(cuts) if b > a]


def _build_part(meds_root: str, paths: list[str], out_dir: str, visit_gap_seconds: int,
                until_seconds: int | None, for_command_line: bool) -> None:
    from ehrdx.data.meds import iter_meds

    # a spawned process starts outside the command: its errors are to name the command's options all the same
    with command_line() if for_command_line else nullcontext():
        build_store(iter_meds(meds_root, paths), out_dir, visit_gap_seconds, until_seconds)


def build_store_parallel(meds_root: str | Path, out_dir: str | Path, workers: int, visit_gap_seconds: int = 0,
                         until_seconds: int | None = None) -> EventStore:
    """Convert a sharded MEDS dataset with `workers` processes, each converting its own consecutive
    shards into a part store, then merge the parts: the result is the store a single build gives."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from ehrdx.data.meds import meds_shard_paths

    out = Path(out_dir)
    groups = shard_groups(meds_shard_paths(meds_root), workers)
    parts = [out / "parts" / str(k) for k in range(len(groups))]
    with ProcessPoolExecutor(len(groups), mp_context=get_context("spawn")) as pool:
        jobs = [pool.submit(_build_part, str(meds_root), [str(p) for p in g], str(d), visit_gap_seconds,
                            until_seconds, on_command_line()) for g, d in zip(groups, parts)]
        for job in jobs:
            job.result()
    store = merge_stores(parts, out)
    import shutil

    shutil.rmtree(out / "parts", ignore_errors=True)
    return store


def merge_stores(parts: list[str | Path], out_dir: str | Path, chunk: int = 1 << 24) -> EventStore:
    """Concatenate stores built from consecutive shard groups into one (code ids remapped to the
    union vocabulary in first-seen order, offsets shifted). Streams each part in chunks of events."""
    stores = [EventStore(p) for p in parts]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for key in ("visit_gap_seconds", "until_seconds"):
        if len({json.dumps(st.meta.get(key)) for st in stores}) > 1:
            raise DataError(f"parts were built with different {key}", file=str(out))
    ids = np.concatenate([np.asarray(st.subject_ids) for st in stores]) if stores else np.zeros(0, np.int64)
    uniq, counts_per_id = np.unique(ids, return_counts=True)
    if (counts_per_id > 1).any():
        dup = int(uniq[counts_per_id > 1][0])
        where = [str(st.directory) for st in stores if dup in st._row_of]
        raise DataError(f"subject {ident(dup)} appears in two shard groups ({', '.join(where)})", column="subject_id",
                        fix="each subject's events must sit in one shard, as MEDS requires")
    vocab: dict[str, int] = {}
    for st in stores:
        for c in st.code_names:
            vocab.setdefault(c, len(vocab))
    counts: dict[str, int] = {}
    names: dict[str, list[str]] = {}
    sources: list[str] = []
    n_events = n_visits = 0
    with ExitStack() as stack:
        files = {name: stack.enter_context(open(out / f"{name}.bin.tmp", "wb")) for name in ARRAYS}
        files["offsets"].write(np.zeros(1, np.int64).tobytes())
        files["visit_offsets"].write(np.zeros(1, np.int64).tobytes())
        for st in stores:
            for k, v in st.counts.items():
                counts[k] = counts.get(k, 0) + v
            add_names(names, st.names, counts)
            sources += st.meta["sources"]
            remap = np.array([vocab[c] for c in st.code_names], dtype=np.int32)
            files["subject_ids"].write(np.asarray(st.subject_ids, dtype=np.int64).tobytes())
            files["offsets"].write((np.asarray(st.offsets[1:]) + n_events).astype(np.int64).tobytes())
            files["visit_offsets"].write((np.asarray(st.visit_offsets[1:]) + n_visits).astype(np.int64).tobytes())
            files["visit_starts"].write((np.asarray(st.visit_starts) + n_events).astype(np.int64).tobytes())
            files["visit_ends"].write((np.asarray(st.visit_ends) + n_events).astype(np.int64).tobytes())
            for a in range(0, len(st.times), chunk):
                files["times"].write(np.asarray(st.times[a : a + chunk]).tobytes())
                files["codes"].write(remap[np.asarray(st.codes[a : a + chunk])].tobytes())
                files["values"].write(np.asarray(st.values[a : a + chunk]).tobytes())
            n_events += len(st.times)
            n_visits += len(st.visit_starts)
    for name in ARRAYS:
        os.replace(out / f"{name}.bin.tmp", out / f"{name}.bin")
    (out / "codes.json").write_text(json.dumps(list(vocab)))
    meta = {
        "store_version": STORE_VERSION, "visit_gap_seconds": stores[0].meta["visit_gap_seconds"] if stores else 0,
        "until_seconds": stores[0].meta["until_seconds"] if stores else None, "patients": len(ids),
        "events": n_events, "visits": n_visits, "codes": len(vocab),
        "dtypes": {k: np.dtype(v).str for k, v in ARRAYS.items()}, "counts": counts, "sources": sources,
        **({"names": names} if names else {}),
    }
    firsts = [st.meta["first_visit_after_until"] for st in stores if "first_visit_after_until" in st.meta]
    if firsts:
        meta["first_visit_after_until"] = min(firsts)
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return EventStore(out)


class EventStore:
    """Read side of the store: memory-mapped arrays; `patient(i)` slices one patient's history."""

    def __init__(self, directory: str | Path) -> None:
        d = Path(directory)
        meta_path = d / "meta.json"
        if not meta_path.exists():
            raise DataError("not an ehrdx event store (no meta.json)", file=str(d),
                            fix="build one with ehrdx.data.store.build_store")
        self.directory = d
        self.reused = False  # opened from a --store folder converted before from the same files (open_store)
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("store_version") != STORE_VERSION:
            raise DataError(f"unsupported store version {self.meta.get('store_version')!r}", file=str(meta_path))
        self.code_names: list[str] = json.loads((d / "codes.json").read_text())
        for name, dtype in ARRAYS.items():
            path = d / f"{name}.bin"
            size = path.stat().st_size
            arr = np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype)
            setattr(self, name, arr)
        self._row_of = {int(s): i for i, s in enumerate(self.subject_ids)}

    def __len__(self) -> int:
        return len(self.subject_ids)

    @property
    def id_map(self) -> SubjectIdMap | None:
        """The mapping of text subject ids to the store's int64 ids; None where the ids are integers."""
        if "subject_id_map" not in self.meta:
            return None
        if not hasattr(self, "_id_map"):
            self._id_map = SubjectIdMap.read(self.directory)
        return self._id_map

    def original_ids(self, ids: np.ndarray) -> pl.Series:
        """Store subject ids as the user gave them (text where the events table had text ids)."""
        ids = np.asarray(ids, dtype=np.int64)
        return pl.Series("subject_id", ids) if self.id_map is None else self.id_map.to_original(ids)

    def store_ids(self, values, source: str, column: str = "subject_id") -> np.ndarray:
        """The store's int64 ids of subject ids as the user gives them (a times file, targets, --patient).
        Text is matched exactly: ``007`` is not ``7``. Empty ids and ids not in the data are errors."""
        given = values if isinstance(values, pl.Series) else pl.Series(column, values)
        if given.is_null().any():
            rows = given.is_null().arg_true().head(5).to_list()
            raise DataError("empty subject ids", file=source, column=column, rows=rows,
                            fix="every row needs a subject id")
        if self.id_map is not None:
            ids = self.id_map.to_store(given)
        elif given.dtype in (pl.Utf8, pl.Categorical):  # only a canonical integer names an integer subject
            text = given.cast(pl.Utf8)
            ids = pl.select(pl.when(canonical_ints(text)).then(text.cast(pl.Int64, strict=False))).to_series()
        else:
            ids = given.cast(pl.Int64, strict=False)
        unknown = ids.is_null()
        if unknown.any():
            rows = unknown.arg_true().head(5).to_list()
            raise DataError(f"{int(unknown.sum())} row(s) for subjects not in the event data", file=source,
                            column=column, rows=rows, values=[given[r] for r in rows],
                            fix="give only subjects that are in the MEDS dataset / events table, written as there")
        return ids.to_numpy().astype(np.int64)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.meta["counts"])

    @property
    def names(self) -> dict[str, list[str]]:
        """What a count counts, where it has names (e.g. ignored_columns: the columns)."""
        return dict(self.meta.get("names", {}))

    @property
    def warnings(self) -> list[str]:
        """What the user should know about the input that is not a count, in words (e.g. an unreadable
        codes.parquet, read without it)."""
        return list(self.meta.get("warnings", []))

    def add_warning(self, text: str) -> None:
        """Keep a warning in meta.json, so that every command opening this store can say it."""
        self.meta["warnings"] = [*self.warnings, text]
        (self.directory / "meta.json").write_text(json.dumps(self.meta, indent=2))

    def code_descriptions(self) -> dict[str, str]:
        """code -> readable name, from the source's metadata where it had some (see data/descriptions.py)."""
        from ehrdx.data.descriptions import read_descriptions

        return read_descriptions(self.directory)

    def row_of(self, subject_id: int) -> int:
        try:
            return self._row_of[int(subject_id)]
        except KeyError:
            raise DataError(f"subject {ident(subject_id)} is not in the store", file=str(self.directory)) from None

    def patient(self, row: int) -> dict[str, np.ndarray]:
        """One patient's events (times, codes, values) and visit starts relative to its first event."""
        a, b = int(self.offsets[row]), int(self.offsets[row + 1])
        va, vb = int(self.visit_offsets[row]), int(self.visit_offsets[row + 1])
        return {
            "subject_id": int(self.subject_ids[row]),
            "times": np.asarray(self.times[a:b]),
            "codes": np.asarray(self.codes[a:b]),
            "values": np.asarray(self.values[a:b]),
            "visit_starts": np.asarray(self.visit_starts[va:vb]) - a,
            "visit_ends": np.asarray(self.visit_ends[va:vb]) - a,
        }

    def to_frame(self) -> pl.DataFrame:
        """The store as a MEDS-shaped frame (for checks and small data; reads every event)."""
        n = np.diff(np.asarray(self.offsets))
        times = np.asarray(self.times)
        return pl.DataFrame({
            "subject_id": np.repeat(np.asarray(self.subject_ids), n),
            "time": pl.Series(np.where(times == STATIC_TIME, 0, times) * 1_000_000).cast(pl.Datetime("us")),
            "code": np.asarray(self.code_names, dtype=object)[np.asarray(self.codes)].astype(str),
            "numeric_value": np.asarray(self.values),
        }).with_columns(
            pl.when(pl.Series(times == STATIC_TIME)).then(None).otherwise(pl.col("time")).alias("time"),
            pl.col("numeric_value").fill_nan(None),
        )
