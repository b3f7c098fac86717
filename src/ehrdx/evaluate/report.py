"""Readable terminal report of a metrics dict (rich tables)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ehrdx.data.table_cells import some_names
from ehrdx.data.windows import CONTEXT_BOUNDS_NOTHING
from ehrdx.evaluate.metrics import HEADLINE
from ehrdx.sources.base import NOT_IN_MODEL
from ehrdx.tasks.positives import INTRODUCTION_MASKED
from ehrdx.tasks.scan import LABEL_CODE_NOTES

TERMINAL_LABELS = 30  # per-label rows printed; the rest are in metrics.json (said below the table)
# Positive training patients below which a new label's test AUROC/AUPRC are not to be trusted: the update
# report warns under it. From benchmarks/bench_few_shot.py (BENCHMARKS.md, "Few-shot new labels"; built-in
# cohort, 3,000 patients, 2 labels x 3 seeds): a label added by `ehrdx update` from k positive patients
# reached 83, 89, 91, 94 and 98% of the new-onset AUROC it reached with all of them at k = 4, 8, 16, 32 and
# 64, with a spread over which k patients of up to +-0.08 AUROC; on Eunomia (2 labels x 3 seeds) 54, 80,
# 94, 98 and 99% (at k = 4 below chance on both labels: the probe's fixed penalty C = 1; with C chosen on
# the validation patients, train/probe.py, 87, 86, 93, 96 and 97% of an all-positives AUROC that rose from
# 0.881 to 0.899). Revisit with the pretrained-encoder arm.
MIN_TRAIN_POSITIVE_PATIENTS = 32
EXTRA = ("brier", "ece", "recall_at_1", "recall_at_3")
AT_THRESHOLD = ("element_accuracy", "subset_accuracy", "hamming_loss", "f1_micro", "f1_macro", "f1_samples")


def format_value(v) -> str:
    """A metric as the reports print it: floats to 3 decimals, None as '-'."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def most_positive(per_label: list[dict], limit: int | None) -> tuple[list[int], int]:
    """Indices of the `limit` labels with the most positives (then by name; a suppressed count "<10",
    1 to 9 patients' positives, sorts below every count shown and above 0), and how many labels that leaves out."""
    def key(j: int):
        n = per_label[j].get("positives")
        return (-(n if isinstance(n, int) else 0.5 if isinstance(n, str) else 0), str(per_label[j]["label"]))

    order = sorted(range(len(per_label)), key=key)
    shown = order if limit is None else order[:limit]
    return shown, len(per_label) - len(shown)


def format_interval(value, low, high) -> str:
    """A metric with its interval, e.g. '0.812 (0.751-0.862)'; the value alone where there is no interval."""
    if value is None or low is None or high is None or math.isnan(low) or math.isnan(high):
        return format_value(value)
    return f"{value:.3f} ({low:.3f}–{high:.3f})"


def few_positive_labels(report: dict, minimum: int = MIN_TRAIN_POSITIVE_PATIENTS) -> list[dict]:
    """The new labels of an update report learned from fewer than `minimum` positive training patients,
    fewest first: what the update report warns about. Give the report as released: a count suppressed as a
    small cell ("<10") is below any minimum of at least 10."""
    out = []
    for row in report.get("per_label", []):
        n = row.get("train_positive_patients")
        if not row.get("new") or n is None:
            continue
        if isinstance(n, str):  # "<10": fewer than 10
            below, order = int(n.lstrip("<")) <= minimum, -1
        else:
            below, order = n < minimum, n
        if below:
            out.append({"label": row["label"], "train_positive_patients": n,
                        "train_positives": row.get("train_positives"), "minimum": minimum, "_order": order})
    out.sort(key=lambda x: (x["_order"], x["label"]))
    return [{k: v for k, v in x.items() if k != "_order"} for x in out]


def more_labels_note(hidden: int, where: str = "metrics.json") -> str:
    return (f"{hidden:,} more label{'s' if hidden != 1 else ''} with fewer positives not shown: every label is "
            f"in {where}") if hidden else ""


def has_descriptions(per_label: list[dict]) -> bool:
    return any(row.get("description") for row in per_label)


def description_cell(row: dict, described: bool) -> list[Text]:
    """The label's description as a cell (plain text: brackets in it are not markup), when the table has
    a description column."""
    return [Text(row.get("description") or "")] if described else []


def print_titled(console: Console, table: Table) -> None:
    """Print a table; a title wider than its columns goes on a line of its own (rich wraps a title to the
    table's width: one model column made a six-line title)."""
    title = table.title
    if isinstance(title, str) and Text.from_markup(title).cell_len > console.measure(table).maximum:
        table.title = None
        console.print(f"[italic]{title}[/italic]")
    console.print(table)


