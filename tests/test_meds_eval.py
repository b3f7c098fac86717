"""`ehrdx predict --format meds-eval`: one MEDS prediction file per label that the ecosystem's scorer
(`meds-evaluation`, a dev dependency) reads, scoring exactly the samples ehrdx's own metrics score."""

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from ehrdx.cli import app
from ehrdx.evaluate.meds_eval import label_file_name, write_meds_eval

SCHEMA = pa.schema([("subject_id", pa.int64()), ("prediction_time", pa.timestamp("us")),
                    ("boolean_value", pa.bool_()), ("predicted_boolean_value", pa.bool_()),
                    ("predicted_boolean_probability", pa.float32())])


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def meds_model(tmp_path_factory):
    """A small MEDS cohort, a logistic model on it, its meds-eval output and ehrdx's own held-out metrics."""
    d = tmp_path_factory.mktemp("meds_eval")
    r = run("synth", "--out", d / "c", "--patients", "300", "--seed", "4", "--format", "meds")
    assert r.exit_code == 0, r.output
    meds = d / "c" / "meds"
    r = run("train", "--meds", meds, "--labels", f"map:{d / 'c' / 'label_map.csv'}", "--model", "logistic",
            "--out", d / "m")
    assert r.exit_code == 0, r.output
    r = run("predict", "--meds", meds, "--model", d / "m", "--format", "meds-eval", "--split", "held_out",
            "--out", d / "pe")
    assert r.exit_code == 0, r.output
    r = run("--min-cell", "1", "evaluate", "--meds", meds, "--model", d / "m", "--split", "held_out",
            "--out", d / "e.json")
    assert r.exit_code == 0, r.output
    return d


def own_and_written(out_dir, metrics_path, part):
    """(ehrdx's per-label rows of `part`, the manifest's rows, each file read) for labels with a file."""
    own = {row["label"]: row for row in json.loads(metrics_path.read_text())[part]["per_label"]}
    manifest = json.loads((out_dir / "labels.json").read_text())
    return own, [(row, pq.read_table(out_dir / row["file"])) for row in manifest["labels"] if row["file"]], manifest


def test_files_have_the_prediction_schema_and_ehrdx_counts_and_auroc(meds_model):
    own, written, manifest = own_and_written(meds_model / "pe", meds_model / "e.json", "test")
    assert manifest["format"] == "meds-eval" and [r["label"] for r in manifest["labels"]] == list(own)
    assert len(written) == len(own)  # every label of this cohort has known samples
    compared = 0
    for row, table in written:
        assert table.schema.equals(SCHEMA), row["file"]
        truth = table.column("boolean_value").to_numpy(zero_copy_only=False)
        proba = table.column("predicted_boolean_probability").to_numpy()
        predicted = table.column("predicted_boolean_value").to_numpy(zero_copy_only=False)
        # rows = ehrdx's known samples of that label, not every prediction time
        assert table.num_rows == row["rows"] == own[row["label"]]["known"]
        assert int(truth.sum()) == row["positives"] == own[row["label"]]["positives"]
        clear = np.abs(proba - row["threshold"]) > 1e-6  # decided in float64, written in float32
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(predicted[clear], (proba >= row["threshold"])[clear])  # booleans
        if own[row["label"]]["auroc"] is not None:
            # float32 keeps the order of the probabilities; it ties none of them here (counted in the manifest)
            assert row["probabilities_tied_by_float32"] == 0
            assert roc_auc_score(truth, proba) == pytest.approx(own[row["label"]]["auroc"], abs=1e-6)
            compared += 1
    assert compared >= 10
    times = pl.from_arrow(written[0][1]).select(pl.struct("subject_id", "prediction_time").is_unique().all())
    assert times.item()


@pytest.mark.filterwarnings("ignore::UserWarning")  # its per-subject resample may hold one class for rare labels
def test_meds_evaluation_scores_each_file_as_ehrdx_does(meds_model):
    pytest.importorskip("meds_evaluation", reason="meds-evaluation (dev dependency, pip install -e '.[dev]') "
                        "is not installed")
    from meds_evaluation.evaluate import evaluate_binary_classification
    from meds_evaluation.schema import PredictionSchema

    own, written, _ = own_and_written(meds_model / "pe", meds_model / "e.json", "test")
    compared = 0
    for row, table in written:
        PredictionSchema.validate(table)  # exactly its types: nothing to cast
        if own[row["label"]]["auroc"] is None:
            continue
        theirs = evaluate_binary_classification(pl.from_arrow(table))["samples_equally_weighted"]
        assert theirs["roc_auc_score"] == pytest.approx(own[row["label"]]["auroc"], abs=1e-6), row["label"]
        assert theirs["average_precision_score"] == pytest.approx(own[row["label"]]["auprc"], abs=1e-6)
        compared += 1
    assert compared >= 10


