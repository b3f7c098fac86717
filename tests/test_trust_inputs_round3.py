"""Found by trying ehrdx on messy input (session s12): inputs written into, split settings that make
nonsense splits, and a subject listed twice in subject_splits.parquet."""

import shutil

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from ehrdx import open_store
from ehrdx.cli import app
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.errors import DataError
from ehrdx.events_pipeline import patient_splits

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("newuser12")
    paths = write_longitudinal(generate_longitudinal(60, seed=3), root / "c")
    return {"root": root, "meds": paths["meds"], "label_map": paths["label_map"]}


@pytest.mark.parametrize("where", ["meds", "inside_meds"])
def test_store_is_never_written_into_the_input_meds_dataset(cohort, tmp_path, where):
    """`--store` is written (the converted arrays), so it is an output too: the input MEDS directory, or a
    folder inside it, is refused (exit 2) and the dataset is left as it was (README: outputs never
    overwrite inputs; an output inside an input directory is refused)."""
    meds = tmp_path / "meds"
    shutil.copytree(cohort["meds"], meds)
    before = listing(meds)
    store = meds if where == "meds" else meds / "store"
    r = run("targets", "--meds", meds, "--labels", f"map:{cohort['label_map']}", "--store", store,
            "--out", tmp_path / "t.parquet")
    assert r.exit_code == 2, r.output
    assert "--store" in r.output
    assert listing(meds) == before


@pytest.mark.parametrize("fractions", [("-0.1", "0.15"), ("1", "0.15"), ("0.5", "0.9"), ("0.15", "-0.2")])
def test_split_fractions_out_of_range_are_refused(cohort, tmp_path, fractions):
    """A share below 0, of 1 or more, or shares summing to 1 or more gave a split of a few training
    patients (--val-fraction 1: train 14, validation 331) without a word; they are refused (exit 2),
    naming the option."""
    meds = tmp_path / "meds"
    shutil.copytree(cohort["meds"], meds)
    (meds / "metadata" / "subject_splits.parquet").unlink()  # the seeded split, from the fractions
    val, test = fractions
    r = run("train", "--meds", meds, "--labels", f"map:{cohort['label_map']}", "--model", "gru", "--hidden", "8",
            "--epochs", "1", "--val-fraction", val, "--test-fraction", test, "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    assert "fraction" in r.output
    assert not (tmp_path / "m" / "config.json").exists()


def test_subject_listed_twice_in_subject_splits_is_an_error(cohort, tmp_path):
    """A subject listed twice in subject_splits.parquet (a concatenated export) made that patient two
    training patients (train 332 of 400 patients + 62 + 56): an error naming the file and the count."""
    meds = tmp_path / "meds"
    shutil.copytree(cohort["meds"], meds)
    path = meds / "metadata" / "subject_splits.parquet"
    splits = pl.read_parquet(path)
    pl.concat([splits, splits.filter(pl.col("split") == "train").head(5)]).write_parquet(path)
    store = open_store(meds=meds)
    with pytest.raises(DataError, match="subject_splits.parquet") as exc:
        tr = patient_splits(store, meds, 0)[0]
        # what happened before: rows repeated, more patients than the store holds
        assert len(np.unique(tr)) == len(tr)
    assert "5" in str(exc.value)


def test_fractional_subject_ids_are_an_error_not_truncated():
    """A float subject_id column (15.5) was cast to 15 without a word: two patients (15.0 and 15.5) became
    one. Whole floats are unambiguous and still read; a fraction is an error naming the rows."""
    from ehrdx.data.meds import normalise_events

    t = pl.Series([None, None], dtype=pl.Datetime("us"))
    ok = normalise_events(pl.DataFrame({"subject_id": [15.0, 16.0], "time": t, "code": ["A", "B"]}), "x.parquet")
    assert ok.frame.get_column("subject_id").to_list() == [15, 16]
    with pytest.raises(DataError, match="subject ids must be integers") as exc:
        normalise_events(pl.DataFrame({"subject_id": [15.0, 15.5], "time": t, "code": ["A", "B"]}), "x.parquet")
    assert "row 2" in str(exc.value)


def test_micro_averages_do_not_give_away_a_suppressed_label():
    """With one label whose positives come from fewer than 10 patients, its row is suppressed and the macro
    averages are emptied, but micro AUROC/AUPRC and the micro/macro precision, recall and F1 (the same
    numbers, with one label) were printed and written (seen with `--labels map:` of one rare label)."""
    from ehrdx.evaluate.privacy import suppress_small_cells

    at = {"element_accuracy": 0.41, "precision_micro": 0.076, "recall_micro": 0.81, "f1_micro": 0.139,
          "f1_macro": 0.139}
    metrics = {"test": {"n_samples": 442, "macro_auroc": 0.6, "micro_auroc": 0.64, "macro_auprc": 0.09,
                        "micro_auprc": 0.094, "tuned": dict(at), "f1_micro": 0.139,
                        "per_label": [{"label": "I10", "known": 442, "positives": 26, "positive_patients": 7,
                                       "auroc": 0.64, "auprc": 0.094, "status": "ok",
                                       "tuned": {"threshold": 0.09, "precision": 0.076, "recall": 0.81,
                                                 "f1": 0.139}}]}}
    out = suppress_small_cells(metrics)["test"]
    assert out["per_label"][0]["auroc"] is None and out["macro_auroc"] is None
    assert out["micro_auroc"] is None and out["micro_auprc"] is None
    assert out["f1_micro"] is None
    assert all(out["tuned"][k] is None for k in ("precision_micro", "recall_micro", "f1_micro", "f1_macro"))


@pytest.mark.parametrize("damage", ["text_ids", "empty_file"])
def test_a_broken_subject_splits_file_is_an_error_not_a_traceback(cohort, tmp_path, damage):
    """subject_splits.parquet with a non-integer id ("P1") or of 0 bytes stopped with a polars traceback
    (exit 1); it is an error naming the file (exit 2)."""
    meds = tmp_path / "meds"
    shutil.copytree(cohort["meds"], meds)
    path = meds / "metadata" / "subject_splits.parquet"
    if damage == "text_ids":
        s = pl.read_parquet(path).with_columns(pl.col("subject_id").cast(pl.String))
        s.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("P1")).otherwise(pl.col("subject_id"))
                       .alias("subject_id")).write_parquet(path)
    else:
        path.write_bytes(b"")
    r = run("train", "--meds", meds, "--labels", f"map:{cohort['label_map']}", "--model", "gru", "--hidden", "8",
            "--epochs", "1", "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    assert "subject_splits.parquet" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("option", [("--hidden", "0"), ("--dropout", "1.5"), ("--lr", "-1"), ("--heads", "0"),
                                    ("--weight-decay", "-0.1")])
