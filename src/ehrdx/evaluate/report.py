"""Readable terminal report of a metrics dict (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ehrdx.evaluate.metrics import HEADLINE

EXTRA = ("brier", "ece", "recall_at_1", "recall_at_3")
AT_THRESHOLD = ("element_accuracy", "subset_accuracy", "hamming_loss", "f1_micro", "f1_macro", "f1_samples")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def print_report(console: Console, metrics: dict, title: str = "Test set") -> None:
    test = metrics.get("test")
    if test is None:
        console.print("[yellow]no test patients: nothing to evaluate[/yellow]")
        return
    oracle = metrics.get("oracle")
    t = Table(title=f"{title}: {test['n_samples']} patients, {len(test['per_label'])} labels")
    t.add_column("metric")
    t.add_column("model", justify="right")
    if oracle:
        t.add_column("oracle (best achievable)", justify="right")
    for key in (*[k for k in HEADLINE if k != "f1_micro"], *EXTRA):
        t.add_row(key, _fmt(test.get(key)), *([_fmt(oracle.get(key))] if oracle else []))
    for thr in ("threshold_0.5", "tuned"):
        if thr in test:
            for key in AT_THRESHOLD:
                t.add_row(f"{key} @ {thr.replace('threshold_', '')}", _fmt(test[thr][key]),
                          *([_fmt(oracle.get(thr, {}).get(key))] if oracle else []))
    console.print(t)

    p = Table(title="Per label (test set; precision/recall/F1 at tuned thresholds)")
    for col in ("label", "pos", "prev", "AUROC", "AUPRC", "thr", "prec", "recall", "F1", "status"):
        p.add_column(col, justify="left" if col in ("label", "status") else "right", no_wrap=col == "label")
    for row in test["per_label"]:
        at = row.get("tuned", row.get("threshold_0.5"))
        p.add_row(row["label"], str(row["positives"]), _fmt(row["prevalence"]), _fmt(row["auroc"]),
                  _fmt(row["auprc"]), _fmt(at["threshold"]), _fmt(at["precision"]), _fmt(at["recall"]),
                  _fmt(at["f1"]), row["status"].replace(" in this set", ""))
    console.print(p)
    print_exclusions(console, metrics)
    left_out = test.get("labels_left_out_of_macro") or []
    if left_out:
        console.print(f"[yellow]left out of macro averages (no positives or no negatives in the test set): "
                      f"{', '.join(left_out)}[/yellow]")


def print_exclusions(console: Console, metrics: dict) -> None:
    """Everything not used as-is is counted: unseen codes/categories, labels outside the vocabulary."""
    parts = {"validation": metrics.get("train_summary", {}).get("val", {}),
             "test": metrics.get("test", {}).get("summary", {})}
    for part, summary in parts.items():
        for kind, n in summary.get("unknown", {}).items():
            console.print(f"[yellow]{part}: {n:,} {kind.replace(':', ' ')} value(s) unseen in training -> "
                          f"unknown bucket[/yellow]")
        for label, n in summary.get("labels_not_in_model", {}).items():
            console.print(f"[yellow]{part}: label '{label}' on {n:,} patient(s) never occurs in training: "
                          f"left out[/yellow]")
    for what, n in metrics.get("excluded", {}).items():
        console.print(f"[yellow]{what.replace('_', ' ')}: {n}[/yellow]")
