"""Defects found reviewing session s15's changes."""

import pytest

from cli_run import GOLDEN, run, words


@pytest.mark.parametrize(("command", "out"), [(["evaluate"], "e.json"), (["predict", "--format", "meds-eval"], "p"),
                                             (["predict"], "p.csv")])
def test_a_misspelt_split_is_refused_before_the_events_are_read(command, out, tmp_path):
    # report refused it at once; evaluate and predict converted the whole dataset first
    r = run(*command, "--model", GOLDEN / "gru_model", "--meds", GOLDEN / "meds", "--split", "heldout",
            "--out", tmp_path / out)
    assert r.exit_code == 2, r.output
    assert "--split must be held_out (or test), tuning, train or all, not 'heldout'" in words(r.output)
    assert "event store:" not in r.output


def test_the_visit_gap_warning_names_the_caller_s_line_not_ehrdx_s(tmp_path):
    # stacklevel=3 counted from EHRClassifier.source reached python_terms' wrapper: the warning read
    # ".../ehrdx/errors.py:194: UserWarning: the store's visits are split at ..."
    from ehrdx import EHRClassifier, open_store, patient_splits

    store_6h = open_store(meds=GOLDEN / "meds", store_dir=tmp_path / "s6h", visit_gap_seconds=6 * 3600)
    store_0 = open_store(meds=GOLDEN / "meds", store_dir=tmp_path / "s0")
    tr, va, te = patient_splits(store_0, GOLDEN / "meds", 0)
    clf = EHRClassifier(model="logistic", labels=f"map:{GOLDEN / 'label_map.csv'}").fit(store_6h, tr, va)
    with pytest.warns(UserWarning, match="split at a gap of 0 s") as caught:
        clf.predict_proba(store_0, te)
    assert [w.filename for w in caught] == [__file__]


def test_search_or_an_oracle_with_cross_validation_is_refused_not_skipped(tmp_path):
    # --cv 2 --search 2 cross-validated the default settings, exit 0, with no word of the search; --oracle likewise
    table = tmp_path / "patients.csv"
    table.write_text("patient_id,age,diseases\n" + "".join(f"{i},{40 + i},{'A' if i % 2 else ''}\n" for i in range(20)))
    r = run("train", table, "--model", "gbm", "--cv", "2", "--search", "2", "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    assert "--search 2 chooses the settings of one training, and --cv 2 cross-validates the settings given" in words(
        r.output)
    r = run("train", table, "--model", "logistic", "--cv", "2", "--oracle", table, "--out", tmp_path / "m")
    assert r.exit_code == 2 and "--oracle is scored on the test patients of one training" in words(r.output), r.output
