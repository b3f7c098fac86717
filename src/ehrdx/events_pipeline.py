"""The main job for event streams: build the store, split by patient, fit, evaluate per prediction time
(all labels and new onset), compare with baselines and the oracle."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from ehrdx.data.descriptions import attach_descriptions
from ehrdx.data.meds import MEDS_SPLITS, iter_event_table, iter_meds, meds_shard_paths, read_subject_splits
from ehrdx.data.samples import Samples
from ehrdx.data.splits import split_patients
from ehrdx.data.store import EventStore, build_store, build_store_parallel, merge_stores, shard_groups
from ehrdx.errors import DataError
from ehrdx.evaluate.metrics import HEADLINE, K_VALUES, evaluate_samples, tune_thresholds
from ehrdx.events_api import EventClassifier
from ehrdx.input_settings import map_split_names
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.task import code_label_index
from ehrdx.tempdirs import temporary_directory
from ehrdx.times import utc_seconds


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
    if store_dir is None:
        store_dir = temporary_directory("ehrdx_store_")  # removed at exit, on SIGTERM and on Ctrl-C
    until_seconds = parse_until(until)
    if meds is not None and workers > 1:
        store = build_store_parallel(meds, store_dir, workers, visit_gap_seconds, until_seconds)
        attach_descriptions(store, meds=meds)
        return store
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
    return store


def parse_until(until: str | None, option: str = "--until") -> int | None:
    if not until:
        return None
    try:
        return int(utc_seconds(until))
    except ValueError:
        raise DataError(f"unreadable date {until!r}", column=option,
                        fix="write it as ISO 8601: 2020-01-01, 2020-01-01T08:00 or 2020-01-01T10:00:00+02:00 "
                            "(an offset is converted to UTC)") from None


def convert_cooperatively(meds: str | Path, store_dir: str | Path, rank: int, world: int, barrier: Callable[[], None],
                          visit_gap_seconds: int = 0, until: str | None = None) -> EventStore:
    """Every process of a distributed run converts its own consecutive MEDS shards into a part store;
    rank 0 merges the parts once all are done. `store_dir` must be shared by the processes."""
    groups = shard_groups(meds_shard_paths(meds), world)
    parts = [Path(store_dir) / "parts" / str(k) for k in range(len(groups))]
    if rank < len(groups):
        build_store(iter_meds(meds, groups[rank]), parts[rank], visit_gap_seconds, parse_until(until))
    barrier()
    if rank == 0:
        attach_descriptions(merge_stores(parts, store_dir), meds=meds)
        shutil.rmtree(Path(store_dir) / "parts", ignore_errors=True)
    barrier()
    return EventStore(store_dir)


def patient_splits(store: EventStore, meds: str | Path | None, seed: int,
                   fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                   selector=None, split_names: dict[str, str] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train/validation/test store rows: MEDS subject_splits (train/tuning/held_out) where the dataset
    has them, else a seeded split stratified by each patient's rarest label. `split_names` maps other
    split names (test, val ...) to those three; an unmapped other name is an error."""
    ids = np.asarray(store.subject_ids)
    if meds is not None:
        splits = read_subject_splits(meds)
        if splits is not None:
            splits = map_split_names(splits, split_names, str(Path(meds) / "metadata" / "subject_splits.parquet"))
            frame = pl.DataFrame({"subject_id": ids, "row": np.arange(len(ids))}).join(
                splits, on="subject_id", how="left")
            missing = frame.filter(pl.col("split").is_null()).height
            if missing:
                raise DataError(f"{missing} subject(s) have no split", file=str(Path(meds) / "metadata"),
                                column="split", fix="list every subject in subject_splits.parquet")
            return tuple(np.sort(frame.filter(pl.col("split") == s).get_column("row").to_numpy())
                         for s in MEDS_SPLITS)
    y = patient_label_matrix(store, selector) if selector is not None else np.zeros((len(ids), 0), np.float32)
    return split_patients(y, fractions, seed=seed)


def patient_label_matrix(store: EventStore, selector) -> np.ndarray:
    """[patients, labels] 1 where a patient ever has the label (for stratified splits only)."""
    vocab = LabelVocab(sorted({lab for c in store.code_names for lab in selector.labels_of(c)}))
    at, lab = code_label_index(store, selector, vocab).expand(np.asarray(store.codes).astype(np.int64))
    row = np.searchsorted(np.asarray(store.offsets), at, side="right") - 1
    y = np.zeros((len(store), len(vocab)), dtype=np.float32)
    y[row, lab] = 1.0
    return y


def oracle_for(oracle: pl.DataFrame, store: EventStore, samples: Samples, labels: list[str]) -> np.ndarray:
    """Oracle probabilities aligned to samples (by subject and prediction time) and label order."""
    missing_cols = [f"p_{lab}" for lab in labels if f"p_{lab}" not in oracle.columns]
    if missing_cols:
        raise DataError(f"oracle has no column(s) {', '.join(missing_cols)}", fix="use the oracle written with the data")
    key = pl.DataFrame({"subject_id": np.asarray(store.subject_ids)[samples.row], "t": samples.time})
    frame = oracle.with_columns(pl.col("prediction_time").dt.epoch("s").alias("t"))
    mat = key.join(frame, on=["subject_id", "t"], how="left", maintain_order="left").select(
        [f"p_{lab}" for lab in labels]).to_numpy().astype(np.float64)
    if np.isnan(mat).any():
        raise DataError("the oracle lacks some prediction times of this task",
                        fix="the built-in oracle covers the next-visit task at visit ends")
    return mat