def print_report(console: Console, metrics: dict, title: str = "Test set", scope: str = "the test set") -> None:
    """`scope`: the patients evaluated, as the per-label table and the macro-average note name them."""
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
        t.add_row(key, format_value(test.get(key)), *([format_value(oracle.get(key))] if oracle else []))
    for thr in ("threshold_0.5", "tuned"):
        if thr in test:
            for key in AT_THRESHOLD:
                t.add_row(f"{key} @ {thr.replace('threshold_', '')}", format_value(test[thr][key]),
                          *([format_value(oracle.get(thr, {}).get(key))] if oracle else []))
    print_titled(console, t)

    shown, hidden = most_positive(test["per_label"], TERMINAL_LABELS)
    p = Table(title=f"Per label ({scope.removeprefix('the ')}; precision/recall/F1 at tuned thresholds"
                    + (f"; the {len(shown)} with the most positives of {len(shown) + hidden})" if hidden else ")"))
    described = has_descriptions(test["per_label"])
    for col in ("label", *(["description"] if described else []), "pos", "prev", "AUROC", "AUPRC", "thr", "prec",
                "recall", "F1", "status"):
        p.add_column(col, justify="left" if col in ("label", "description", "status") else "right",
                     no_wrap=col == "label")
    for row in (test["per_label"][j] for j in shown):
        at = row.get("tuned", row.get("threshold_0.5"))
        p.add_row(escape(row["label"]), *description_cell(row, described), str(row["positives"]), format_value(row["prevalence"]), format_value(row["auroc"]),
                  format_value(row["auprc"]), format_value(at["threshold"]), format_value(at["precision"]), format_value(at["recall"]),
                  format_value(at["f1"]), row["status"].replace(" in this set", ""))
    console.print(p)
    if hidden:
        console.print(more_labels_note(hidden))
    print_exclusions(console, metrics, "test" if scope == "the test set" else scope)
    print_one_class(console, metrics)
    left_out = test.get("labels_left_out_of_macro") or []
    if left_out:
        console.print(f"[yellow]left out of macro averages (no positives or no negatives in {scope}): "
                      f"{escape(', '.join(left_out))}[/yellow]")


def print_labels_only_in_validation(console: Console, metrics: dict) -> None:
    """Labels recorded in validation patients and in no training patient: the model has no output for them, which
    metrics.json keeps (train_summary.val.excluded) and the terminal says, as it says the test part's."""
    val = metrics.get("train_summary", {}).get("val", {}).get("excluded", {})
    absent = {what: n for what, n in val.items() if what.startswith(NOT_IN_MODEL)}
    for line in count_lines(absent, part="validation"):
        console.print(f"[yellow]{escape(line)}[/yellow]")


def print_one_class(console: Console, metrics: dict) -> None:
    """Labels the training samples give one class only (train_summary): the model cannot learn them."""
    summary = metrics.get("train_summary", {})
    counts = summary.get("labels_with_one_class_in_training_counts", {})  # absent in models saved before it
    for what, names in summary.get("labels_with_one_class_in_training", {}).items():
        n = counts.get(what, len(names))
        more = f" and {n - len(names):,} more" if n > len(names) else ""
        console.print(f"[yellow]{n:,} label(s) with {what.replace('_', ' ')} among the training samples (not "
                      f"learnable: a constant score): {escape(', '.join(names))}{more}[/yellow]")


def print_exclusions(console: Console, metrics: dict, evaluated: str = "test") -> None:
    """Everything not used as-is is counted: unseen codes/categories, labels outside the vocabulary.
    `evaluated`: what the patients evaluated are called ("this table" for evaluate, which has no test part)."""
    parts = {"validation": metrics.get("train_summary", {}).get("val", {}),
             evaluated: metrics.get("test", {}).get("summary", {})}
    for part, summary in parts.items():
        for kind, n in summary.get("unknown", {}).items():
            console.print(f"[yellow]{part}: {n:,} {escape(kind.replace(':', ' '))} value(s) unseen in training -> "
                          f"unknown bucket[/yellow]")
        for label, n in summary.get("labels_not_in_model", {}).items():
            console.print(f"[yellow]{part}: label '{escape(label)}' on {n:,} patient(s) never occurs in training: "
                          f"left out[/yellow]")
    for line in count_lines(metrics.get("excluded", {}), metrics.get("excluded_names", {})):
        console.print(f"[yellow]{escape(line)}[/yellow]")
    print_warnings(console, metrics)


LEFT_OUT = "samples_without_known_labels_left_out"


def _n(value) -> str:
    """A count with thousands separators (a suppressed '<10' or a '?' as it is)."""
    return f"{value:,}" if isinstance(value, int) else str(value)


