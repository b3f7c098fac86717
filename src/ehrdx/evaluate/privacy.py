"""Small-cell suppression for reports that leave the machine (terminal output, metrics.json).

Clinical statistics are commonly released only for cells built from at least 10 patients, so that no
one can be singled out. A per-label row whose positives come from 1 to `min_cell - 1` patients keeps
its label name but loses its counts (shown as "<10") and every metric computed from it (None); a
row of the by-prior-visits table with fewer than `min_cell` patients loses its metrics. Macro
averages still include those labels; where exactly one label in an average is hidden, the average and
the labels shown would give it away, so the next smallest label is hidden too (complementary
suppression); where no label is shown at all (however many are hidden), every average over the labels
(macro, micro, calibration, recall@k, the metrics at thresholds) is hidden.
Data-quality counts (rows excluded, unseen codes) are not suppressed: they describe the user's own
input, and anything excluded must be reported.
"""

from __future__ import annotations

import copy

DEFAULT_MIN_CELL = 10
_METRICS = ("auroc", "auprc", "prevalence", "auroc_before", "auroc_after", "auprc_before", "auprc_after",
            "tuning_auprc", "tuning_auprc_equal")  # tuning_*: auto's weights per label (metrics.json `ensemble`)
_COUNTS = ("positives", "positive_patients", "test_positives", "test_positive_patients", "train_positives",
           "train_positive_patients", "tuning_positive_patients")


_MACROS = {"all": ("macro_auroc", "macro_auprc"), "new": ("new_labels_macro_auroc", "new_labels_macro_auprc"),
           "old": ("old_labels_macro_auroc_after", "old_labels_macro_auprc_after", "old_labels_macro_auroc_before",
                   "old_labels_macro_auprc_before")}


# Averages over every label beside the macro ones (micro AUROC / AUPRC, calibration, recall@k, F1 and the
# metrics at thresholds): with no label shown they are the hidden label's own numbers.
_AGGREGATES = ("micro_auroc", "micro_auprc", "brier", "ece", "f1_micro", "f1_macro", "element_accuracy")


def _blank_aggregates(node: dict) -> None:
    for key, value in list(node.items()):
        if key in _AGGREGATES or key.startswith("recall_at_"):
            node[key] = None
        elif isinstance(value, dict) and any(k in value for k in ("precision_micro", "recall_micro", "f1_micro")):
            node[key] = {k: (v if "threshold" in k else None) for k, v in value.items()}


def _in_group(row: dict, group: str) -> bool:
    if group == "all":
        return True
    return bool(row.get("new")) == (group == "new")


def suppress_small_cells(metrics: dict, min_cell: int = DEFAULT_MIN_CELL) -> dict:
    """A copy of `metrics` with small cells suppressed (min_cell <= 1: unchanged), and a record
    `metrics["small_cells"]` of the rule and how many cells it hid."""
    if min_cell <= 1:
        return metrics
    out = copy.deepcopy(metrics)
    hidden = {"per_label_rows": 0, "by_prior_visits_rows": 0}
    small = f"<{min_cell}"

    def walk(node):
        if isinstance(node, dict):
            suppressed_scored: dict[str, int] = {}  # scored rows hidden, by the macro average they count in
            for row in node.get("per_label", []) if isinstance(node.get("per_label"), list) else []:
                n = row.get("positive_patients", row.get("test_positive_patients", row.get(
                    "positives", row.get("tuning_positive_patients"))))
                train_n = row.get("train_positive_patients", row.get("train_positives"))  # patients where known
                if (isinstance(n, int) and 0 < n < min_cell) or (isinstance(train_n, int) and 0 < train_n < min_cell):
                    scored = row.get("auroc") is not None or row.get("auroc_after") is not None
                    group = ("new" if row.get("new") else "old") if "new" in row else "all"
                    suppressed_scored[group] = suppressed_scored.get(group, 0) + int(scored)
                    for key in _COUNTS:
                        if key in row:
                            row[key] = small
                    for key in _METRICS:
                        if key in row:
                            row[key] = None
                    for key, value in list(row.items()):
                        if isinstance(value, dict) and "precision" in value:  # metrics at a threshold
                            row[key] = {"threshold": value.get("threshold"), "precision": None, "recall": None,
                                        "f1": None}
                    row["status"] = f"suppressed: fewer than {min_cell} patients"
                    hidden["per_label_rows"] += 1
            # An average over hidden labels only rests on small cells alone (a 1-patient test set hides every
            # label, however many): hidden with them. A macro average with exactly one hidden label among
            # shown ones would give that label away (from the average and the labels shown): the next
            # smallest label shown is hidden too (complementary suppression), so the average can stay.
            for group, k in suppressed_scored.items():
                if k == 0:
                    continue
                shown = [r for r in node["per_label"] if _in_group(r, group)
                         and (r.get("status") == "ok" or ("status" not in r and r.get("auroc_after") is not None))
                         and isinstance(r.get("positive_patients", r.get("test_positive_patients")), int)]
                if not shown:
                    for key in _MACROS[group]:
                        if key in node:
                            node[key] = None
                    if group == "all":  # nothing shown: every average over the labels is the hidden ones'
                        _blank_aggregates(node)
                    continue
                if k != 1:
                    continue
                extra = min(shown, key=lambda r: r.get("positive_patients", r.get("test_positive_patients")))
                for key in _METRICS:
                    if key in extra:
                        extra[key] = None
                for key, value in list(extra.items()):
                    if isinstance(value, dict) and "precision" in value:
                        extra[key] = {"threshold": value.get("threshold"), "precision": None, "recall": None,
                                      "f1": None}
                extra["status"] = "suppressed: complementary (keeps a hidden label from being derived)"
                hidden["complementary_rows"] = hidden.get("complementary_rows", 0) + 1
            for key, value in node.items():
                if key in ("test_by_prior_visits", "by_prior_visits") and isinstance(value, list):
                    for row in value:
                        if isinstance(row.get("patients"), int) and row["patients"] < min_cell:
                            row["patients"] = row["samples"] = small
                            for part in ("all", "new_onset"):
                                if isinstance(row.get(part), dict):
                                    row[part] = dict.fromkeys(row[part])
                            hidden["by_prior_visits_rows"] += 1
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(out)
    # `update --compare`'s rows for the update and for unprotected fine-tuning give only the macro averages,
    # over the same labels and test patients as the report's own: hidden where the report's are.
    for row in out.get("compare", {}).values() if isinstance(out.get("compare"), dict) else ():
        if isinstance(row, dict) and "per_label" not in row:
            for key in (*_MACROS["new"], *_MACROS["old"]):
                if key in row and out.get(key, 0) is None and metrics.get(key) is not None:
                    row[key] = None
    out["small_cells"] = {"min_patients": min_cell, **hidden}
    return out
