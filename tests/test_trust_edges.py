"""Trust at the edges (session s14): inputs at the limits of size and range, as real data sometimes is: one
patient, empty parts of the split, labels few or too many, extreme times, values and codes."""

import json

import pytest

from cli_run import run, words
from ehrdx.errors import EhrdxError


def _events(path, patients: int, visits: int = 4):
    """A small events table: every patient a birth and `visits` visits of two codes each, E11 and I10 alternating."""
    rows = ["subject_id,time,code,numeric_value"]
    for p in range(1, patients + 1):
        rows.append(f"{p},1960-01-01,MEDS_BIRTH,")
        for v in range(visits):
            rows += [f"{p},{2010 + v}-03-0{1 + p % 9},DX//{'E11' if (p + v) % 2 else 'I10'},",
                     f"{p},{2010 + v}-03-0{1 + p % 9},LAB//A,{5 + p % 3}"]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def one_patient(tmp_path_factory):
    """One patient's events and a model trained on them: every patient in training, none to validate or test."""
    d = tmp_path_factory.mktemp("one")
    events = _events(d / "events.csv", 1)
    r = run("train", "--events", events, "--model", "logistic", "--out", d / "model")
    assert r.exit_code == 0, r.output
    assert "patients: train 1, validation 0, test 0" in r.output
    return events, d / "model"


@pytest.mark.parametrize("command", [("evaluate",), ("evaluate", "--split", "tuning"), ("report", "--out", "r.html"),
                                     ("predict", "--split", "held_out", "--out", "p.csv")])
def test_a_part_of_the_split_with_no_patient_is_an_error_not_metrics_of_nothing(one_patient, tmp_path, command):
    """`evaluate` of a model whose held-out part has no patient (one patient, or a MEDS split without held_out) printed
    and wrote metrics of 0 samples (f1_micro 0.000, every label "no positives"), exit 0; `report` drew empty figures
    and `predict --split held_out` wrote an empty file. Each stops naming the part, the parts' sizes and the fix."""
    events, model = one_patient
    args = [a if a not in ("r.html", "p.csv") else tmp_path / a for a in command]
    r = run(args[0], "--events", events, "--model", model, *args[1:])
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert "part has no patient (the seeded split of training, seed 0: train 1, tuning 0, held_out 0)" in said
    assert "nothing to score" in said and "fix: --split all scores every patient" in said
    assert "--split tuning" not in said.split("fix:")[1]  # only parts that have patients are offered
    assert "Traceback" not in r.output and not list(tmp_path.iterdir())


def test_split_all_still_scores_the_one_patient(one_patient, tmp_path):
    events, model = one_patient
    r = run("evaluate", "--events", events, "--model", model, "--split", "all", "--out", tmp_path / "m.json")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.json").exists()


def test_metrics_of_no_sample_are_not_computed_not_zero(one_patient):
    """EHRClassifier.evaluate(store, rows) of no patient gave f1_micro, precision_micro and recall_micro 0.0 beside
    every other metric None: a score of nothing read as a model that finds nothing. They are None too."""
    import ehrdx

    events, model = one_patient
    store = ehrdx.open_store(events=events)
    result = ehrdx.load(model).evaluate(store, [])["all"]
    assert result["n_samples"] == 0 and result["f1_micro"] is None
    for at in ("threshold_0.5", "tuned"):
        assert all(result[at][k] is None for k in ("precision_micro", "recall_micro", "f1_micro")), result[at]


