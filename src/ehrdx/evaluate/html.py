"""One self-contained HTML evaluation report (figures embedded as PNG), for people who would rather look.

Sections: cohort summary, headline metrics (all labels and new onset), ROC and precision-recall curves
(micro, macro and per label), calibration, recall@k, a per-label table sortable by any column, metrics by
number of prior visits and by sex and age band (a fairness view), training curves, and, for a model made
by `ehrdx update`, old-vs-new label results. Cells built from fewer than `min_cell` patients are
suppressed (per-label rows and curves, subgroup rows). No patient id is written.
(About 400 lines in one file on purpose: every section shares the page's helpers and the suppression rule.)
"""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime

import numpy as np

from ehrdx.data.table_cells import some_names
from ehrdx.evaluate.metrics import BOOTSTRAP_DRAWS, bootstrap_label_intervals, calibration_sums, recall_at_ks
from ehrdx.evaluate.privacy import DEFAULT_MIN_CELL, suppress_small_cells
from ehrdx.evaluate.report import few_positive_labels, format_interval, more_labels_note, most_positive
from ehrdx.evaluate.subgroups import AGE_BANDS, sex_and_age, subgroup_rows
from ehrdx.ranking import block_elements, curve_counts, label_blocks, label_curves
from ehrdx.sources.base import NOT_IN_MODEL

REPORT_LABELS = 100  # rows of the per-label tables, the labels with the most positives first
CURVE_NAMES = 50  # labels named in the note on labels without a curve of their own
MAX_POOLED = 4_000_000  # known scores pooled whole for the micro curve; more: its thresholds from a sample


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img(b64: str, alt: str) -> str:
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v))