def count_line(what: str, n, names: list[str] | None = None) -> str:
    """One counted exclusion in words, naming what it counts where that has names (the first few):
    `ignored columns: 7 (unit, ward, a, b, c and 2 more)`."""
    line = f"{what.replace('_', ' ')}: {n:,}" if isinstance(n, int) else f"{what.replace('_', ' ')}: {n}"
    return f"{line} ({some_names(names)})" if names else line


def count_lines(counts: dict, names: dict[str, list[str]] | None = None, part: str = "") -> list[str]:
    """Counted exclusions in words, one line each (`count_line`, after `part: ` where given). The labels of the
    data that the model does not have, counted one key each (`label_not_in_model:E11.2`, kept so in JSON),
    are one sentence naming them."""
    head = f"{part}: " if part else ""
    lines, absent = [], []
    # label entries masked before their labels' introduction, per rule that gave the dates
    # (`...masked:label map`): said within the total's line, not as lines that repeat it
    rules = {what.split(":", 1)[1]: n for what, n in counts.items() if what.startswith(f"{INTRODUCTION_MASKED}:")}
    # the samples without a next visit are among those left out without a known label: one line, not two
    # that read as two drops
    no_next = counts.get("samples_without_next_visit") if LEFT_OUT in counts else None
    for what, n in counts.items():
        if what == "samples_without_next_visit" and no_next is not None:
            continue
        if what == LEFT_OUT and no_next is not None:
            lines.append(head + count_line(what, n) + f" ({no_next:,} of them without a next visit)")
        elif what.startswith(NOT_IN_MODEL):
            absent.append(what[len(NOT_IN_MODEL):])
        elif what == INTRODUCTION_MASKED and rules:
            by = ", ".join(f"{rule} {m:,}" if isinstance(m, int) else f"{rule} {m}" for rule, m in rules.items())
            lines.append(head + count_line(what, n) + f" (introduction dates from: {by})")
        elif what.startswith(f"{INTRODUCTION_MASKED}:") and INTRODUCTION_MASKED in counts:
            continue
        else:
            lines.append(head + count_line(what, n, (names or {}).get(what)))
    if absent:
        lines.append(f"{head}{len(absent):,} label(s) recorded in the data are not among the model's labels: "
                     f"{some_names(absent)} (the model has no output for them: left out)")
    return lines


def print_warnings(console: Console, metrics: dict) -> None:
    """What the input made the run do without (e.g. an unreadable codes.parquet), as metrics.json keeps it."""
    for text in metrics.get("warnings", []):
        console.print(f"[yellow]{escape(text)}[/yellow]")


EVENT_ROWS = ("macro_auroc", "micro_auroc", "macro_auprc", "micro_auprc", "f1_micro", "recall_at_5",
              "recall_at_10", "recall_at_20", "brier", "ece")