def _meds(path, split_of, extra_code_of=lambda p, split: None, patients: int = 30):
    """A MEDS dataset of `patients` with subject_splits from `split_of(p)`; `extra_code_of(p, split)`: a code added to
    the patient's last three visits."""
    import datetime as dt

    import polars as pl

    rows = []
    for p in range(1, patients + 1):
        rows.append((p, dt.datetime(1960, 1, 1), "MEDS_BIRTH", None))
        extra = extra_code_of(p, split_of(p))
        for v in range(5):
            t = dt.datetime(2010 + v, 3, 1 + p % 9)
            rows += [(p, t, f"DX//{'E11' if (p + v) % 2 else 'I10'}", None), (p, t, "LAB//A", 5.0 + p % 3)]
            if extra and v >= 2:
                rows.append((p, t, extra, None))
    (path / "data").mkdir(parents=True)
    (path / "metadata").mkdir()
    pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.Utf8,
                               "numeric_value": pl.Float32}, orient="row").write_parquet(path / "data" / "0.parquet")
    pl.DataFrame({"subject_id": list(range(1, patients + 1)), "split": [split_of(p) for p in range(1, patients + 1)]}
                 ).write_parquet(path / "metadata" / "subject_splits.parquet")
    return path


@pytest.mark.parametrize("held_out", [True, False])
def test_a_label_recorded_only_in_validation_patients_is_said_by_train(tmp_path, held_out):
    """A label whose only records are in tuning patients is not in the model (labels come from training patients):
    metrics.json counted it under train_summary.val.excluded, the terminal said nothing (the test part's such labels
    are said). It is said, with or without test patients."""
    def split_of(p):
        return "tuning" if p % 5 == 0 else "held_out" if held_out and p % 5 == 1 else "train"

    meds = _meds(tmp_path / "meds", split_of, lambda p, split: "DX//VAL" if split == "tuning" else None)
    r = run("train", "--meds", meds, "--model", "logistic", "--out", tmp_path / "model")
    assert r.exit_code == 0, r.output
    assert ("validation: 1 label(s) recorded in the data are not among the model's labels: VAL (the model has no "
            "output for them: left out)") in words(r.output)


# -- count features of long histories: no copy of every sample's history ---------------------------------------

def _long_store(path, visits: int):
    """Patient 0 with `visits` daily visits of one code each (A, B or lab X with a value), and a short patient 1 with
    a code only it has; the store and the samples at the end of every visit of both, in shuffled order."""
    import datetime as dt

    import numpy as np
    import polars as pl

    from ehrdx.data.meds import normalise_events
    from ehrdx.data.samples import Samples
    from ehrdx.data.store import build_store

    day0 = dt.datetime(2000, 1, 1)
    rows = [(0, "1950-01-01", "MEDS_BIRTH", None)]
    for v in range(visits):
        code = "ABX"[v % 3]
        rows.append((0, str(day0 + dt.timedelta(days=v)), "LAB//X" if code == "X" else code,
                     float(v % 7) if code == "X" else None))
    rows += [(1, "2001-01-01", "A", None), (1, "2001-02-01", "ONLY1", None), (1, "2001-02-01", "LAB//X", 3.0)]
    frame = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Utf8, "code": pl.Utf8,
                                       "numeric_value": pl.Float64}, orient="row")
    store = build_store([normalise_events(frame, "long.csv")], path)
    off, vs, vo = np.asarray(store.offsets), np.asarray(store.visit_starts), np.asarray(store.visit_offsets)
    ends = np.append(vs[1:], 0)  # a visit ends where the next starts (within the patient) or at its last event
    row = np.repeat(np.arange(len(store)), np.diff(vo))
    cutoff = np.where(np.arange(len(vs)) + 1 < vo[row + 1], ends, off[row + 1])
    n_visits = np.arange(len(vs)) - vo[row] + 1
    time = np.asarray(store.times)[cutoff - 1]
    order = np.random.default_rng(0).permutation(len(row))
    n = len(row)
    samples = Samples(row[order], time[order], cutoff[order], n_visits[order], time[order],
                      np.zeros((n, 1), np.float32), np.ones((n, 1), bool), np.zeros((n, 1), bool))
    return store, samples