def test_text_ids_and_a_new_onset_model(tmp_path):
    from ehrdx.data.synth_visits import generate_longitudinal

    c = generate_longitudinal(300, seed=2)
    events = c.events.with_columns(pl.format("P-{}", pl.col("subject_id")).alias("subject_id"))
    events.write_parquet(tmp_path / "ev.parquet")
    r = run("train", "--events", tmp_path / "ev.parquet", "--task", "window:365d", "--new-onset",
            "--labels", "regex:^DX//(E11|I10|E78|E66)$", "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    r = run("predict", "--events", tmp_path / "ev.parquet", "--model", tmp_path / "m", "--format", "meds-eval",
            "--split", "held_out", "--out", tmp_path / "pe")
    assert r.exit_code == 0, r.output
    assert "subject_ids.parquet maps them back" in r.output
    r = run("--min-cell", "1", "evaluate", "--events", tmp_path / "ev.parquet", "--model", tmp_path / "m",
            "--out", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    # a new-onset model: rows are the new-onset elements, scored as ehrdx's test_new_onset scores them
    own, written, manifest = own_and_written(tmp_path / "pe", tmp_path / "e.json", "test_new_onset")
    all_labels = {row["label"]: row for row in json.loads((tmp_path / "e.json").read_text())["test"]["per_label"]}
    assert manifest["known"].startswith("new onset")
    id_map = pl.read_parquet(tmp_path / "pe" / "subject_ids.parquet")
    assert id_map.schema == pl.Schema({"subject_id": pl.Int64, "original_subject_id": pl.String})
    assert set(id_map["original_subject_id"]) <= set(events["subject_id"])
    assert id_map["subject_id"].is_unique().all() and id_map["original_subject_id"].is_unique().all()
    compared = 0
    for row, table in written:
        assert table.schema.equals(SCHEMA)
        assert set(table.column("subject_id").to_pylist()) <= set(id_map["subject_id"])
        assert table.num_rows == own[row["label"]]["known"] < all_labels[row["label"]]["known"]
        if own[row["label"]]["auroc"] is not None:
            truth = table.column("boolean_value").to_numpy(zero_copy_only=False)
            proba = table.column("predicted_boolean_probability").to_numpy()
            assert roc_auc_score(truth, proba) == pytest.approx(own[row["label"]]["auroc"], abs=1e-6)
            compared += 1
    assert len(written) == 4 and compared == 4


def test_unknown_labels_are_left_out_not_written_as_negatives(tmp_path):
    labels = ["ICD10CM/E11.9", "SNOMED:44054006", "ICD10CM/E11:9"]  # '/' and ':' are not file names
    known = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 1, 0]], dtype=bool)
    y = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 1, 0]], dtype=np.float32)
    proba = np.array([[0.9, 0.2, 0.5], [0.1, 0.3, 0.5], [0.4, 0.8, 0.5], [0.2, 0.6, 0.5]])
    manifest = write_meds_eval(tmp_path / "out", np.array([7, 7, 8, 9]), np.array([0, 86400, 0, 0]), y, known,
                               proba, labels, np.array([0.5, 0.5, 0.5]))
    rows = {r["label"]: r for r in manifest["labels"]}
    assert [rows[lab]["rows"] for lab in labels] == [3, 3, 0]
    assert rows["ICD10CM/E11:9"] == {**rows["ICD10CM/E11:9"], "file": None, "status": "no known samples: no file"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000_ICD10CM_E11.9.parquet",
                                                                    "001_SNOMED_44054006.parquet", "labels.json"]
    first = pl.read_parquet(tmp_path / "out" / "000_ICD10CM_E11.9.parquet")
    assert first["subject_id"].to_list() == [7, 7, 9]  # subject 8's E11.9 is unknown: no row, not a negative
    assert first["boolean_value"].to_list() == [True, False, False]
    assert first["predicted_boolean_value"].to_list() == [True, False, False]
    assert label_file_name(12, "a/b:c", width=3) == "012_a_b_c.parquet"