def print_events_report(console: Console, metrics: dict, title: str = "Held-out test patients") -> None:
    """Per-prediction-time results: all labels and new onset, beside baselines and the oracle."""
    if "test" not in metrics:
        console.print("[yellow]no test patients: nothing to evaluate[/yellow]")
        print_labels_only_in_validation(console, metrics)
        return
    # the ensemble's members, then the baselines fitted beside the model
    baselines = {**{f"{k} (member)": v for k, v in metrics.get("candidates", {}).items()},
                 **{f"{k} (baseline)": v for k, v in metrics.get("baselines", {}).items()}}
    ts = metrics.get("test_samples", {})
    for mode, key in (("all labels", "test"), ("new onset", "test_new_onset")):
        t = Table(title=f"{title}, {mode}: {_n(ts.get('samples', '?'))} prediction times of "
                        f"{_n(ts.get('patients', '?'))} patients, {len(metrics[key]['per_label']):,} labels")
        t.add_column("metric")
        t.add_column(metrics.get("model", "model"), justify="right")
        for name in baselines:
            t.add_column(name, justify="right")
        oracle_key = key.replace("test", "oracle")
        if oracle_key in metrics:
            t.add_column("oracle (best achievable)", justify="right")
        for row in EVENT_ROWS:
            cells = [format_value(metrics[key].get(row))]
            cells += [format_value(b[key].get(row)) if row in b[key] else "" for b in baselines.values()]
            if oracle_key in metrics:
                cells.append(format_value(metrics[oracle_key].get(row)))
            t.add_row(row, *cells)
        print_titled(console, t)
    if metrics.get("ensemble"):
        console.print(escape(ensemble_line(metrics["ensemble"])))
    left = metrics.get("baselines_left_out")
    if left:
        console.print(f"[yellow]baseline(s) {escape(', '.join(left['names']))} left out: {escape(left['why'])}"
                      "[/yellow]")
    shown, hidden = most_positive(metrics["test"]["per_label"], TERMINAL_LABELS)
    per = Table(title="Per label (all labels; new onset beside"
                      + (f"; the {len(shown)} with the most positives of {len(shown) + hidden})" if hidden else ")"))
    described = has_descriptions(metrics["test"]["per_label"])
    for col in ("label", *(["description"] if described else []), "pos", "AUROC", "AUPRC", "new pos", "new AUROC",
                "new AUPRC", "status"):
        per.add_column(col, justify="left" if col in ("label", "description", "status") else "right")
    for j in shown:
        row, new = metrics["test"]["per_label"][j], metrics["test_new_onset"]["per_label"][j]
        per.add_row(escape(row["label"]), *description_cell(row, described), str(row["positives"]), format_value(row["auroc"]), format_value(row["auprc"]),
                    str(new["positives"]), format_value(new["auroc"]), format_value(new["auprc"]), row["status"].replace(" in this set", ""))
    console.print(per)
    if hidden:
        console.print(more_labels_note(hidden))
    by = metrics.get("test_by_prior_visits") or []
    if by:
        b = Table(title="By number of prior visits")
        for col in ("prior visits", "samples", "macro AUROC", "macro AUPRC", "new-onset AUROC", "new-onset AUPRC"):
            b.add_column(col, justify="right")
        for row in by:
            b.add_row(row["prior_visits"], str(row["samples"]), format_value(row["all"]["macro_auroc"]),
                      format_value(row["all"]["macro_auprc"]), format_value(row["new_onset"]["macro_auroc"]),
                      format_value(row["new_onset"]["macro_auprc"]))
        console.print(b)
    # evaluate names the patients it scored (--split: held_out, all, ...); train's are its test patients
    scored = f"{metrics['split']} patients" if isinstance(metrics.get("split"), str) else "test"
    for line in [*count_lines(metrics.get("excluded", {}), metrics.get("excluded_names", {})),
                 *count_lines(ts.get("excluded", {}), part=scored)]:
        console.print(f"[yellow]{escape(line)}[/yellow]")
    print_labels_only_in_validation(console, metrics)
    print_warnings(console, metrics)
    print_one_class(console, metrics)
    left = metrics.get("train_summary", {}).get("map_labels_left_out")
    if left:
        console.print(f"[yellow]label map labels left out ({escape(left['why'])}): {left['count']:,}: "
                      f"{escape(', '.join(left['labels']))}{' ...' if left['count'] > len(left['labels']) else ''}"
                      "[/yellow]")
    for key in (*LABEL_CODE_NOTES, CONTEXT_BOUNDS_NOTHING):
        missed = metrics.get("train_summary", {}).get(key)
        if missed:
            console.print(f"[yellow]{escape(missed['note'])}[/yellow]")
    dated = metrics.get("train_summary", {}).get("labels_with_introduced_at")
    if dated:
        console.print("labels with an introduced_at (masked before it): "
                      + ", ".join(f"{n} from {rule}" for rule, n in dated.items()))


def ensemble_line(ensemble: dict) -> str:
    """How an ensemble weighed its members: the most common weightings and how many labels each has
    (metrics.json's `ensemble` has every label's weights and why)."""
    rows = [tuple(round(float(w), 2) for w in r["weights"].values()) for r in ensemble["per_label"]]
    counts: dict[tuple, int] = {}
    for r in rows:
        counts[r] = counts.get(r, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    parts = [", ".join(f"{n} {w:g}" for n, w in zip(ensemble["members"], ws) if w) + f" ({k} labels)" for ws, k in top]
    other = len(rows) - sum(k for _, k in top)
    return ("ensemble weights: " + "; ".join(parts) + (f"; other weights ({other} labels)" if other else "")
            + f". Chosen on {ensemble.get('chosen_on', 'the tuning patients')}")


def print_cv(console: Console, result: dict) -> None:
    """Cross-validation's mean and spread of each metric, and what its folds' test metrics left out."""
    for key, s in result["summary"].items():
        if s["mean"] is not None:
            spread = f" ± {s['std']:.3f}" if s["std"] is not None else ""
            console.print(f"  {key:12s} {s['mean']:.3f}{spread}")
    for label, n in result["test_left_out"].get("labels_not_in_model", {}).items():
        console.print(f"[yellow]label '{escape(label)}' on {n:,} patient(s) never occurs in its fold's "
                      f"training: left out of that fold's test metrics[/yellow]")
    for kind, n in result["test_left_out"].get("unknown", {}).items():
        console.print(f"[yellow]test folds: {n:,} {escape(kind.replace(':', ' '))} value(s) unseen in "
                      f"their fold's training -> unknown bucket[/yellow]")