def _table(headers: list[str], rows: list[list], sortable: bool = False, cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    attr = ' class="sortable"' if sortable else ""
    return f'<table{attr}{" id=" + chr(34) + cls + chr(34) if cls else ""}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def with_interval(row: dict, intervals: dict | None, metric: str, i: int):
    """A released per-label metric with its bootstrap interval (`intervals`: bootstrap_label_intervals of the
    table's labels, i its column); the value alone where it is suppressed, undefined or has no interval."""
    if row[metric] is None or intervals is None:
        return row[metric]
    return format_interval(row[metric], intervals[f"{metric}_low"][i], intervals[f"{metric}_high"][i])


def label_columns(table, cols) -> np.ndarray:
    """Dense [S, len(cols)] of the given labels of an [S, L] table, read a label at a time (a SparseTable
    reads a column from its column index: no [S, L] copy)."""
    if not len(cols):
        return np.zeros((len(table), 0), np.asarray(table[:0, :0]).dtype)
    return np.stack([np.asarray(table[:, int(j)]) for j in cols], axis=1)


def pooled_curve_counts(y, mask, proba, n_known: int, max_points: int = 2000,
                        max_pooled: int = MAX_POOLED) -> tuple[np.ndarray, np.ndarray]:
    """The micro (pooled) curve: curve_counts of every known score with `max_points` thresholds, a block
    of labels at a time. Up to `max_pooled` known scores (of `n_known`), pooled as they are; beyond, the
    thresholds are evenly spaced ranks of every k-th score (k = n_known / max_pooled, rounded up: the
    positives and, per block, the sorted negatives), and the positives and negatives at or above each are
    counted exactly in a second pass, so memory grows with the positives, not the known entries."""
    blocks = list(label_blocks(len(proba), np.shape(proba)[1], block_elements(proba)))
    stride = max(1, -(-int(n_known) // max_pooled))

    def known_block(b: slice) -> tuple[np.ndarray, np.ndarray]:
        known = np.asarray(mask[:, b], dtype=bool)
        p = np.asarray(proba[:, b])
        pos = (np.asarray(y[:, b]) > 0.5) & known
        return p[pos], p[known & ~pos]

    ps, ns = [], []
    for b in blocks:
        pos, neg = known_block(b)
        ps.append(pos)
        ns.append(neg if stride == 1 else np.sort(neg)[::stride])
    ps, ns = np.sort(np.concatenate(ps)), np.concatenate(ns)
    if stride == 1:
        return curve_counts(ps, ns, max_points)
    every = np.sort(np.concatenate([ps[::stride], ns]))
    thresholds = np.unique(every[np.linspace(0, len(every) - 1, max_points).astype(np.int64)])[::-1]
    fp = np.zeros(len(thresholds), np.int64)
    for b in blocks:
        neg = np.sort(known_block(b)[1])
        fp += len(neg) - np.searchsorted(neg, thresholds, side="left")
    return len(ps) - np.searchsorted(ps, thresholds, side="left"), fp


def _thin(x: np.ndarray, y: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most `points` points of a curve to draw (a pooled curve has one per distinct score)."""
    if len(x) <= points:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, points).astype(np.int64))
    return x[keep], y[keep]


def roc_pr_points(tp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, recall, precision) from cumulative counts at each threshold (ehrdx.ranking.label_curves),
    as scikit-learn's roc_curve (from (0, 0)) and precision_recall_curve (from recall 0, precision 1, up to
    the first threshold with full recall) draw them, recall ascending."""
    fpr = np.r_[0.0, fp / fp[-1]]
    tpr = np.r_[0.0, tp / tp[-1]]
    full = int(np.searchsorted(tp, tp[-1])) + 1
    recall = np.r_[0.0, tp[:full] / tp[-1]]
    precision = np.r_[1.0, tp[:full] / (tp[:full] + fp[:full])]
    return fpr, tpr, recall, precision


def curves_figures(y, mask, proba, labels, per_label: list[dict], min_cell,
                   max_labels: int = 12) -> tuple[str, str, list[str]]:
    """ROC and PR figures: micro, macro (mean of per-label curves on a common grid) and per label (the
    most frequent `max_labels` of those with enough patients; the legend says how many there are). Returns
    the two PNGs and the labels left out of the per-label curves because of small cells. `per_label`:
    evaluate_predictions' rows of these tables (known, positives, positive_patients per label)."""
    plt = _plt()
    support = np.array([r["positives"] for r in per_label], dtype=np.int64)
    n_known = np.array([r["known"] for r in per_label], dtype=np.int64)
    n_pat = np.array([r["positive_patients"] for r in per_label], dtype=np.int64)
    # Labels with both classes among their known elements and positives from at least `min_cell` patients.
    shown = [int(j) for j in np.flatnonzero((support > 0) & (support < n_known) & (n_pat >= min_cell))]
    shown_set = set(shown)
    left_out = [labels[j] for j in np.flatnonzero(support > 0) if j not in shown_set]
    per = set(sorted(shown, key=lambda j: (-support[j], j))[:max_labels])
    grid = np.linspace(0, 1, 201)
    interp: dict[str, list] = {"roc": [], "pr": []}
    drawn: dict[str, list] = {"roc": [], "pr": []}
    for j, tp, fp in label_curves(y, mask, proba, shown):
        fpr, tpr, rec, prec = roc_pr_points(tp, fp)
        interp["roc"].append(np.interp(grid, fpr, tpr))
        interp["pr"].append(np.interp(grid, rec, prec))
        if j in per:
            drawn["roc"].append((fpr, tpr, labels[j]))
            drawn["pr"].append((rec, prec, labels[j]))
    micro = None
    if 0 < support.sum() < n_known.sum():
        fpr, tpr, rec, prec = roc_pr_points(*pooled_curve_counts(y, mask, proba, int(n_known.sum())))
        micro = {"roc": (fpr, tpr), "pr": (rec, prec)}
    out = []
    for kind in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(6.2, 5))
        for xs, ys, name in drawn[kind]:
            ax.plot(*_thin(xs, ys), lw=0.8, alpha=0.6, label=name)
        if micro is not None:
            ax.plot(*micro[kind], color="black", lw=2, label="micro")
        if interp[kind]:
            ax.plot(grid, np.mean(interp[kind], axis=0), color="black", lw=2, ls="--",
                    label=f"macro ({len(interp[kind])} labels)")
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curves")
        else:
            ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curves")
        if len(shown) > len(per):
            ax.set_title(f"{ax.get_title()}: the {len(per)} most frequent of {len(shown)} labels", fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2, loc="lower right" if kind == "roc" else "upper right")
        else:  # matplotlib warned "No artists with labels found to put in legend" on the terminal
            ax.text(0.5, 0.5, "no curve: every known entry is positive, or none is", ha="center", va="center",
                    transform=ax.transAxes)
        out.append(_png(fig))
    return out[0], out[1], left_out


def calibration_figure(y, mask, proba, n_bins: int = 10) -> str:
    plt = _plt()
    count, sum_p, sum_y, _ = calibration_sums(y, mask, proba, n_bins)
    mean_p, mean_y = sum_p / np.maximum(count, 1), sum_y / np.maximum(count, 1)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6.2, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    nz = count > 0
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
    ax.plot(mean_p[nz], mean_y[nz], marker="o")
    ax.set(ylabel="observed frequency", title="Calibration (all known label entries)")
    ax2.bar((np.arange(n_bins) + 0.5) / n_bins, count, width=1 / n_bins * 0.9)
    ax2.set(xlabel="predicted probability", ylabel="entries", yscale="log")
    return _png(fig)


def recall_figure(y, mask, proba, ks=(1, 2, 3, 5, 10, 15, 20)) -> tuple[str, list]:
    plt = _plt()
    ks = [k for k in ks if k <= y.shape[1]] or [1]
    values = list(recall_at_ks(y, mask, proba, ks).values())
    fig, ax = plt.subplots(figsize=(6.2, 3.5))
    ax.plot(ks, [v if v is not None else np.nan for v in values], marker="o")
    ax.set(xlabel="k (top-k labels per prediction time)", ylabel="recall@k", ylim=(0, 1.02), title="Recall@k")
    return _png(fig), list(zip(ks, values))


def history_figure(history: dict) -> str | None:
    if not history or not history.get("train_loss"):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 3.5))
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], marker="o", label="training")
    if history.get("val_loss"):
        ax.plot(np.arange(1, len(history["val_loss"]) + 1), history["val_loss"], marker="o", label="validation")
        ax.axvline(history.get("best_epoch", 0) + 1, color="grey", ls=":", label="best epoch (kept)")
    ax.set(xlabel="epoch", ylabel="masked BCE per known entry", title="Training curves")
    ax.legend()
    return _png(fig)


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}table.sortable th{cursor:pointer;background:#f4f4f4}
figure{display:inline-block;margin:.5em}figcaption{font-size:.8em;color:#666;text-align:center}
.note{color:#666;font-size:.9em}.warning{color:#a15c00}"""

SORT_JS = """document.querySelectorAll('table.sortable').forEach(function(t){
 t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
  var b=t.tBodies[0],r=Array.from(b.rows),asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
  r.sort(function(x,y){var a=x.cells[i].textContent.replace(/,/g,''),c=y.cells[i].textContent.replace(/,/g,'');
   var p=parseFloat(a),q=parseFloat(c);if(isNaN(p))p=-1;if(isNaN(q))q=-1;
   if(isNaN(parseFloat(a))&&isNaN(parseFloat(c)))return asc?a.localeCompare(c):c.localeCompare(a);
   return asc?p-q:q-p;});r.forEach(function(x){b.appendChild(x);});});});});"""


def build_report(*, title: str, samples, proba: np.ndarray, labels: list[str], thresholds, store=None,
                 history: dict | None = None, update_report: dict | None = None, model_info: dict | None = None,
                 excluded: dict | None = None, excluded_names: dict | None = None, min_cell: int = DEFAULT_MIN_CELL,
                 explanations: list[dict] | None = None, descriptions: dict[str, str] | None = None,
                 bootstrap_draws: int = BOOTSTRAP_DRAWS, ensemble: dict | None = None,
                 warnings: list[str] | None = None) -> str:
    """The report as one HTML string. `samples` is a tasks.task.Samples (y, mask, history, row, time,
    n_visits, counts); `proba` [samples, labels]; `descriptions` label -> readable name, shown beside it.
    The per-label table's AUROC and AUPRC carry 95% intervals over `bootstrap_draws` resamplings of the
    patients (seed 0; 0: none). `ensemble` (an `auto` model): its weights line and each member's macro rows.
    `warnings`: what the input made the run do without, in words (the store's), noted under the cohort."""
    from ehrdx.evaluate.metrics import evaluate_samples

    # The tables as index lists (data/sparse.py), read a block of labels or rows at a time: no [S, L] copy.
    y, mask, new_mask, groups = samples.y_bits, samples.mask_bits, samples.train_mask_bits(True), samples.row
    result = evaluate_samples(samples, proba, labels, thresholds, descriptions)
    released = suppress_small_cells({"test": result["all"], "test_new_onset": result["new_onset"],
                                     "test_by_prior_visits": result["by_prior_visits"]}, min_cell)
    note = (f'<p class="note">Generated {datetime.now(UTC).isoformat(timespec="seconds")} by ehrdx. Cells built '
            f"from fewer than {min_cell} patients are suppressed. No patient identifiers are included.</p>")
    parts = [f"<h1>{html.escape(title)}</h1>", note]
    # -- cohort
    parts.append("<h2 id='cohort'>Cohort</h2>")
    summary = [["patients", len(np.unique(groups))], ["prediction times", len(samples)],
               ["labels", len(labels)], ["known (sample, label) entries", result["all"]["n_known_elements"]],
               ["unknown entries (masked: censored, not yet defined, not new onset)",
                result["all"]["n_masked_elements"]]]
    names = excluded_names or {}  # what a count counts, where it has names (e.g. the ignored columns)
    counts = {**(excluded or {}), **samples.counts}
    absent = [k[len(NOT_IN_MODEL):] for k in counts if k.startswith(NOT_IN_MODEL)]  # one key per label: one row
    summary += [[k.replace("_", " ") + (f" ({some_names(names[k])})" if names.get(k) else ""), v]
                for k, v in counts.items() if not k.startswith(NOT_IN_MODEL)]
    if absent:
        summary.append([f"labels recorded in the data, not among the model's labels ({some_names(absent)}): left out",
                        len(absent)])
    if model_info:
        summary = [[k, v] for k, v in model_info.items()] + summary
    parts.append(_table(["", "count"], summary))
    # what the terminal and metrics.json say about the input, said where the page is shared too
    parts += [f"<p class='note warning'>{html.escape(text)}</p>" for text in warnings or []]
    shown, hidden = most_positive(released["test"]["per_label"], REPORT_LABELS)
    more = (f"<p class='note'>The {len(shown)} labels with the most positives of {len(labels)}; "
            f"{html.escape(more_labels_note(hidden, 'metrics.json (ehrdx train, ehrdx evaluate --out)'))}.</p>"
            if hidden else "")
    freq = []
    for row in (released["test"]["per_label"][j] for j in shown):
        freq.append([row["label"], row.get("description"), row["positives"], row["positive_patients"],
                     row["prevalence"]])
    parts.append("<h3>Label frequencies</h3>" + _table(["label", "description", "positive prediction times",
                                                        "positive patients", "prevalence"], freq, sortable=True,
                                                       cls="labelfreq") + more)
    # -- headline
    head_rows = []
    for key in ("macro_auroc", "micro_auroc", "macro_auprc", "micro_auprc", "f1_micro", "recall_at_5",
                "recall_at_10", "recall_at_20", "brier", "ece"):
        head_rows.append([key, released["test"].get(key), released["test_new_onset"].get(key)])
    parts.append("<h2 id='metrics'>Metrics</h2>" + _table(["metric", "all labels", "new onset"], head_rows))
    if ensemble:  # every candidate on these samples, beside the ensemble, and how it weighs them
        rows = [*ensemble["rows"], ["ensemble (auto)"] + [released[k].get(f"macro_{m}") for k in
                                                           ("test", "test_new_onset") for m in ("auroc", "auprc")]]
        parts.append("<h3>Ensemble members</h3>" + _table(["model", "macro AUROC", "macro AUPRC", "new-onset AUROC",
                                                            "new-onset AUPRC"], rows) +
                     f"<p class='note'>{html.escape(ensemble['weights'])}.</p>")
    # -- curves
    roc, pr, left_out = curves_figures(y, mask, proba, labels, result["all"]["per_label"], min_cell)
    parts.append("<h2 id='curves'>ROC and precision-recall curves</h2>" + _img(roc, "ROC curves") + _img(pr, "PR curves"))
    if left_out:  # the first names only: thousands of labels on few patients would be a page of names
        more = f" and {len(left_out) - CURVE_NAMES:,} more" if len(left_out) > CURVE_NAMES else ""
        parts.append(f"<p class='note'>No per-label curve for {len(left_out):,} label(s) (fewer than {min_cell} "
                     f"patients, or one class only): {html.escape(', '.join(left_out[:CURVE_NAMES]))}{more}. Micro "
                     "and macro include them.</p>")
    parts.append("<h2 id='calibration'>Calibration</h2>" + _img(calibration_figure(y, mask, proba), "Calibration"))
    rk, rk_values = recall_figure(y, mask, proba)
    parts.append("<h2 id='recall'>Recall@k</h2>" + _img(rk, "Recall at k") +
                 _table(["k", "recall@k"], [[k, v] for k, v in rk_values]))
    # -- per label
    per, cols = [], np.asarray(shown, dtype=np.int64)
    if bootstrap_draws and len(cols):  # the shown labels' columns alone
        y_cols, p_cols = label_columns(y, cols), np.asarray(proba[:, cols])
        ci = {part: bootstrap_label_intervals(y_cols, label_columns(m, cols), p_cols, groups, bootstrap_draws)
              for part, m in (("all", mask), ("new", new_mask))}
    else:
        ci = {}
    for i, j in enumerate(shown):
        a, n = released["test"]["per_label"][j], released["test_new_onset"]["per_label"][j]
        at = a.get("tuned") or a.get("threshold_0.5") or {}
        per.append([a["label"], a.get("description"), a["positives"], a["positive_patients"],
                    with_interval(a, ci.get("all"), "auroc", i), with_interval(a, ci.get("all"), "auprc", i),
                    at.get("precision"), at.get("recall"), at.get("f1"), n["positives"],
                    with_interval(n, ci.get("new"), "auroc", i), with_interval(n, ci.get("new"), "auprc", i),
                    a["status"]])
    parts.append("<h2 id='per-label'>Per label</h2><p class='note'>Click a column to sort (support, AUPRC, ...). "
                 "Precision, recall and F1 at the thresholds tuned on validation." +
                 (f" AUROC and AUPRC with a 95% interval over {bootstrap_draws} resamplings of the patients (seed 0): "
                  "a label with few positive patients has a wide one." if ci else "") + "</p>" +
                 _table(["label", "description", "support", "patients", "AUROC", "AUPRC", "precision", "recall", "F1",
                         "new-onset support", "new-onset AUROC", "new-onset AUPRC", "status"], per, sortable=True,
                        cls="perlabel") + more)
    # -- by prior visits
    vis = [[r["prior_visits"], r["patients"], r["samples"], r["all"]["macro_auroc"], r["all"]["macro_auprc"],
            r["new_onset"]["macro_auroc"], r["new_onset"]["macro_auprc"]] for r in released["test_by_prior_visits"]]
    if vis:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6.2, 3.5))
        ok = [r for r in vis if isinstance(r[3], float)]
        ax.plot([r[0] for r in ok], [r[3] for r in ok], marker="o", label="macro AUROC")
        ax.plot([r[0] for r in ok], [r[4] for r in ok], marker="o", label="macro AUPRC")
        ax.set(xlabel="prior visits", ylim=(0, 1), title="By number of prior visits")
        ax.legend()
        parts.append("<h2 id='by-visits'>By number of prior visits</h2>" + _img(_png(fig), "By prior visits") +
                     _table(["prior visits", "patients", "prediction times", "macro AUROC", "macro AUPRC",
                             "new-onset AUROC", "new-onset AUPRC"], vis))
    # -- fairness
    if store is not None:
        sex, band = sex_and_age(store, samples)
        heads = ["group", "patients", "prediction times", "macro AUROC", "macro AUPRC", "new-onset AUROC",
                 "new-onset AUPRC"]
        sex_rows = subgroup_rows(y, mask, proba, groups, new_mask, sex, sorted(set(sex)), min_cell)
        age_rows = subgroup_rows(y, mask, proba, groups, new_mask, band, [b[2] for b in AGE_BANDS] + ["unknown"],
                                 min_cell)
        parts.append("<h2 id='fairness'>By sex and age band</h2><p class='note'>The same model on each group; a gap "
                     "between groups is a question to ask of the model and the data. Age at the prediction "
                     "time.</p><h3>Sex</h3>" + _table(heads, sex_rows) + "<h3>Age band</h3>" + _table(heads, age_rows))
    # -- training
    fig = history_figure(history or {})
    if fig:
        parts.append("<h2 id='training'>Training</h2>" + _img(fig, "Training curves"))
    # -- update
    if update_report:
        rep = suppress_small_cells(update_report, min_cell)
        rows = [[r["label"], r.get("description"), "new" if r["new"] else "old", r.get("introduced_at"),
                 r.get("train_positive_patients"), r.get("train_positives"), r.get("test_positives"),
                 r.get("auroc_before"), r.get("auroc_after"), r.get("auprc_before"), r.get("auprc_after")]
                for r in rep.get("per_label", [])]
        few = "".join(f"<p class='note'><b>{html.escape(w['label'])}</b>: {_fmt(w['train_positive_patients'])} "
                      f"positive training patients, fewer than {w['minimum']}: its results rest on too few patients "
                      "to trust (see its interval in the per-label table).</p>" for w in few_positive_labels(rep))
        parts.append("<h2 id='update'>Labels added by ehrdx update: old vs new</h2>" + few +
                     _table(["label", "description", "", "introduced", "train positive patients",
                             "train positive times", "test positives", "AUROC before", "AUROC after",
                             "AUPRC before", "AUPRC after"], rows, sortable=True, cls="update") +
                     f"<p>Old labels macro AUROC {_fmt(rep.get('old_labels_macro_auroc_before'))} before, "
                     f"{_fmt(rep.get('old_labels_macro_auroc_after'))} after; new labels macro AUROC "
                     f"{_fmt(rep.get('new_labels_macro_auroc'))}.</p>")
    # -- explanations for chosen patients
    if explanations:
        parts.append("<h2 id='examples'>Why: examples for chosen patients</h2><p class='note'>Integrated gradients "
                     "over each past event's inputs (see ehrdx explain); attributions in logit units add up to the "
                     "score with the events minus the score without them. Patients are numbered in the order "
                     "they were given; no identifier is written.</p>")
        for n, ex in enumerate(explanations, 1):
            exact = "prediction_time" in ex  # without ehrdx --show-ids: days from the prediction, rounded values
            when = (f" on {datetime.fromtimestamp(ex['prediction_time'], UTC).strftime('%Y-%m-%d')}," if exact
                    else "")
            parts.append(f"<h3>Example {n}: prediction{when} after {ex['prior_visits']} visit(s)</h3>")
            for lab in ex["labels"]:
                rows = [[ev["visit"], datetime.fromtimestamp(ev["time"], UTC).strftime("%Y-%m-%d") if exact
                         else f"{ev['days_from_prediction']} d", ev["code"], ev["value"], ev["attribution"]]
                        for ev in lab["events"]]
                parts.append(f"<p><b>{html.escape(lab['label'])}</b>: p = {lab['probability']:.3f}</p>" +
                             _table(["visit", "date" if exact else "days", "code", "value", "attribution"], rows))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n<script>{SORT_JS}</script></body></html>\n")
