"""The HTML evaluation report of an event model: predict the chosen samples and write one self-contained page
(ehrdx report, ehrdx demo). Explanations of single patients (ehrdx explain) can be embedded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ehrdx.evaluate.html import build_report
from ehrdx.evaluate.metrics import BOOTSTRAP_DRAWS
from ehrdx.evaluate.privacy import DEFAULT_MIN_CELL
from ehrdx.evaluate.report import ensemble_line
from ehrdx.explain import explain_sample, without_exact_dates_and_values
from ehrdx.io import atomic_write_bytes
from ehrdx.ranking import macro_scores
from ehrdx.train.mixing import RULE as MIX_RULE


def ensemble_summary(clf, st, samples) -> dict | None:
    """For an ensemble (`auto`): how it weighs its members and each member's macro AUROC / AUPRC on the
    report's own samples (all labels, new onset), beside the ensemble's; None for any other model."""
    model = clf.model_
    if not hasattr(model, "member_probabilities") or not len(samples):
        return None
    probs = model.member_probabilities(clf.dataset(st, samples))  # [members, samples, labels]
    masks = (samples.mask_bits, samples.train_mask_bits(True))
    rows = []
    for name, p in zip(model.names, probs):
        a, n = (macro_scores(samples.y_bits, m, p) for m in masks)
        rows.append([name, a["macro_auroc"], a["macro_auprc"], n["macro_auroc"], n["macro_auprc"]])
    weights = {"members": list(model.names), "chosen_on": MIX_RULE,
               "per_label": [{"weights": dict(zip(model.names, w))} for w in np.asarray(model.weights)]}
    return {"rows": rows, "weights": ensemble_line(weights)}


def explain_latest(clf, st, rows: list[int], exact: bool = False) -> list[dict]:
    """The explanation of each store row's latest prediction (two top labels, six events); rows without a
    prediction time give none. Exact dates and values only when `exact` (ehrdx --show-ids)."""
    out = []
    for row in rows:
        s = clf.samples(st, np.array([row]), require_labels=False)
        if len(s):
            out.append(explain_sample(clf, st, s, len(s) - 1, top_labels=2, top_events=6))
    return out if exact else [without_exact_dates_and_values(e) for e in out]


def write_html_report(clf, st, samples, out: Path, title: str, model_dir: Path | None = None,
                      explanations: list[dict] | None = None, min_cell: int = DEFAULT_MIN_CELL,
                      bootstrap_draws: int = BOOTSTRAP_DRAWS) -> Path:
    """Predict `samples` with `clf` and write the HTML report to `out` (atomically); cells from fewer than
    `min_cell` patients are suppressed. An update_report.json in `model_dir` adds old-vs-new labels."""
    proba = clf.scores(st, samples)  # kept as patient states and the label head where [S, L] would be large
    update_report = None
    if model_dir is not None and (Path(model_dir) / "update_report.json").exists():
        update_report = json.loads((Path(model_dir) / "update_report.json").read_text())
    history = clf.history_.to_artifact() if getattr(clf, "history_", None) is not None else None
    info = {"model": clf.model_name_, "task": clf.task_.name, "label selection": clf.selector_.spec}
    page = build_report(title=title, samples=samples, proba=proba, labels=clf.labels_, thresholds=clf.thresholds_,
                        store=st, history=history, update_report=update_report, model_info=info,
                        excluded=st.counts, excluded_names=st.names, min_cell=min_cell, explanations=explanations,
                        descriptions=clf.label_vocab_.descriptions(), bootstrap_draws=bootstrap_draws,
                        ensemble=ensemble_summary(clf, st, samples), warnings=st.warnings)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, page.encode())
    return out
