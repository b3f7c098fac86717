"""The HTML report renders: it parses, every figure is there and is a PNG, sections and tables are
complete, small cells are suppressed and no patient id is written."""

import base64
import dataclasses
import warnings
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from ehrdx.cli import app
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.evaluate.html import curves_figures

OFFSET = 6_100_000_000
SECTIONS = {"cohort", "metrics", "curves", "calibration", "recall", "per-label", "by-visits", "fairness", "training"}


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.ids, self.tables, self.rows, self.cells = [], set(), {}, 0, []
        self._table = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        if "id" in a and tag == "h2":
            self.ids.add(a["id"])
        if tag == "table":
            self._table = a.get("id", f"t{len(self.tables)}")
            self.tables[self._table] = 0
        if tag == "tr" and self._table:
            self.tables[self._table] += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        self.cells.append(data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    c = generate_longitudinal(900, seed=17)
    c = dataclasses.replace(c, events=c.events.with_columns(pl.col("subject_id") + OFFSET),
                            oracle=c.oracle.with_columns(pl.col("subject_id") + OFFSET))
    paths = write_longitudinal(c, out / "c")
    r = CliRunner().invoke(app, ["train", "--meds", str(paths["meds"]), "--labels", f"map:{paths['label_map']}",
                                 "--model", "gru", "--epochs", "3", "--hidden", "16", "--device", "cpu", "--out", str(out / "m")])
    assert r.exit_code == 0, r.output
    return out, paths


def test_report_has_every_section_and_figure_and_no_ids(trained):
    out, paths = trained
    r = CliRunner().invoke(app, ["report", "--model", str(out / "m"), "--meds", str(paths["meds"]),
                                 "--out", str(out / "r.html"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    text = (out / "r.html").read_text()
    page = Page()
    page.feed(text)
    page.close()
    assert SECTIONS <= page.ids, SECTIONS - page.ids
    alts = [img["alt"] for img in page.images]
    for alt in ("ROC curves", "PR curves", "Calibration", "Recall at k", "By prior visits", "Training curves"):
        assert alt in alts
    for img in page.images:
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        raw = base64.b64decode(data)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 5000
    labels = pl.read_csv(paths["label_map"]).get_column("label").unique()
    assert page.tables["perlabel"] - 1 >= len(labels) - 3  # header + a row per label the model knows
    assert "&lt;10" in text  # rare new-onset labels in 135 test patients are suppressed
    assert str(OFFSET // 1_000_000) not in text
    assert "sortable" in text and "<script>" in text


def test_min_cell_zero_shows_every_cell(trained):
    out, paths = trained
    r = CliRunner().invoke(app, ["--min-cell", "0", "report", "--model", str(out / "m"), "--meds",
                                 str(paths["meds"]), "--out", str(out / "r0.html"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "&lt;10" not in (out / "r0.html").read_text() and "<10" not in (out / "r0.html").read_text()


def test_update_results_are_included_for_an_updated_model(trained):
    from ehrdx.evaluate.html import build_report
    from ehrdx.events_pipeline import open_store, patient_splits

    out, paths = trained
    import ehrdx

    clf = ehrdx.load(out / "m")
    st = open_store(meds=paths["meds"], store_dir=out / "st")
    s = clf.samples(st, patient_splits(st, paths["meds"], 0)[2])
    rep = {"per_label": [{"label": "U07.1", "new": True, "introduced_at": "2020-03-01", "train_positives": 50,
                          "test_positives": 4, "test_positive_patients": 4, "auroc_before": None, "auroc_after": 0.7,
                          "auprc_before": None, "auprc_after": 0.1}],
           "old_labels_macro_auroc_before": 0.9, "old_labels_macro_auroc_after": 0.91, "new_labels_macro_auroc": 0.7}
    text = build_report(title="t", samples=s, proba=clf.predict_samples(st, s), labels=clf.labels_,
                        thresholds=clf.thresholds_, store=st, update_report=rep)
    page = Page()
    page.feed(text)
    assert "update" in page.ids and page.tables["update"] == 2
    assert "0.700" not in text  # the new label's 4 test patients: suppressed, and the average over it too


def test_an_auto_model_reports_every_member_beside_the_ensemble_and_its_weights(trained, tmp_path):
    """Issue 14: the report shows every candidate and the choice. Each member's macro AUROC/AUPRC on the
    report's own samples, the ensemble's row equal to the Metrics table's, and the weights line."""
    _out, paths = trained
    r = CliRunner().invoke(app, ["train", "--meds", str(paths["meds"]), "--labels", f"map:{paths['label_map']}",
                                 "--model", "auto", "--epochs", "2", "--hidden", "16", "--device", "cpu",
                                 "--out", str(tmp_path / "auto")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["report", "--model", str(tmp_path / "auto"), "--meds", str(paths["meds"]),
                                 "--split", "held_out", "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "r.html").read_text()
    assert "<h3>Ensemble members</h3>" in text and "ensemble weights: " in text
    section = text.split("<h3>Ensemble members</h3>")[1].split("</table>")[0]
    rows = [row for row in section.split("<tr>")[2:]]
    assert [row.split("<td>")[1].split("</td>")[0] for row in rows] == ["gbm", "gru", "gbm-counts", "ensemble (auto)"]
    metrics = text.split("<h2 id='metrics'>Metrics</h2>")[1].split("</table>")[0]
    macro = metrics.split("<td>macro_auroc</td>")[1].split("</tr>")[0]
    ensemble_row = rows[-1].split("<td>")
    assert macro.split("<td>")[1].split("</td>")[0] == ensemble_row[2].split("</td>")[0]  # all labels, macro AUROC
    assert all(cell.split("</td>")[0] not in ("", "None") for row in rows for cell in row.split("<td>")[2:])


def test_curves_of_a_label_with_no_negatives_say_so_without_a_matplotlib_warning():
    # `ehrdx report` on a model whose one label is positive at every prediction time printed matplotlib's
    # "UserWarning: No artists with labels found to put in legend" with a line of ehrdx's source
    y = np.ones((20, 1), dtype=np.float32)
    per_label = [{"positives": 20, "known": 20, "positive_patients": 20}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        roc, pr, left_out = curves_figures(y, np.ones_like(y, dtype=bool), np.full((20, 1), 0.9), ["A"], per_label, 10)
    assert roc and pr and left_out == ["A"]  # named under the figures: one class only
