"""--search: seeded trials on the tuning patients, the best settings set and saved, resumable from its journal."""

import json
import logging

import pytest
from typer.testing import CliRunner

from ehrdx import search_settings  # the public name (README, Python)
from ehrdx.cli import app
from ehrdx.data.synth import generate_longitudinal, write_longitudinal
from ehrdx.errors import EhrdxError
from ehrdx.estimator import EHRClassifier
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.search import GBM_SPACE, search_model


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    paths = write_longitudinal(generate_longitudinal(300, seed=4), out)
    store = open_store(meds=paths["meds"], store_dir=out / "store")
    return paths, store, patient_splits(store, paths["meds"], 0)


def test_search_sets_the_best_settings_and_resumes_from_its_journal(cohort, tmp_path):
    paths, store, splits = cohort
    clf = EHRClassifier(model="gbm", labels=f"map:{paths['label_map']}", seed=3)
    seen = []
    result = search_settings(clf, store, splits, 3, journal_dir=tmp_path, on_trial=lambda *a: seen.append(a))
    r = result["members"]["gbm"]
    assert len(r["trials"]) == len(seen) == 3 and r["resumed_trials"] == 0
    assert set(r["trials"][0]["settings"]) == set(GBM_SPACE)
    best = max(r["trials"], key=lambda t: t["tuning_auprc"])
    assert clf.gbm_params == best["settings"] == {k: v for k, v in r["best"]["gbm_params"].items()}
    # the same journal: the finished trials count, only the missing ones run
    again = EHRClassifier(model="gbm", labels=f"map:{paths['label_map']}", seed=3)
    r2 = search_settings(again, store, splits, 4, journal_dir=tmp_path)["members"]["gbm"]
    assert r2["resumed_trials"] == 3 and len(r2["trials"]) == 4
    assert [t["settings"] for t in r2["trials"][:3]] == [t["settings"] for t in r["trials"]]
    # the resumed trial is a new setting, not the first trial's drawn again from the same seed
    assert r2["trials"][3]["settings"] not in [t["settings"] for t in r["trials"]]
    # seeded: a fresh search with the same seed tries the same settings
    fresh = search_settings(EHRClassifier(model="gbm", labels=f"map:{paths['label_map']}", seed=3), store, splits, 3,
                            journal_dir=tmp_path / "fresh")["members"]["gbm"]
    assert [t["settings"] for t in fresh["trials"]] == [t["settings"] for t in r["trials"]]
    # another task in the same journal (here: another label set) is another search, not these trials resumed
    other = EHRClassifier(model="gbm", labels=f"map:{paths['label_map']}", seed=3, new_onset=True)
    r3 = search_settings(other, store, splits, 1, journal_dir=tmp_path)["members"]["gbm"]
    assert r3["resumed_trials"] == 0 and len(r3["trials"]) == 1


def test_train_search_from_the_command_line(cohort, tmp_path):
    paths, _store, _splits = cohort
    r = CliRunner().invoke(app, ["train", "--meds", str(paths["meds"]), "--labels", f"map:{paths['label_map']}",
                                 "--model", "gru", "--epochs", "1", "--search", "2", "--budget", "10m",
                                 "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    found = json.loads((tmp_path / "m" / "search.json").read_text())
    best = found["members"]["gru"]["best"]
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["params"]
    assert all(saved[k] == v for k, v in best.items())  # the chosen settings are the model's
    r = CliRunner().invoke(app, ["train", "--meds", str(paths["meds"]), "--model", "logistic", "--search", "2",
                                 "--labels", f"map:{paths['label_map']}", "--out", str(tmp_path / "l")])
    assert r.exit_code == 2 and "no settings to search" in r.output


def test_search_options_that_allow_no_trial_are_refused_before_the_data_is_read(cohort, tmp_path):
    paths, store, splits = cohort
    meds = ["train", "--meds", str(paths["meds"]), "--out", str(tmp_path / "m")]
    for extra, said in ((["--search", "-1"], "option --search: -1 settings"),
                        (["--budget", "10m"], "--budget limits --search, which is off"),
                        (["--search", "2", "--budget", "abc"], "unreadable duration 'abc'"),
                        (["--search", "2", "--budget", "0s"], "a budget of 0 seconds leaves no time")):
        r = CliRunner().invoke(app, meds + extra)
        assert r.exit_code == 2 and said in r.output and "event store" not in r.output, (extra, r.output)
    # in Python the same checks name the parameters (it said "no trial finished within the budget" for trials=0)
    for trials, budget, said in ((0, None, "parameter trials: 0 settings"),
                                 (2, -5.0, "parameter budget_seconds: a budget of -5.0 seconds")):
        with pytest.raises(EhrdxError, match=said):
            search_settings(EHRClassifier(model="gbm"), store, splits, trials, budget)


def test_a_budget_that_stops_the_search_early_is_said(cohort):
    _paths, store, splits = cohort
    r = search_model(EHRClassifier(model="gbm", seed=1), "gbm", EHRClassifier(model="gbm").source(store), splits[0],
                     splits[1], 3, 1e-6, None)
    assert len(r["trials"]) == 1 and r["requested_trials"] == 3 and r["stopped_by_budget"]


def test_a_trial_stopped_by_an_error_leaves_no_optuna_traceback(cohort):
    # Ctrl-C or an error in a trial: Optuna logged "Trial 0 failed ..." with the traceback, as a warning
    _paths, store, splits = cohort
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("optuna").addHandler(handler)

    def stop(*_):
        raise EhrdxError("stopped")

    try:
        with pytest.raises(EhrdxError, match="stopped"):
            search_model(EHRClassifier(model="gbm"), "gbm", EHRClassifier(model="gbm").source(store), splits[0],
                         splits[1], 2, None, None, on_trial=stop)
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records]


def test_a_trial_without_a_score_is_not_said_to_be_stopped_by_a_budget(cohort, monkeypatch):
    """A trial whose score is not a number is marked failed by Optuna: 2 of 3 trials complete, and with no budget
    at all the search was said 'stopped_by_budget' (the command: 'the --budget ran out')."""
    import ehrdx.search

    _paths, store, splits = cohort
    scores = iter([float("nan"), 0.5, 0.6])
    monkeypatch.setattr(ehrdx.search, "tuning_score", lambda *_: next(scores))
    r = search_model(EHRClassifier(model="gbm", seed=1), "gbm", EHRClassifier(model="gbm").source(store), splits[0],
                     splits[1], 3, None, None)
    assert len(r["trials"]) == 2 and not r["stopped_by_budget"]
