"""Many labels end to end: `--labels prefix:DX//:3` (every ICD-10 category of the generator's codes) trains,
evaluates and renders a report whose per-label tables show the labels with the most positives and say
how many more there are; metrics.json keeps every label. The report reads the sparse tables a block at a
time, never [samples, labels] whole."""

import json
import re

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from ehrdx.cli import app
from ehrdx.data.samples import Samples
from ehrdx.data.sparse import SparseTable
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.evaluate import html, report
from ehrdx.ranking import curve_counts


def test_every_icd10_category_as_a_label_trains_evaluates_and_reports(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "TERMINAL_LABELS", 10)
    monkeypatch.setattr(html, "REPORT_LABELS", 12)
    paths = write_longitudinal(generate_longitudinal(400, seed=3), tmp_path / "c")
    r = CliRunner().invoke(app, ["train", "--meds", str(paths["meds"]), "--labels", "prefix:DX//:3", "--model",
                                 "gru", "--epochs", "1", "--hidden", "16", "--device", "cpu", "--out",
                                 str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    labels = metrics["labels"]
    events = pl.read_parquet(paths["meds"] / "data" / "*" / "*.parquet")
    categories = set(events.filter(pl.col("code").str.starts_with("DX//"))["code"].str.slice(4, 3))
    assert len(labels) >= 30 and set(labels) <= categories and all(len(lab) == 3 for lab in labels)
    assert len(metrics["test"]["per_label"]) == len(labels)
    assert metrics["test"]["labels_in_macro"] > 10 and 0.4 < metrics["test"]["micro_auroc"] <= 1
    hidden = len(labels) - 10
    assert f"{hidden} more labels with fewer positives not shown: every label is in metrics.json" in " ".join(
        r.output.split())

    r = CliRunner().invoke(app, ["--min-cell", "0", "report", "--model", str(tmp_path / "m"), "--meds",
                                 str(paths["meds"]), "--out", str(tmp_path / "r.html"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "r.html").read_text()
    body = text.split('id="perlabel"', 1)[1].split("</table>", 1)[0]
    assert body.count("<tr>") == 12 + 1  # the header and the 12 labels with the most positives
    assert f"{len(labels) - 12} more labels with fewer positives not shown" in text
    shown = re.findall(r"<tr><td>([A-Z][0-9][0-9A-Z])</td>", body)
    support = {row["label"]: row["positives"] if isinstance(row["positives"], int) else 0  # "<10": suppressed
               for row in metrics["test"]["per_label"]}
    assert len(shown) == 12 and min(support[s] for s in shown) >= sorted(support.values())[-12]
    assert text.count("data:image/png;base64") >= 5


def _tables(n_samples: int, n_labels: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    prevalence = rng.uniform(0.002, 0.08, n_labels)
    y = rng.random((n_samples, n_labels)) < prevalence
    unknown = (rng.random(n_samples) < 0.3)[:, None] & (rng.random((n_samples, n_labels)) < 0.2)
    mask = ~unknown | y  # censored windows: some labels unknown, positives always known
    history = rng.random((n_samples, n_labels)) < 0.05
    proba = 1 / (1 + np.exp(-(rng.normal(-2.5, 1, (n_samples, n_labels)) + 1.5 * y)))
    return y, mask, history, np.round(proba, 3)  # rounded: tied scores, as a model's often are


def test_the_pooled_curve_counts_exactly_at_its_thresholds_from_a_sample_of_the_scores():
    y, mask, _, proba = _tables(3000, 40)
    pos, neg = proba[mask & y], proba[mask & ~y]
    n_known = int(mask.sum())
    tp, fp = html.pooled_curve_counts(SparseTable.from_dense(y), SparseTable.from_dense(mask), proba, n_known)
    want = curve_counts(pos, neg, max_points=2000)  # every known score pooled: the dense curve
    assert np.array_equal(tp, want[0]) and np.array_equal(fp, want[1])
    tp, fp = html.pooled_curve_counts(y, mask, proba, n_known, max_points=50, max_pooled=n_known // 7)
    assert 10 < len(tp) <= 50 and np.all(np.diff(tp) >= 0) and np.all(np.diff(fp) >= 0)
    assert tp[-1] == len(pos) and fp[-1] == len(neg)  # the lowest threshold is the lowest score
    # exact at each threshold: a threshold is a score, the (tp + fp)-th highest; count at and above it again
    highest_first = np.sort(np.concatenate([pos, neg]))[::-1]
    for t, a, b in zip(highest_first[tp + fp - 1], tp, fp):
        assert (pos >= t).sum() == a and (neg >= t).sum() == b


def test_the_report_reads_the_sparse_tables_a_block_at_a_time(monkeypatch):
    from ehrdx import ranking

    n, L = 8_000, 160
    y, mask, history, _ = _tables(n, L, seed=1)
    rng = np.random.default_rng(2)
    # scores as a sequence model's evaluation keeps them: patient states and a label head, computed when read
    proba = ranking.HeadScores(rng.normal(size=(n, 8)), rng.normal(size=(L, 8)), rng.normal(-2, 1, L))
    monkeypatch.setattr(ranking.HeadScores, "__array__", lambda *a, **k: pytest.fail("made the whole scores"))
    samples = Samples(np.repeat(np.arange(n // 20), 20), np.arange(n) * 86400, np.arange(n), rng.integers(1, 30, n),
                      np.arange(n) * 86400 + 30, SparseTable.from_dense(y), SparseTable.from_dense(mask),
                      SparseTable.from_dense(history), {"censored_samples": 7})
    for name in ("y", "mask", "history"):  # a whole dense table would be read through these: refuse them
        monkeypatch.setattr(Samples, name, property(lambda self: pytest.fail("read the whole table")))
    largest = [0]
    read = SparseTable.__getitem__

    def counted(self, key):
        out = read(self, key)
        largest[0] = max(largest[0], out.size)
        return out

    monkeypatch.setattr(SparseTable, "__getitem__", counted)
    monkeypatch.setattr(ranking, "MAX_ELEMENTS", 100_000)  # blocks of 12 labels (the defaults: 1M and 16M
    monkeypatch.setattr(ranking.HeadScores, "block_elements", 100_000)  # entries a block, whatever the table)
    page = html.build_report(title="t", samples=samples, proba=proba, labels=[f"L{j}" for j in range(L)],
                             thresholds=np.full(L, 0.5), min_cell=5, bootstrap_draws=5)
    # the largest read is one block of at most a million entries (labels x samples, or recall@k's 4,096
    # samples), less than the whole table
    assert 0 < largest[0] <= 1_000_000 < n * L
    known = int(mask.sum())
    assert f"<td>known (sample, label) entries</td><td>{known:,}</td>" in page
    assert f"<td>{n * L - known:,}</td>" in page and page.count("data:image/png;base64") >= 4
    assert "95% interval over 5 resamplings" in page