def headline(result: dict) -> dict:
    keys = (*HEADLINE, *[f"recall_at_{k}" for k in K_VALUES])
    return {k: result.get(k) for k in keys}


def train_and_evaluate_events(
    store: EventStore,
    clf: EventClassifier,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    oracle: pl.DataFrame | None = None,
    baselines: tuple[str, ...] = (),
    on_epoch: Callable[[int, float, float | None], None] | None = None,
    on_baseline: Callable[[str], None] | None = None,
    targets=None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> tuple[EventClassifier, dict]:
    tr, va, te = splits
    for a, b in ((tr, va), (tr, te), (va, te)):
        if np.intersect1d(a, b).size:
            raise DataError("split parts share patients", fix="each patient belongs to one part only")
    t0 = time.perf_counter()
    clf.fit(store, tr, va, on_epoch=on_epoch, targets=targets, checkpoint=checkpoint, resume=resume)
    fit_seconds = time.perf_counter() - t0
    metrics: dict = {
        "task": clf.task.to_dict(), "model": clf.model,
        "split": {"train": len(tr), "val": len(va), "test": len(te), "seed": clf.seed},
        "labels": clf.labels_, "train_summary": clf.fit_summary_, "history": clf.history_.to_dict(),
        "fit_seconds": round(fit_seconds, 2), "excluded": dict(store.counts),
    }
    if len(te) == 0:
        return clf, metrics
    test_s = clf.samples(store, te, targets=targets)
    result = clf.evaluate(store, samples=test_s)
    metrics["test"] = result["all"]
    metrics["test_new_onset"] = result["new_onset"]
    metrics["test_by_prior_visits"] = result["by_prior_visits"]
    metrics["test_samples"] = {"samples": result["samples"], "patients": result["patients"],
                               "excluded": result["excluded"]}
    if oracle is not None and clf.task.kind == "next-visit" and targets is None:
        labels = clf.labels_
        val_s = clf.samples(store, va)
        thr = tune_thresholds(val_s.y, val_s.train_mask(clf.task.new_onset), oracle_for(oracle, store, val_s, labels))
        o = evaluate_samples(test_s, oracle_for(oracle, store, test_s, labels), labels, thr)
        metrics["oracle"], metrics["oracle_new_onset"] = o["all"], o["new_onset"]
    if baselines:
        metrics["baselines"] = {}
        for name in baselines:
            if on_baseline is not None:
                on_baseline(name)
            b = EventClassifier(model=name, task=clf.task, labels=clf.selector, seed=clf.seed,
                                max_epochs=clf.train_config.max_epochs, device=clf.train_config.device,
                                precision=clf.train_config.precision, infer_introduced=clf.infer_introduced)
            t1 = time.perf_counter()
            b.fit(store, tr, va, targets=targets)
            seconds = time.perf_counter() - t1
            r = b.evaluate(store, samples=test_s)
            metrics["baselines"][name] = {"test": headline(r["all"]), "test_new_onset": headline(r["new_onset"]),
                                          "fit_seconds": round(seconds, 2)}
    return clf, metrics


def prediction_coverage(clf: EventClassifier, store: EventStore, samples: Samples, rows: np.ndarray) -> dict:
    """What a prediction run could not use as-is, counted: patients among `rows` with no prediction
    time (no visit: e.g. only MEDS_BIRTH or other static facts), and the events of the predicted patients
    whose code the model never saw in training (read as the unknown code)."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    predicted = np.unique(samples.row)
    out = {"patients_without_prediction_time": len(np.setdiff1d(rows, predicted))}
    unseen = clf.encoder_.code_map(store) == 0
    if unseen.any() and len(predicted):
        chosen = np.zeros(len(store), dtype=bool)
        chosen[predicted] = True
        codes = np.asarray(store.codes)[np.repeat(chosen, np.diff(np.asarray(store.offsets)))]
        hit = unseen[codes]
        out["events_with_unseen_codes"] = int(hit.sum())
        out["unseen_codes"] = len(np.unique(codes[hit]))
    return {k: v for k, v in out.items() if v}


def task_targets(store: EventStore, task, selector, infer_introduced: bool = False):
    """The multi-label targets of `task` (a TaskSpec) over every patient of `store`, labels chosen by
    `selector` (ehrdx targets): (Targets, the Samples they come from, whose counts say what was left out)."""
    from ehrdx.tasks.targets import targets_from_samples
    from ehrdx.tasks.task import build_samples, label_first_times

    rows = np.arange(len(store))
    vocab = LabelVocab.from_first_times(label_first_times(store, rows, selector), selector.info, infer_introduced)
    samples = build_samples(store, rows, task, code_label_index(store, selector, vocab), len(vocab),
                            introduced=vocab.introduced_seconds(), introduced_from=vocab.introduced_from())
    return targets_from_samples(store, samples, vocab.labels, task.new_onset), samples
