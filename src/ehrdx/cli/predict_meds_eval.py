"""ehrdx predict --format meds-eval: labelled predictions, one MEDS prediction file per label, for
`meds-evaluation` to score (the files and their rules: ehrdx.evaluate.meds_eval)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from ehrdx.cli.inputs import (
    events_model_and_times,
    print_coverage,
    read_given_targets,
    require_positives,
    the,
)
from ehrdx.cli.options import console, fail, print_counts
from ehrdx.errors import DataError, EhrdxError

NEEDS_LABELS = ("--format meds-eval writes each prediction beside its true label at a prediction time, and "
                "{what}\n  fix: give event streams (--meds, --events or --omop): their labels come from the "
                "model's task windows or from --targets; or write plain predictions with --out FILE.csv")


def refuse_table_input(data: Path | None) -> None:
    """Stop (exit 2): a patient table has no prediction times, which the MEDS prediction schema requires."""
    what = ("a patient table has no prediction time per row" if data is not None
            else "no event streams were given")
    fail(EhrdxError(NEEDS_LABELS.format(what=what)))


def predict_meds_eval(model_dir: Path, meds, events, store, settings: dict, split: str, times: Path | None,
                      targets: Path | None, out: Path, threshold: float | None, device: str = "cpu") -> None:
    """Score the chosen patients' prediction times that have known labels, and write them to `out`."""
    import numpy as np

    from ehrdx.evaluate.meds_eval import write_meds_eval
    from ehrdx.events_pipeline import prediction_coverage
    from ehrdx.tasks.scan import label_code_notes

    try:
        clf, st, rows, scored, pt = events_model_and_times(model_dir, meds, events, store, settings, times, split,
                                                           device)
        given = read_given_targets(targets)
        samples = clf.samples(st, rows, times=pt, targets=given)
        new_onset = clf.new_onset_
        known = samples.train_mask_bits(new_onset)  # what ehrdx's own metrics score; packed, read in blocks
        if not known.rows_any().any():
            raise DataError(
                f"none of the prediction times of {the(scored)} has a known label"
                f"{' not already in the history (a new-onset model)' if new_onset else ''}: "
                f"nothing to score ({_said(samples.counts)})", file=str(targets or times or meds or events),
                fix="give prediction times with follow-up after them (leave out --times: every visit end), "
                    "another --split, or the labels with --targets FILE")
        # no label recorded anywhere: every file would say 'no positives' and none could be scored (as evaluate)
        require_positives(clf, samples, targets or meds or events, scored, given)
        coverage = prediction_coverage(clf, st, samples, np.arange(len(st)) if rows is None else rows)
        # the true labels come from the data's codes (unless given): codes they miss by case are said, as by evaluate
        missed = label_code_notes(st, clf.selector_, rows, model=True) if targets is None else {}
        proba = clf.scores(st, samples)  # the scores ehrdx's own metrics read (computed a block at a time)
        thr = clf.thresholds_ if threshold is None else np.full(len(clf.labels_), threshold)
        ids = np.asarray(st.subject_ids)[samples.row]
        about = {"model": clf.model_name_, "split": scored, "labels_from": "--targets" if targets else "task windows",
                 "known": ("new onset: known and not yet in the history (the model is new-onset)" if new_onset
                           else "known (not censored, label defined by then)"),
                 "thresholds": "--threshold" if threshold is not None else "tuned per label",
                 "samples": len(samples), "patients": len(np.unique(samples.row)),
                 "excluded": dict(samples.counts),
                 **missed, **({"coverage": coverage} if coverage else {})}
        manifest = write_meds_eval(out, ids, samples.time, samples.y_bits, known, proba, clf.labels_, thr,
                                   original_ids=st.original_ids(ids) if st.id_map is not None else None,
                                   about=about)
    except EhrdxError as exc:
        fail(exc)
    files = [r for r in manifest["labels"] if r["file"]]
    console.print(f"scored {scored}: {len(samples):,} prediction times, {sum(r['rows'] for r in files):,} known "
                  f"(time, label) pairs in {len(files)} label files -> {escape(str(out))}")
    if st.id_map is not None:
        console.print("[yellow]text subject ids are written as int64 (the MEDS schema's type); "
                      "subject_ids.parquet maps them back[/yellow]")
    for r in manifest["labels"]:
        if r["status"] != "ok":
            console.print(f"[yellow]label '{escape(r['label'])}': {r['status']}[/yellow]")
    print_counts(samples.counts)
    for note in missed.values():
        console.print(f"[yellow]{escape(note['note'])}[/yellow]")
    print_coverage(coverage)  # codes the model never saw read as the unknown code, as predict says it
    first = files[0]["file"] if files else "FILE"
    console.print(f"score a label: meds-evaluation-cli predictions_path={escape(str(Path(out) / first))} output_file=OUT.json")


def _said(counts: dict) -> str:
    return "; ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in counts.items()) or "no samples"