def test_an_earlier_output_is_replaced_and_other_directories_refused(tmp_path):
    args = (np.array([1, 2]), np.array([0, 0]), np.array([[1.0], [0.0]]), np.ones((2, 1), bool),
            np.array([[0.7], [0.2]]), ["A"], np.array([0.5]))
    write_meds_eval(tmp_path / "out", *args)
    (tmp_path / "out" / "000_A.parquet").unlink()
    write_meds_eval(tmp_path / "out", *args)  # its own earlier output: replaced whole
    assert (tmp_path / "out" / "000_A.parquet").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(Exception, match="holds other files"):
        write_meds_eval(tmp_path / "mine", *args)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_refusals_name_the_fix(meds_model, seed_table_path, tmp_path):
    d = meds_model
    r = run("train", seed_table_path, "--out", tmp_path / "tm", "--epochs", "1")
    assert r.exit_code == 0, r.output
    r = run("predict", seed_table_path, "--model", tmp_path / "tm", "--format", "meds-eval", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "patient table has no prediction time" in r.output and "--meds" in r.output
    assert not (tmp_path / "x").exists()
    r = run("predict", "--meds", d / "c" / "meds", "--model", d / "m", "--format", "meds-eval")
    assert r.exit_code == 2 and "--out DIR" in r.output
    r = run("predict", "--meds", d / "c" / "meds", "--model", d / "m", "--targets", d / "c" / "label_map.csv",
            "--out", tmp_path / "p.csv")
    assert r.exit_code == 2 and "only --format meds-eval" in r.output
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    r = run("predict", "--meds", d / "c" / "meds", "--model", d / "m", "--format", "meds-eval", "--out", tmp_path / "mine")
    assert r.exit_code == 2 and "holds other files" in r.output
    # each patient's last visit end: no later visit, so no label is known there
    last = pl.read_parquet(d / "c" / "oracle.parquet").group_by("subject_id").agg(pl.col("prediction_time").max())
    last.write_parquet(tmp_path / "last.parquet")
    r = run("predict", "--meds", d / "c" / "meds", "--model", d / "m", "--format", "meds-eval", "--times",
            tmp_path / "last.parquet", "--out", tmp_path / "y")
    assert r.exit_code == 2 and "has a known label" in r.output and "--targets" in r.output
    assert not (tmp_path / "y").exists()


def test_given_targets_are_scored_as_evaluate_scores_them(meds_model, tmp_path):
    d, meds = meds_model, meds_model / "c" / "meds"
    r = run("targets", "--meds", meds, "--labels", f"map:{d / 'c' / 'label_map.csv'}", "--task", "window:365d",
            "--out", tmp_path / "t.parquet")
    assert r.exit_code == 0, r.output
    r = run("predict", "--meds", meds, "--model", d / "m", "--format", "meds-eval", "--targets", tmp_path / "t.parquet",
            "--split", "held_out", "--out", tmp_path / "pe")
    assert r.exit_code == 0, r.output
    r = run("--min-cell", "1", "evaluate", "--meds", meds, "--model", d / "m", "--targets", tmp_path / "t.parquet",
            "--out", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    own, written, manifest = own_and_written(tmp_path / "pe", tmp_path / "e.json", "test")
    assert manifest["labels_from"] == "--targets"
    # a year's window, not the model's next visit: other labels than the task windows give
    windows = {r["label"]: r["positives"] for r in json.loads((d / "pe" / "labels.json").read_text())["labels"]}
    assert any(row["positives"] != windows[row["label"]] for row, _ in written)
    for row, table in written:
        assert table.num_rows == own[row["label"]]["known"] and row["positives"] == own[row["label"]]["positives"]
        if own[row["label"]]["auroc"] is not None:
            truth = table.column("boolean_value").to_numpy(zero_copy_only=False)
            proba = table.column("predicted_boolean_probability").to_numpy()
            assert roc_auc_score(truth, proba) == pytest.approx(own[row["label"]]["auroc"], abs=1e-6)


def test_split_chooses_the_patients_of_plain_predictions_too(meds_model, tmp_path):
    d = meds_model
    r = run("predict", "--meds", d / "c" / "meds", "--model", d / "m", "--split", "held_out", "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    splits = pl.read_parquet(d / "c" / "meds" / "metadata" / "subject_splits.parquet")
    held_out = set(splits.filter(pl.col("split") == "held_out")["subject_id"])
    assert set(pl.read_csv(tmp_path / "p.csv")["subject_id"]) == held_out and 0 < len(held_out) < splits.height


def test_packed_tables_and_head_scores_write_the_same_files_a_block_at_a_time(tmp_path):
    """Targets and masks as packed tables, read a few labels at a time, write exactly the files dense arrays
    write (the same values: equal by construction); scores as a network's head (computed when read, a block
    of labels per matmul) write the same rows with probabilities equal to 1e-6 (the matmul's shape differs)."""
    from ehrdx.data.bits import BitTable
    from ehrdx.data.sparse import SparseTable
    from ehrdx.ranking import HeadScores

    rng = np.random.default_rng(0)
    S, L, H = 60, 7, 4
    head = HeadScores(rng.normal(size=(S, H)), rng.normal(size=(L, H)), rng.normal(size=L))
    head.block_elements = 2 * S  # two labels per block: four blocks
    y, known = rng.random((S, L)) < 0.3, rng.random((S, L)) < 0.8
    known[:, 5] = False  # a label with no known sample: no file
    ids, times = rng.integers(0, 20, S), rng.integers(0, 10**6, S)
    labels, thr, proba = [f"L{j}" for j in range(L)], np.full(L, 0.4), np.asarray(head)
    y_bits, known_bits = SparseTable.from_dense(y), BitTable.from_dense(known)
    dense = write_meds_eval(tmp_path / "dense", ids, times, y.astype(np.float32), known, proba, labels, thr)
    packed = write_meds_eval(tmp_path / "packed", ids, times, y_bits, known_bits, proba, labels, thr)
    scored = write_meds_eval(tmp_path / "head", ids, times, y_bits, known_bits, head, labels, thr)
    assert packed["labels"] == dense["labels"] and [r["rows"] for r in dense["labels"]][5] == 0
    assert [r["rows"] for r in scored["labels"]] == [r["rows"] for r in dense["labels"]]
    prob = "predicted_boolean_probability"
    for row in dense["labels"]:
        if row["file"]:
            want = pl.read_parquet(tmp_path / "dense" / row["file"])
            assert pl.read_parquet(tmp_path / "packed" / row["file"]).equals(want)
            got = pl.read_parquet(tmp_path / "head" / row["file"])
            assert got.drop(prob, "predicted_boolean_value").equals(want.drop(prob, "predicted_boolean_value"))
            np.testing.assert_allclose(got[prob].to_numpy(), want[prob].to_numpy(), atol=1e-6)


def recoded_meds(meds, out, recode):
    """A copy of the MEDS dataset `meds` with its event codes passed through `recode` (a polars expression)."""
    import shutil

    shutil.copytree(meds, out)
    for shard in out.glob("data/**/*.parquet"):
        frame = pl.read_parquet(shard)
        frame.with_columns(code=recode).write_parquet(shard)
    return out


def test_codes_the_model_never_saw_are_counted_and_data_with_no_label_refused(meds_model, tmp_path):
    d, code = meds_model, pl.col("code")
    # the lab codes renamed: read as the unknown code, which predict --out FILE.csv says and meds-eval did not
    meds = recoded_meds(d / "c" / "meds", tmp_path / "labs",
                        pl.when(code.str.starts_with("LAB//")).then("NEWLAB//" + code).otherwise(code))
    r = run("predict", "--meds", meds, "--model", d / "m", "--format", "meds-eval", "--out", tmp_path / "pe")
    assert r.exit_code == 0, r.output
    coverage = json.loads((tmp_path / "pe" / "labels.json").read_text())["coverage"]
    assert coverage["events_with_unseen_codes"] > 0 and coverage["unseen_codes"] == 6
    assert f"{coverage['events_with_unseen_codes']:,} event(s) with 6 code(s) not seen in training" in r.output
    # every code renamed: no label is recorded anywhere, so no file could be scored; it wrote one 'no positives'
    # file per label, exit 0, where evaluate refuses
    meds = recoded_meds(d / "c" / "meds", tmp_path / "all",
                        pl.when(code.str.starts_with("MEDS_")).then(code).otherwise("XX//" + code))
    r = run("predict", "--meds", meds, "--model", d / "m", "--format", "meds-eval", "--split", "all",
            "--out", tmp_path / "none")
    assert r.exit_code == 2 and "none of the model's" in r.output and "of all patients" in r.output, r.output
    assert not (tmp_path / "none").exists()