def test_out_of_range_model_settings_are_refused_before_any_work(cohort, tmp_path, option):
    """--hidden 0, --dropout 1.5, --lr -1 converted the events, then stopped in torch with a traceback
    (exit 1); they are refused as usage errors naming the option (exit 2), like --context 0."""
    r = run("train", "--meds", cohort["meds"], "--labels", f"map:{cohort['label_map']}", "--model", "gru",
            "--epochs", "1", *option, "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    assert option[0] in r.output and "event store" not in r.output


def test_a_value_column_named_but_absent_is_an_error_and_the_default_name_may_be_absent(tmp_path):
    """`--value-col valu` on a table whose column is `value`: every lab value was dropped with only "ignored
    columns: 1" said. A value column the user names must exist; the default name (numeric_value) may be
    absent (a table of codes only)."""
    from ehrdx.data.meds import iter_event_table

    path = tmp_path / "ev.csv"
    path.write_text("pid,when,code,value\n1,2020-01-01,LAB//A,1.5\n1,2020-02-01,DX//B,\n")
    cols = {"subject_col": "pid", "time_col": "when", "code_col": "code"}
    with pytest.raises(DataError, match="no numeric value column 'valu'") as exc:
        list(iter_event_table(path, value_col="valu", **cols))
    assert "ev.csv" in str(exc.value) and "value" in str(exc.value)
    shard = next(iter_event_table(path, value_col="value", **cols))
    assert shard.counts.get("ignored_columns", 0) == 0
    default = next(iter_event_table(path, **cols))  # the default name, absent: read, the values left out, said
    assert default.counts["files_without_a_numeric_value_column"] == 1 and default.counts["ignored_columns"] == 1


@pytest.mark.parametrize("option", [["--layers", "0"], ["--model", "transformer", "--hidden", "16", "--heads", "3"]])
def test_layers_below_one_and_hidden_not_divisible_by_heads_exit_2_without_a_traceback(cohort, tmp_path, option):
    result = CliRunner().invoke(app, ["train", "--meds", str(cohort["meds"]), "--labels",
                                      f"map:{cohort['label_map']}", "--out", str(tmp_path / "m"), "--epochs", "1",
                                      *option])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert ("divisible" in result.output) or ("--layers" in result.output)


def test_labels_matching_nothing_name_the_option_or_the_label_map_not_the_store(cohort, tmp_path):
    """`--labels prefix:XYZ` or a map of codes never seen: the error named the temporary store folder (gone at
    exit); it names the option and, for a map, its file."""
    lm = tmp_path / "none.csv"
    lm.write_text("code,label\nDX//NOPE,NOPE\n")
    for labels, named in (("prefix:XYZ//", "--labels 'prefix:XYZ//'"), (f"map:{lm}", str(lm))):
        result = CliRunner().invoke(app, ["train", "--meds", str(cohort["meds"]), "--labels", labels,
                                          "--out", str(tmp_path / "m"), "--epochs", "1", "--model", "logistic"])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert named in result.output and "ehrdx_store" not in result.output, result.output


def test_label_map_labels_no_training_patient_has_are_counted_and_named(cohort, tmp_path):
    """A label map row whose code never occurs was dropped unsaid: train_summary and the terminal name it."""
    import json

    lm = tmp_path / "lm.csv"
    lm.write_text(cohort["label_map"].read_text().rstrip("\n") + "\nDX//NOPE,NOPE\n")
    result = CliRunner().invoke(app, ["train", "--meds", str(cohort["meds"]), "--labels", f"map:{lm}",
                                      "--out", str(tmp_path / "m"), "--epochs", "1", "--model", "logistic"])
    assert result.exit_code == 0, result.output
    left = json.loads((tmp_path / "m" / "metrics.json").read_text())["train_summary"]["map_labels_left_out"]
    assert left["count"] >= 1 and "NOPE" in left["labels"]
    assert "NOPE" in result.output and "left out" in result.output


@pytest.mark.parametrize(("option", "said"), [(["--epochs", "0"], "--epochs"), (["--task", "window:0d"], "empty"),
                                              (["--labels", "prefix:DX//:0"], "at least 1"),
                                              (["--labels", "prefix:DX//:-1"], "at least 1")])
def test_settings_that_make_no_model_or_no_label_are_refused(cohort, tmp_path, option, said):
    """--epochs 0 saved an untrained model with metrics; window:0d gave every metric '-'; prefix:...:0 kept the
    whole code and :-1 failed later with 'no label codes'."""
    args = ["train", "--meds", str(cohort["meds"]), "--labels", f"map:{cohort['label_map']}", "--out",
            str(tmp_path / "m"), "--model", "logistic", *option]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert said in result.output and not (tmp_path / "m").exists()


@pytest.mark.parametrize(("text", "said"), [("pid;when;code\n1;2020-01-01;A\n", "separator"),
                                            ("pid\twhen\tcode\n1\t2020-01-01\tA\n", "separator"),
                                            ("pid , when,code\n1,2020-01-01,A\n", "spaces")])
def test_a_missing_column_error_says_when_the_separator_or_spaces_are_the_cause(tmp_path, text, said):
    from ehrdx.data.meds import iter_event_table

    path = tmp_path / "ev.csv"
    path.write_text(text)
    with pytest.raises(DataError, match="no subject id column 'pid'") as exc:
        list(iter_event_table(path, subject_col="pid", time_col="when", code_col="code"))
    assert said in str(exc.value) and "ev.csv" in str(exc.value)


def test_search_says_which_given_settings_it_replaces(cohort, tmp_path):
    result = CliRunner().invoke(app, ["train", "--meds", str(cohort["meds"]), "--labels", f"map:{cohort['label_map']}",
                                      "--out", str(tmp_path / "m"), "--model", "gru", "--epochs", "1",
                                      "--search", "1", "--hidden", "16"])
    assert result.exit_code == 0, result.output
    assert "--search chooses --hidden itself" in " ".join(result.output.split())


def test_split_fractions_given_beside_meds_subject_splits_are_said_to_be_unused(cohort, tmp_path):
    assert (cohort["meds"] / "metadata" / "subject_splits.parquet").exists()
    result = CliRunner().invoke(app, ["train", "--meds", str(cohort["meds"]), "--labels", f"map:{cohort['label_map']}",
                                      "--out", str(tmp_path / "m"), "--model", "logistic", "--val-fraction", "0.3"])
    assert result.exit_code == 0, result.output
    assert "--val-fraction not used: the MEDS subject_splits decide" in " ".join(result.output.split())


def test_heads_given_to_a_model_without_attention_is_said_to_be_unused(cohort, tmp_path):
    result = CliRunner().invoke(app, ["train", "--meds", str(cohort["meds"]), "--labels", f"map:{cohort['label_map']}",
                                      "--out", str(tmp_path / "m"), "--model", "logistic", "--heads", "2"])
    assert result.exit_code == 0, result.output
    assert "--heads is for the transformer: the logistic model does not use it" in " ".join(result.output.split())
