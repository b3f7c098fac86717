"""The tables and the figure of benchmarks/bench_few_shot.py, from its results.json (mean and standard
deviation over seeds; issue 16's targets: share of the all-positives AUROC, difference from the count GBM)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def summarise(runs: list[dict], metric: tuple[str, str]) -> dict:
    """(label, arm, k) -> (mean, sd, n) over seeds of one metric, e.g. ("new_onset", "auroc")."""
    cells: dict[tuple, list[float]] = {}
    for r in runs:
        v = r[metric[0]][metric[1]]
        if v is not None:
            cells.setdefault((r["label"], r["arm"], r["k"]), []).append(v)
    return {key: (float(np.mean(v)), float(np.std(v)), len(v)) for key, v in cells.items()}


def markdown(results: dict) -> str:
    lines = []
    for name, entry in results["sets"].items():
        ks = [k for k in results["args"]["ks"]] + ["all"]
        arms = list(dict.fromkeys(r["arm"] for r in entry["runs"]))
        for metric in (("new_onset", "auroc"), ("new_onset", "auprc"), ("all", "auroc"), ("all", "auprc")):
            table = summarise(entry["runs"], metric)
            title = f"{'new-onset' if metric[0] == 'new_onset' else 'all'} {metric[1].upper()}"
            lines += ["", (f"**{name}**: test {title}, mean ± sd over {results['args']['seeds']} seeds "
                           f"({entry['patients']['test']:,} test patients)"), "",
                      "| label (train positive patients) | arm | " + " | ".join(f"k={k}" for k in ks) + " |",
                      "|---|---|" + "---|" * len(ks)]
            for label in entry["few_shot_labels"]:
                n = entry["label_positive_patients"][label]["train"]
                for arm in arms:
                    cells = [table.get((label, arm, k)) for k in ks]
                    lines.append(f"| {label} ({n}) | {arm} | " + " | ".join(
                        "–" if c is None else f"{c[0]:.3f}" + (f" ± {c[1]:.3f}" if c[2] > 1 else "")
                        for c in cells) + " |")
            for arm in arms:  # the mean over labels of the per-label means
                means = [[table[(lab, arm, k)][0] for lab in entry["few_shot_labels"] if (lab, arm, k) in table]
                         for k in ks]
                lines.append(f"| mean of labels | {arm} | " + " | ".join(
                    f"{np.mean(m):.3f}" if m else "–" for m in means) + " |")
        lines += targets(entry, results["args"]["ks"])
        old = [r["old_labels_macro_auroc_after"] - r["old_labels_macro_auroc_before"] for r in entry["runs"]
               if "old_labels_macro_auroc_after" in r and r["old_labels_macro_auroc_after"] is not None]
        if old:
            lines += ["", (f"Old labels' macro AUROC through the updates: change from {min(old):+.4f} to "
                           f"{max(old):+.4f} ({len(old)} updates).")]
    return "\n".join(lines).strip()


def targets(entry: dict, ks: list[int]) -> list[str]:
    """Issue 16's targets, new-onset AUROC averaged over labels (each label's mean over seeds): each arm's
    share of its own AUROC with all positives, and its difference from gbm-counts at the same k."""
    table = summarise(entry["runs"], ("new_onset", "auroc"))
    arms = list(dict.fromkeys(r["arm"] for r in entry["runs"]))
    labels = entry["few_shot_labels"]
    lines = ["", ("New-onset AUROC as a share of the same arm's with all positives / minus gbm-counts at the same k "
                  "(mean over labels):"), "", "| arm | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for arm in arms:
        cells = []
        for k in ks:
            share = [table[(lab, arm, k)][0] / table[(lab, arm, "all")][0] for lab in labels
                     if (lab, arm, k) in table and (lab, arm, "all") in table]
            diff = [table[(lab, arm, k)][0] - table[(lab, "gbm-counts", k)][0] for lab in labels
                    if (lab, arm, k) in table and (lab, "gbm-counts", k) in table]
            cells.append(f"{100 * np.mean(share):.0f}% / {np.mean(diff):+.3f}" if share and diff else "–")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, lab) for name, e in results["sets"].items() for lab in e["few_shot_labels"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (name, label) in zip(axes[0], panels):
        entry = results["sets"][name]
        table = summarise(entry["runs"], ("new_onset", "auroc"))
        for i, arm in enumerate(dict.fromkeys(r["arm"] for r in entry["runs"])):
            ks = [k for k in results["args"]["ks"] if (label, arm, k) in table]
            if ks:
                mean, sd = np.array([table[(label, arm, k)][:2] for k in ks]).T
                ax.errorbar(ks, mean, yerr=sd, marker="o", capsize=3, label=arm, color=f"C{i}")
            if (label, arm, "all") in table:
                ax.axhline(table[(label, arm, "all")][0], color=f"C{i}", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(results["args"]["ks"], [str(k) for k in results["args"]["ks"]])
        ax.set(xlabel="positive training patients (k)", ylabel="test new-onset AUROC",
               title="\n".join(x for x in (f"{label} ({entry['label_positive_patients'][label]['train']} train pos.)",
                                           (entry.get("descriptions", {}).get(label) or "")[:40], name) if x))
        ax.axhline(0.5, color="grey", lw=0.5)
    axes[0][0].legend(fontsize=7, title="dotted: all positives", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
