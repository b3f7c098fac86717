"""Many labels end to end: `--labels prefix:DX//:3` (every ICD-10 category of the generator's codes) trains,
evaluates and renders a report whose per-label tables show the labels with the most positives and say
how many more there are; metrics.json keeps every label."""

import json
import re

import polars as pl
from typer.testing import CliRunner

from ehrdx.cli import app
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.evaluate import html, report


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