def test_count_features_are_each_sample_s_history_counts_and_last_values(tmp_path):
    """The baselines' features (logistic, mlp) checked against each sample's history read one by one."""
    import numpy as np

    from ehrdx.data.counts import count_matrix, history_features
    from ehrdx.data.sequences import EventEncoder

    store, samples = _long_store(tmp_path / "s", 40)
    enc = EventEncoder.fit(store, np.array([0]), min_count=2)  # ONLY1 (patient 1) and MEDS_BIRTH: unknown
    f = history_features(store, samples, enc)
    X = count_matrix(f, enc.n_codes).toarray()
    codes, values, off = enc.code_map(store)[np.asarray(store.codes)], np.asarray(store.values), store.offsets
    x = enc.code_map(store)[store.code_names.index("LAB//X")]
    unknown = 0
    for i in range(len(samples)):
        hist = np.arange(off[samples.row[i]], samples.cutoff[i])
        counts = np.bincount(codes[hist], minlength=enc.n_codes)
        unknown += counts[0]
        np.testing.assert_allclose(X[i, :enc.n_codes], np.log1p(counts), rtol=1e-6)
        lab = hist[(codes[hist] == x) & ~np.isnan(values[hist])]
        if len(lab):
            z = (values[lab[-1]] - enc.value_mean[x]) / enc.value_std[x]
            np.testing.assert_allclose(f.dense[i, :2], [z, 1.0], rtol=1e-5)
        else:
            assert f.dense[i, :2].tolist() == [0.0, 0.0]
        bag = slice(f.code_offsets[i], f.code_offsets[i + 1])
        assert dict(zip(f.code_ids[bag].tolist(), f.code_counts[bag].tolist())) == {
            c: n for c, n in enumerate(counts.tolist()) if n}
    assert f.unknown == {"codes:unseen": unknown}


def test_count_features_of_a_patient_with_thousands_of_visits_take_no_memory_per_history_event(tmp_path):
    """`--model logistic` or `mlp` on a patient of 20,000 visits (a long ICU stay charted hourly) took 16 GB and
    100 s: the features spelt out every sample's history event by event (20,000 histories, 200M events). They read
    the last event of each code before each sample instead: memory grows with distinct codes per history."""
    import tracemalloc

    import numpy as np

    from ehrdx.data.counts import count_matrix, history_features
    from ehrdx.data.sequences import EventEncoder

    store, samples = _long_store(tmp_path / "s", 6000)  # 18M history events spelt out: over 500 MB
    enc = EventEncoder.fit(store, np.arange(len(store)))
    tracemalloc.start()
    try:
        f = history_features(store, samples, enc)
        count_matrix(f, enc.n_codes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40e6, peak


def test_a_bag_of_distinct_codes_weighted_by_count_is_the_mean_over_the_events():
    """The mlp reads each history code once with its count: the same bag as the mean over every event."""
    import torch

    from ehrdx.data.batch import TableBatch
    from ehrdx.models.mlp import MLPConfig, MLPModel

    torch.manual_seed(0)
    model = MLPModel(MLPConfig(n_dense=2, n_codes=5, n_labels=3, hidden=8)).eval()
    common = {"dense": torch.randn(2, 2), "y": torch.zeros(2, 3), "y_mask": torch.ones(2, 3, dtype=torch.bool),
              "sample_index": torch.arange(2)}
    events = TableBatch(code_ids=torch.tensor([1, 1, 1, 4, 2]), code_offsets=torch.tensor([0, 4]), **common)
    counted = TableBatch(code_ids=torch.tensor([1, 4, 2]), code_offsets=torch.tensor([0, 2]),
                         code_weights=torch.tensor([0.75, 0.25, 1.0]), **common)
    torch.testing.assert_close(model(counted), model(events))


# -- times: after death, fractions of a second -----------------------------------------------------------------

def test_events_after_the_patient_s_death_are_counted_as_events_before_birth_are(tmp_path):
    """Events dated after MEDS_DEATH (an export or a join gone wrong) were kept without a word, and made prediction
    times after death (which predict --times refuses); events before birth were already counted."""
    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n1,2015-01-01,DX//E11\n1,2016-01-01,MEDS_DEATH\n1,2017-06-01,DX//I10\n"
                      "1,2018-01-01,DX//E11\n2,2015-01-01,DX//E11\n2,2016-01-01,DX//I10\n")
    r = run("targets", "--events", events, "--out", tmp_path / "t.csv")
    assert r.exit_code == 0, r.output
    assert "events after death: 2" in words(r.output)


