"""Event streams in: a MEDS dataset, a long events table or an OMOP export converted into the event store
(also cooperatively by the processes of a distributed run), its patient splits, what a prediction run could
not use, and the targets of a task (`ehrdx targets`). The main job itself is ehrdx.pipeline's."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ehrdx.data.descriptions import attach_descriptions
from ehrdx.data.meds import iter_event_table, iter_meds, meds_shard_paths, read_subject_splits
from ehrdx.data.samples import Samples
from ehrdx.data.splits import SPLIT_RULE
from ehrdx.data.store import EventStore, build_store, build_store_parallel, merge_stores, shard_groups
from ehrdx.data.store_source import built_from, forget_source, record_source, source_record
from ehrdx.errors import DataError, how_to_show_ids, identifiers_shown, python_terms
from ehrdx.estimator import EHRClassifier
from ehrdx.sources.events import EventSource
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.task import code_label_index
from ehrdx.tempdirs import temporary_directory
from ehrdx.times import utc_seconds

# `ehrdx`'s options in the errors of open_store and patient_splits, as their parameters (ehrdx.errors.python_terms)
COLUMN_OPTIONS = ("subject_col", "time_col", "code_col", "value_col", "time_format")  # open_store's `columns`
PARAMETERS = {"--until": "until", "--meds": "meds", "--events": "events", "--omop": "omop",
              "--visit-gap": "visit_gap_seconds", "--split-names": "split_names", "--seed": "seed",
              **{f"--{c.replace('_', '-')} NAME": f'columns={{"{c}": NAME}}' for c in COLUMN_OPTIONS},
              **{f"--{c.replace('_', '-')}": f'columns={{"{c}": ...}}' for c in COLUMN_OPTIONS}}


@python_terms(PARAMETERS)
def open_store(
    *,
    meds: str | Path | None = None,
    events: str | Path | None = None,
    store_dir: str | Path | None = None,
    visit_gap_seconds: int = 0,
    columns: dict | None = None,
    until: str | None = None,
    workers: int = 1,
    omop=None,
) -> EventStore:
    """Convert a MEDS dataset or a long events table into a store (in `store_dir`, or a temporary
    directory that lives as long as the process and is removed on SIGTERM and Ctrl-C too). `until`
    (ISO date) keeps only events up to that time: the data as it was then. `workers` > 1 converts a
    sharded MEDS dataset in that many processes."""
    if sum(x is not None for x in (meds, events, omop)) != 1:
        raise DataError("give exactly one of a MEDS directory (--meds), an events table (--events) or an OMOP "
                        "export (--omop)")
    temporary = store_dir is None
    if temporary:
        store_dir = temporary_directory("ehrdx_store_")  # removed at exit, on SIGTERM and on Ctrl-C
    until_seconds = parse_until(until)
    with writing_store(Path(store_dir)):
        if temporary:
            return _open_store(meds, events, omop, store_dir, visit_gap_seconds, columns, until_seconds, until,
                               workers)
        # a store folder given again for the same data and settings is opened, not converted again
        source = omop if omop is not None else meds if meds is not None else events
        if not isinstance(source, str | Path):  # an OmopSource: its folder (a Path's own .root is '/' or '')
            source = source.root
        record = source_record(source, Path(store_dir), {
            "kind": "omop" if omop is not None else "meds" if meds is not None else "events",
            "visit_gap_seconds": visit_gap_seconds, "until_seconds": until_seconds, "columns": columns or {},
            "omop": [getattr(omop, "codes", "source"), list(getattr(omop, "prefixes", ()))] if omop else None})
        if built_from(Path(store_dir), record):
            store = EventStore(store_dir)
            store.reused = True
            return store
        forget_source(Path(store_dir))
        store = _open_store(meds, events, omop, store_dir, visit_gap_seconds, columns, until_seconds, until, workers)
        record_source(Path(store_dir), record)
        return store


WRITING = ".ehrdx-writing"  # the lock file in a store folder while a process converts into it


@contextmanager
def writing_store(store_dir: Path) -> Iterator[None]:
    """One process at a time converts into a store folder: a second one (two commands given the same
    --store) gets a clear error instead of a crash halfway or a store whose arrays come from two builds. Where
    the file system has no file locks (NFS mounted with nolock, Lustre without flock) or the platform none
    (no fcntl), it converts unlocked, as before there was a lock."""
    try:
        import fcntl
    except ImportError:
        fcntl = None

    store_dir.mkdir(parents=True, exist_ok=True)
    with open(store_dir / WRITING, "w") as lock:
        try:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError("another ehrdx process is converting event data into this store folder now",
                            file=str(store_dir), fix="wait for it to finish, or give each run its own --store "
                            "folder") from None
        except OSError:  # no locks here (ENOLCK, ENOSYS, EOPNOTSUPP): not a reason to refuse the conversion
            pass
        yield


def _open_store(meds, events, omop, store_dir, visit_gap_seconds: int, columns: dict | None,
                until_seconds: int | None, until: str | None, workers: int) -> EventStore:
    if meds is not None and workers > 1:
        store = build_store_parallel(meds, store_dir, workers, visit_gap_seconds, until_seconds)
        attach_descriptions(store, meds=meds)
        note_split_subjects_without_events(store, meds, until)
        return _not_empty(store, meds, until)
    if omop is not None:
        from ehrdx.data.omop import OmopSource

        shards = (omop if isinstance(omop, OmopSource) else OmopSource(Path(omop))).shards()
    elif meds is not None:
        shards = iter_meds(meds)
    else:
        shards = iter_event_table(events, **(columns or {}))
    store = build_store(shards, store_dir, visit_gap_seconds=visit_gap_seconds, until_seconds=until_seconds)
    # readable code names, where the source has them
    if omop is not None:
        from ehrdx.data.omop import concept_names

        root = getattr(omop, "root", omop)
        attach_descriptions(store, names=lambda codes: concept_names(root, codes))
    else:
        attach_descriptions(store, meds=meds)
        if meds is not None:
            note_split_subjects_without_events(store, meds, until)
    return _not_empty(store, meds if meds is not None else events if events is not None else omop, until)


def note_split_subjects_without_events(store: EventStore, meds: str | Path, until: str | None) -> None:
    """Subjects that MEDS subject_splits.parquet lists but the data has no event of (at or before --until) are
    in no split: counted and said (a store warning, printed and kept in metrics.json), since a missing shard
    looks just like that. Not an error: a dataset may list subjects a shard filter left out."""
    try:
        splits = read_subject_splits(meds)
    except DataError:
        return  # an unreadable file is refused where the splits are used
    if splits is None:
        return
    listed = splits.get_column("subject_id").drop_nulls().to_numpy()
    absent = np.setdiff1d(listed, np.asarray(store.subject_ids))
    if len(absent) == 0:
        return
    shown = f"ids hidden; {how_to_show_ids()} to see them"  # patient ids stay out of logs unless asked for
    if identifiers_shown():
        shown = ", ".join(str(i) for i in absent[:5]) + (f" and {len(absent) - 5:,} more" if len(absent) > 5 else "")
    store.add_warning(str(DataError(
        f"{len(absent):,} subject(s) listed here have no event in the data"
        + (f" at or before --until {until}" if until else "") + f": in no split ({shown})",
        file=str(Path(meds) / "metadata" / "subject_splits.parquet"),
        fix="check that data/ holds every shard; nothing to do if they were left out on purpose")))


def _not_empty(store: EventStore, source, until: str | None) -> EventStore:
    """A store without a patient is an error naming the input: every later step would fail naming the store's
    (temporary) folder, or predict write an empty file as if all were well. So is a --until before every visit:
    patients stay (static facts, births before it), with no prediction time."""
    if until and len(store) and store.meta["visits"] == 0:
        first = store.meta.get("first_visit_after_until")
        when = datetime.fromtimestamp(first, UTC).replace(tzinfo=None).isoformat(" ") if first is not None else None
        raise DataError(f"no visit at or before --until {until}, so no prediction time"
                        + (f": the data's first visit is on {when.removesuffix(' 00:00:00')}" if when else ""),
                        file=str(source), column="--until",
                        fix=f"give a later --until{f' (at or after {when})' if when else ''}, or leave --until out")
    if len(store):
        return store
    counts = "; ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in store.counts.items())
    raise DataError("no events" + (f" at or before --until {until}" if until else "") +
                    (f" ({counts})" if counts else ""), file=str(source),
                    fix="give a file or dataset with events" + (", or a later --until" if until else ""))


def parse_until(until: str | None, option: str = "--until") -> int | None:
    if not until:
        return None
    try:
        return int(utc_seconds(until))
    except ValueError:
        raise DataError(f"unreadable date {until!r}", column=option,
                        fix="write it as ISO 8601: 2020-01-01, 2020-01-01T08:00 or 2020-01-01T10:00:00+02:00 "
                            "(an offset is converted to UTC)") from None


def convert_cooperatively(meds: str | Path, store_dir: str | Path, rank: int, world: int,
                          together: Callable[[str], AbstractContextManager], visit_gap_seconds: int = 0,
                          until: str | None = None) -> EventStore:
    """Every process of a distributed run converts its own consecutive MEDS shards into a part store;
    rank 0 merges the parts once all are done. `store_dir` must be shared by the processes. Each step ends
    `together` (train.distributed.all_or_none): where one process fails, every other stops with an error
    instead of waiting for it. Rank 0 holds the store folder's lock (`writing_store`) throughout, taken before
    any process writes: a second run given the same folder is refused, all its processes."""
    until_seconds = parse_until(until)
    with ExitStack() as lock:
        with together("taking the store folder"):
            if rank == 0:
                lock.enter_context(writing_store(Path(store_dir)))
                forget_source(Path(store_dir))  # converted again here: no longer a store another run may reuse
        groups = shard_groups(meds_shard_paths(meds), world)
        parts = [Path(store_dir) / "parts" / str(k) for k in range(len(groups))]
        with together("converting its MEDS shards"):
            if rank < len(groups):
                build_store(iter_meds(meds, groups[rank]), parts[rank], visit_gap_seconds, until_seconds)
        with together("merging the converted shards"):
            if rank == 0:
                merged = merge_stores(parts, store_dir)
                attach_descriptions(merged, meds=meds)
                note_split_subjects_without_events(merged, meds, until)
                shutil.rmtree(Path(store_dir) / "parts", ignore_errors=True)
    return _not_empty(EventStore(store_dir), meds, until)  # every rank stops with the same error


@python_terms(PARAMETERS)
def patient_splits(store: EventStore, meds: str | Path | None, seed: int,
                   fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                   selector=None, split_names: dict[str, str] | None = None, rule: int = SPLIT_RULE
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train/validation/test store rows: MEDS subject_splits where the dataset has them (other split names
    mapped by `split_names`), else a seeded split stratified by each patient's rarest label
    (`EventSource.default_splits`); `rule`: how that split deals patients (a saved model's `split_rule_` finds the
    parts it was trained with)."""
    return EventSource(store).default_splits(seed, fractions, selector, meds=meds, split_names=split_names, rule=rule)