def test_a_fraction_of_a_second_cut_by_the_store_is_counted_in_events_and_prediction_times(one_patient, tmp_path):
    """The store keeps whole seconds: 10:00:00.750 was read as 10:00:00 without a word, and predict wrote that time
    back, so a join of the predictions to the times file on prediction_time missed the row. Both are counted and
    said; two times of one patient within one second are one prediction time, refused as given twice."""
    events, model = one_patient
    frac = tmp_path / "events.csv"
    frac.write_text(events.read_text().replace("2011-03-02,DX", "2011-03-02T08:00:00.5+01:00,DX"))
    r = run("targets", "--events", frac, "--out", tmp_path / "t.csv")
    assert r.exit_code == 0, r.output
    assert "times with a fraction of a second cut to the second: 1" in words(r.output)

    times = tmp_path / "times.csv"
    times.write_text("subject_id,prediction_time\n1,2012-06-01T10:00:00.750\n1,2013-06-01\n")
    r = run("predict", "--events", events, "--model", model, "--times", times, "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    assert f"{times}: times with a fraction of a second cut to the second: 1" in words(r.output)
    assert "2012-06-01T10:00:00.000000" in (tmp_path / "p.csv").read_text()

    times.write_text("subject_id,prediction_time\n1,2012-06-01T10:00:00.250\n1,2012-06-01T10:00:00.750\n")
    r = run("predict", "--events", events, "--model", model, "--times", times, "--out", tmp_path / "p2.csv")
    assert r.exit_code == 2, r.output
    assert "give a patient's prediction time more than once" in words(r.output)


# -- codes ------------------------------------------------------------------------------------------------

def test_labels_spelled_two_ways_name_the_label_selection_not_the_temporary_store(tmp_path):
    """`DX// E11` beside `DX//E11` (a space after the prefix) gives labels ' E11' and 'E11', refused as two spellings of
    one label: the error named the temporary store folder (/tmp/ehrdx_store_..., gone at exit) as the file. It names
    --labels and its value; so does update's, for a model's label and a new one."""
    rows = [f"{p},{2010 + v}-01-01,{'DX// E11' if p == 1 and v == 1 else 'DX//E11' if v % 2 else 'DX//I10'}"
            for p in range(1, 21) for v in range(3)]
    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n" + "\n".join(rows) + "\n")
    r = run("train", "--events", events, "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert "error: option --labels: 1 label(s) are spelled in more than one case (' E11' / 'E11')" in said
    assert "--labels 'prefix:DX//' reads these labels from" in said and "ehrdx_store" not in said

    old = tmp_path / "old.csv"
    old.write_text("subject_id,time,code\n" + "\n".join(r.replace("DX// E11", "DX//E11") for r in rows) + "\n")
    assert run("train", "--events", old, "--model", "logistic", "--out", tmp_path / "m").exit_code == 0
    new = tmp_path / "new.csv"
    new.write_text(old.read_text() + "1,2014-01-01,DX// I10\n")
    r = run("update", "--model", tmp_path / "m", "--events", new, "--out", tmp_path / "m2")
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert "option --labels: 1 label(s) are spelled in more than one case" in said and "ehrdx_store" not in said


# -- too many labels: the split ---------------------------------------------------------------------------------

def _many_labels(path, patients: int = 200, codes: int = 3000):
    """`patients` with 6 visits of 8 codes drawn from `codes` distinct DX codes: nearly every patient's rarest label
    is theirs alone, as with a too-wide --labels on a small cohort."""
    import random

    r = random.Random(2)
    rows = ["subject_id,time,code"]
    for p in range(1, patients + 1):
        for v in range(6):
            rows += [f"{p},{2010 + v}-03-01,DX//C{c}" for c in r.sample(range(codes), 8)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_split_by_rarest_label_still_gives_every_part_its_share_when_labels_outnumber_patients():
    """Stratifying by each patient's rarest label dealt every stratum alone: one of 1 or 2 patients went wholly to
    training, so 200 patients with 2,900 labels gave train 200, validation 0, test 0 (no early stopping, no
    thresholds, nothing evaluated), and 2,000 with 1,500 labels 76% / 12% / 12%. Strata too small to reach every part
    are dealt together, to each part's shortfall; every other patient keeps its part (rule 1 stays for models saved
    with it)."""
    import numpy as np

    from ehrdx.data.splits import rarest_label, split_patients

    rng = np.random.default_rng(0)
    for n, labels in ((200, 3000), (2000, 1500)):
        p = 1 / np.arange(1, labels + 1) ** 1.1
        y = np.zeros((n, labels), np.float32)
        for i in range(n):
            y[i, rng.choice(labels, 5, p=p / p.sum())] = 1
        tr, va, te = split_patients(y)
        assert abs(len(tr) / n - 0.7) < 0.02 and abs(len(va) / n - 0.15) < 0.02 and abs(len(te) / n - 0.15) < 0.02
        assert len(np.unique(np.concatenate([tr, va, te]))) == n
        old = split_patients(y, rule=1)
        assert len(old[0]) / n > 0.75  # what rule 1 gave
        strata, part_of = rarest_label(n, *np.nonzero(y), labels), {}
        for rule, parts in ((1, old), (2, (tr, va, te))):
            part_of[rule] = np.empty(n, int)
            for k, rows in enumerate(parts):
                part_of[rule][rows] = k
        sizes = np.unique(strata, return_counts=True)
        big = np.isin(strata, sizes[0][sizes[1] >= 3])
        np.testing.assert_array_equal(part_of[2][big], part_of[1][big])
    # a cohort of large strata is split as before
    y = (rng.random((500, 5)) < 0.3).astype(np.float32)
    for new, old in zip(split_patients(y, seed=3), split_patients(y, seed=3, rule=1)):
        np.testing.assert_array_equal(new, old)


def test_train_with_far_too_many_labels_keeps_patients_to_validate_and_test_and_evaluate_finds_them(tmp_path):
    """The command line: `--labels regex:.*` on 200 patients and 3,000 codes trained on every patient and evaluated
    nothing. The parts are kept, and the model's split rule travels with it (evaluate scores its own test part;
    a model saved before the rule existed is read with rule 1)."""
    import json

    events = _many_labels(tmp_path / "events.csv")
    r = run("train", "--events", events, "--labels", "regex:.*", "--model", "gru", "--epochs", "1", "--hidden", "8",
            "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert "patients: train 140, validation 30, test 30" in r.output
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["split_rule"] == 2
    r = run("evaluate", "--events", events, "--model", tmp_path / "m", "--out", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "e.json").read_text())["test_samples"]["patients"] == 30

    import ehrdx
    from ehrdx.cli.inputs import split_rows
    from ehrdx.input_settings import resolve

    store = ehrdx.open_store(events=events)
    clf = ehrdx.load(tmp_path / "m")
    settings = resolve({}, {})[0]
    assert len(split_rows(store, None, clf, settings, "held_out")[0]) == 30
    del config["split_rule"]  # a model saved before the rule existed is read as trained on rule 1's parts
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    clf = ehrdx.load(tmp_path / "m")
    assert clf.split_rule_ == 1
    with pytest.raises(EhrdxError, match="train 200, tuning 0, held_out 0"):
        split_rows(store, None, clf, settings, "held_out")


def test_train_says_how_many_labels_a_selection_makes_and_what_they_cost(tmp_path, monkeypatch):
    """`--labels regex:.*` (every code a label, birth included) trained thousands of labels without a word about
    them: no count, and the default model (auto, a booster per label for its gbm members) ran for many minutes with
    its bar at 0. The count is said before training; MEDS_BIRTH as a label, and a model fit per label with many
    labels, are said with what to do."""
    import ehrdx.cli.train as train_cli

    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n" + "\n".join(
        f"{p},1960-01-01,MEDS_BIRTH\n{p},2010-01-01,DX//E{p % 4}\n{p},2011-01-01,DX//I{p % 3}\n{p},2012-01-01,DX//E1"
        for p in range(1, 21)) + "\n")
    monkeypatch.setattr(train_cli, "MANY_LABELS", 5)  # as thousands of labels would
    r = run("train", "--events", events, "--labels", "regex:.*", "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    said = words(r.output)
    assert "labels: 8 (from --labels 'regex:.*', in the training patients)" in said
    assert "--labels 'regex:.*' makes MEDS_BIRTH a label" in said and "narrow --labels" in said
    assert "8 labels: logistic fits a model per label" in said and "--model gru" in said
    assert said.index("labels: 8") < said.index("model saved")
    r = run("train", "--events", events, "--model", "gru", "--epochs", "1", "--out", tmp_path / "m2")
    said = words(r.output)
    assert "labels: 7 (from --labels 'prefix:DX//'" in said and "MEDS_BIRTH" not in said and "per label" not in said


def test_the_split_s_strata_come_from_label_pairs_as_from_the_patients_by_labels_table():
    """The strata of an event store's split are read from its (patient, label) pairs: the [patients, labels] table
    they came from took 5 GB at 300,000 patients and 1,500 labels. Each patient's rarest label, the lowest of equally
    rare ones, as that table's argmin gave it."""
    import numpy as np

    from ehrdx.data.splits import rarest_label

    rng = np.random.default_rng(1)
    y = (rng.random((300, 40)) < rng.random(40) * 0.2).astype(np.float32)
    y[:20] = 0  # patients with no label
    freq = y.sum(0)
    dense = np.where(y.any(1), np.argmin(np.where(y > 0, freq[None, :], np.inf), axis=1), -1)
    np.testing.assert_array_equal(rarest_label(300, *np.nonzero(y), 40), dense)


# -- a patient table of one or two patients ----------------------------------------------------------------------

@pytest.mark.parametrize("patients, cv, said", [
    (2, 1, "error: --cv 1: cross-validation needs at least 2 folds"),
    (2, -1, "error: --cv -1: cross-validation needs at least 2 folds"),
    (2, 3, "option --cv: 3 folds need 3 patients or more (a test patient each); the table has 2 fix: give --cv from 2 to 2"),
    (1, 2, "option --cv: 2 folds need 2 patients or more (a test patient each); the table has 1"),
])
def test_cross_validation_with_too_few_folds_or_patients_is_an_error_not_a_traceback(tmp_path, patients, cv, said):
    """`train table.csv --cv 3` on 2 patients, or `--cv 1`, ended in a ValueError traceback (exit 1)."""
    table = tmp_path / "t.csv"
    table.write_text("patient_id,age,diseases\n" + "".join(f"p{i},{50 + i},D1\n" for i in range(patients)))
    r = run("train", table, "--cv", cv, "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    assert said in words(r.output) and "Traceback" not in r.output


def test_meds_subject_ids_beyond_int64_are_an_error_naming_the_shard_not_a_traceback(tmp_path):
    """A MEDS shard whose subject_id is uint64 with ids above 2**63 - 1 (hashed ids) stopped with polars'
    InvalidOperationError (exit 1); uint64 ids that fit are read as before."""
    import datetime as dt

    import polars as pl

    for name, first in (("big", 2**63 + 5), ("fits", 7)):
        meds = tmp_path / name
        (meds / "data").mkdir(parents=True)
        pl.DataFrame({"subject_id": pl.Series([first, first + 1] * 2, dtype=pl.UInt64),
                      "time": [dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 1), dt.datetime(2021, 1, 1),
                               dt.datetime(2021, 1, 1)], "code": ["DX//E11", "DX//I10", "DX//I10", "DX//E11"],
                      "numeric_value": pl.Series([None] * 4, dtype=pl.Float32)}).write_parquet(meds / "data" / "0.parquet")
        r = run("targets", "--meds", meds, "--out", tmp_path / f"{name}.csv")
        if name == "big":
            assert r.exit_code == 2, r.output
            said = words(r.output)
            assert f"{meds / 'data' / '0.parquet'}, column 'subject_id': subject ids beyond the int64 range" in said
            assert "Traceback" not in r.output
        else:
            assert r.exit_code == 0, r.output


def test_a_decimal_comma_in_the_value_column_is_refused_with_the_decimal_point_as_fix(tmp_path):
    """`"5,5"` (a European decimal comma, quoted) was refused with "put text results in text_value, or empty the
    cell": the fix for a lab comment, not for a number written the other way. The fix says the decimal point, as
    the OMOP reader's does."""
    events = tmp_path / "events.csv"
    events.write_text('subject_id,time,code,numeric_value\n1,2020-01-01,LAB//A,"5,5"\n1,2021-01-01,DX//E11,\n')
    r = run("targets", "--events", events, "--out", tmp_path / "t.csv")
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert "column 'numeric_value': text in the numeric value column" in said
    assert "fix: write numbers with a decimal point (5.5, not 5,5)" in said


@pytest.mark.parametrize("labels, said", [
    ("prefix:NOPE//", "error: no label code of --labels 'prefix:NOPE//' occurs in the 2 patients' events"),
    ("regex:()", "error: no label code of --labels 'regex:()' occurs"),  # an empty match was a label named ''
    ("map:", "error: option --labels: unknown label spec 'map:'"),  # was: --out lies inside '.', the label map
])
def test_targets_of_a_selection_that_makes_no_label_is_an_error_not_an_empty_table(tmp_path, monkeypatch, labels,
                                                                                    said):
    """`targets --labels prefix:NOPE//` wrote a header-only table ("0 prediction times x 0 labels", exit 0), as train
    refuses; `regex:()` made every code a record of a label named '' (the long table's marker for a prediction
    time); `map:` without a file was taken for the current directory."""
    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n1,2020-01-01,DX//E11\n1,2021-01-01,DX//I10\n2,2020-01-01,DX//E11\n"
                      "2,2021-01-01,DX//E11\n")
    monkeypatch.chdir(tmp_path)  # an output in the current directory, where `map:` pointed
    r = run("targets", "--events", events, "--labels", labels, "--out", "t.csv")
    assert r.exit_code == 2, r.output
    assert said in words(r.output) and not (tmp_path / "t.csv").exists()


def test_a_regex_whose_match_is_empty_gives_no_label():
    from ehrdx.tasks.select import LabelSelector

    assert LabelSelector.parse("regex:x*").labels_of("DX//E11") == []
    assert LabelSelector.parse("regex:^DX//(E11)").labels_of("DX//E11.9") == ["E11"]
    assert LabelSelector.parse("regex:^DX//").labels_of("DX//E11") == ["DX//"]  # no group: the match, as before


def test_baselines_are_fitted_once_each_and_said_when_there_is_no_test_patient(tmp_path):
    """`--baselines logistic,,logistic` fitted logistic twice; with no test patients the baselines were skipped
    without a word (metrics.json had no 'baselines', the terminal said nothing of them)."""
    events = _events(tmp_path / "events.csv", 20)
    # (the model is mlp: a logistic baseline beside a logistic model is the model itself, left out)
    r = run("train", "--events", events, "--model", "mlp", "--epochs", "1", "--baselines", "logistic,,logistic",
            "--out", tmp_path / "m")
    assert r.exit_code == 0 and r.output.count("fitting baseline logistic") == 1, r.output
    r = run("train", "--events", events, "--model", "mlp", "--epochs", "1", "--baselines", "logistic",
            "--test-fraction", "0", "--out", tmp_path / "m0")
    assert r.exit_code == 0 and "baselines logistic not fitted or scored: no test patients" in words(r.output)
    metrics = json.loads((tmp_path / "m0" / "metrics.json").read_text())
    assert metrics["not_evaluated"] == {"what": ["baselines logistic"], "why": "no test patients"}