def prediction_coverage(clf: EHRClassifier, store: EventStore, samples: Samples, rows: np.ndarray) -> dict:
    """What a prediction run could not use as-is, counted: patients among `rows` with no prediction
    time because they have no visit (e.g. only MEDS_BIRTH or other static facts), and the events of the
    predicted patients whose code the model never saw in training (read as the unknown code). A patient
    with visits whose given times all come before the first one is not among them: those times are counted
    in the samples' own counts (prediction_times_before_first_visit)."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    predicted = np.unique(samples.row)
    missing = np.setdiff1d(rows, predicted)
    visit_offsets = np.asarray(store.visit_offsets)
    out = {"patients_without_prediction_time": int((visit_offsets[missing + 1] == visit_offsets[missing]).sum()),
           **unseen_code_events(clf.encoder_, store, predicted)}
    return {k: v for k, v in out.items() if v}


def unseen_code_events(encoder, store: EventStore, rows: np.ndarray) -> dict:
    """The events of patients `rows` whose code `encoder` (a model's input vocabulary) does not know, read as
    the unknown code: {events_with_unseen_codes, unseen_codes, events_read}, empty where there are none."""
    unseen = encoder.code_map(store) == 0
    if not unseen.any() or len(rows) == 0:
        return {}
    chosen = np.zeros(len(store), dtype=bool)
    chosen[np.asarray(rows, dtype=np.int64)] = True
    codes = np.asarray(store.codes)[np.repeat(chosen, np.diff(np.asarray(store.offsets)))]
    hit = unseen[codes]
    if not hit.any():
        return {}
    return {"events_with_unseen_codes": int(hit.sum()), "unseen_codes": len(np.unique(codes[hit])),
            "events_read": len(codes)}


def task_targets(store: EventStore, task, selector, infer_introduced: bool = False):
    """The multi-label targets of `task` (a TaskSpec) over every patient of `store`, labels chosen by
    `selector` (ehrdx targets): (Targets, the Samples they come from, whose counts say what was left out)."""
    from ehrdx.tasks.targets import targets_from_samples
    from ehrdx.tasks.task import build_samples, label_first_times

    rows = np.arange(len(store))
    vocab = LabelVocab.from_first_times(label_first_times(store, rows, selector), selector.info, infer_introduced)
    if len(vocab) == 0:  # targets of no label would be written as an empty table, as if all were well
        spec = str(selector.spec)
        raise DataError(f"no label code of --labels '{spec}' occurs in the {len(store):,} patients' events",
                        file=spec[4:] if spec.startswith("map:") else None,
                        fix="check --labels against the codes in the data (which events there are depends on --until)")
    samples = build_samples(store, rows, task, code_label_index(store, selector, vocab), len(vocab),
                            introduced=vocab.introduced_seconds(), introduced_from=vocab.introduced_from())
    return targets_from_samples(store, samples, vocab.labels, task.new_onset), samples
