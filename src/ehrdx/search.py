"""`ehrdx train --search N`: try N settings of the model (for `auto`, N of each member) on the tuning patients,
with Optuna's seeded TPE sampler, within a time budget, resumable from a journal file; the best settings
are set on the estimator (and so saved with the model).

Every trial fits on the training rows and is scored on the tuning (validation) rows only, by the macro
AUPRC of the labels known there (new onset only for a new-onset model): the test patients are never seen.
Optuna is an optional dependency (`pip install ehrdx[search]`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.base import clone

from ehrdx.errors import EhrdxError, python_terms
from ehrdx.estimator import EHRClassifier
from ehrdx.evaluate.metrics import evaluate_predictions
from ehrdx.models.registry import get_model

SEQUENCE_SPACE = {"hidden": ("int", 32, 256, True), "layers": ("int", 1, 3, False),
                  "dropout": ("float", 0.0, 0.5, False), "lr": ("float", 3e-4, 1e-2, True),
                  "batch_size": ("categorical", (16, 32, 64, 128)), "weight_decay": ("float", 1e-6, 1e-2, True)}
ROWS_SPACE = {"hidden": ("int", 32, 512, True), "layers": ("int", 1, 3, False), "dropout": ("float", 0.0, 0.5, False),
              "lr": ("float", 3e-4, 1e-2, True), "weight_decay": ("float", 1e-6, 1e-2, True)}
GBM_SPACE = {"learning_rate": ("float", 0.01, 0.2, True), "num_leaves": ("int", 7, 63, True),
             "min_data_in_leaf": ("int", 5, 200, True), "feature_fraction": ("float", 0.4, 1.0, False),
             "lambda_l2": ("float", 1e-3, 10.0, True)}
# the options of `ehrdx train --search` in the errors of search_settings, as its parameters (ehrdx.errors)
PARAMETERS = {"--search": "trials", "--budget": "budget_seconds"}


def _suggest(trial, name: str, spec: tuple):
    if spec[0] == "categorical":
        return trial.suggest_categorical(name, list(spec[1]))
    low, high, log = spec[1], spec[2], spec[3]
    if spec[0] == "int":
        return trial.suggest_int(name, low, high, log=log)
    return trial.suggest_float(name, low, high, log=log)


def space_of(model: str) -> tuple[dict, str]:
    """The settings searched for a model, and whether they are estimator settings or gbm_params."""
    if model in ("gbm", "gbm-counts"):
        return GBM_SPACE, "gbm_params"
    if model == "logistic":
        raise EhrdxError("--search: the logistic model has no settings to search")
    return (SEQUENCE_SPACE if get_model(model).inputs_for("events") == "sequence" else ROWS_SPACE), "estimator"


def tuning_score(clf: EHRClassifier, source, val_rows) -> float:
    """Macro AUPRC on the tuning rows (labels known there; new onset only for a new-onset model)."""
    s = clf.samples(source, val_rows)
    if len(s) == 0:
        return 0.0
    r = evaluate_predictions(s.y_bits, s.train_mask_bits(clf.new_onset_), clf.scores(source, s), clf.labels_, None)
    return float(r["macro_auprc"] or 0.0)


def study_name(clf: EHRClassifier, model: str, train_rows, val_rows) -> str:
    """The journal's name for this search: the model and a digest of what its trials depend on (the other
    settings: task, labels, seed, ...; the training and tuning rows), so that a journal resumes the same
    search and never hands one task's trials to another (then a new search starts beside it). The searched
    settings themselves are left out: auto's gru search follows the gbm search's result."""
    searched = {"gbm_params", *GBM_SPACE, *SEQUENCE_SPACE, *ROWS_SPACE}
    params = {k: repr(v) for k, v in sorted(clf.get_params().items()) if k not in searched}
    rows = [hashlib.sha256(np.asarray(r, dtype=np.int64).tobytes()).hexdigest() for r in (train_rows, val_rows)]
    return f"ehrdx-{model}-" + hashlib.sha256(json.dumps([model, params, rows]).encode()).hexdigest()[:16]


def search_model(clf: EHRClassifier, model: str, source, train_rows, val_rows, trials: int,
                 budget_seconds: float | None, journal: Path | None,
                 on_trial: Callable[[str, int, dict, float], None] | None = None) -> dict:
    """Search `trials` settings of `model` (a single model) from `clf`'s; the best settings and every trial."""
    try:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
    except ImportError:
        raise EhrdxError("--search needs Optuna\n  fix: pip install 'ehrdx[search]' (or optuna)") from None
    # ERROR: a trial stopped by Ctrl-C or an error is logged by Optuna as a warning with its traceback; the
    # error itself reaches the caller (the command line says it without one)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space, where = space_of(model)
    storage = JournalStorage(JournalFileBackend(str(journal))) if journal is not None else None
    study = optuna.create_study(study_name=study_name(clf, model, train_rows, val_rows), direction="maximize",
                                storage=storage, load_if_exists=True)
    # seeded by the trials already in the journal too: a resumed search reseeded as a fresh one would draw the
    # settings it already tried again (a fresh search: the seed alone, as before)
    study.sampler = optuna.samplers.TPESampler(seed=clf.seed + len(study.trials))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]

    def objective(trial) -> float:
        values = {k: _suggest(trial, k, spec) for k, spec in space.items()}
        settings = {"gbm_params": {**(clf.gbm_params or {}), **values}} if where == "gbm_params" else values
        trial_clf = clone(clf).set_params(model=model, **settings)
        trial_clf.fit(source, train_rows, val_rows)
        score = tuning_score(trial_clf, source, val_rows)
        if on_trial is not None:
            on_trial(model, trial.number, values, score)
        return score

    asked = left = max(trials - len(done), 0)
    before, t0 = len(study.trials), time.perf_counter()
    if left and not done:  # Optuna checks the budget before each trial: the first runs whatever is left of it,
        study.optimize(objective, n_trials=1)  # so that there is a best (a slow earlier member left none)
        left -= 1
    if left:
        spent = time.perf_counter() - t0
        study.optimize(objective, n_trials=left,
                       timeout=None if budget_seconds is None else max(budget_seconds - spent, 0.0))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # fewer trials run than were left: the timeout stopped them (a trial without a score is run, and failed)
    stopped = budget_seconds is not None and len(study.trials) - before < asked
    if not complete:  # e.g. every trial's score was not a number (Optuna marks those failed, raising nothing)
        raise EhrdxError(f"--search: no trial of {model} finished with a score\n  fix: check the tuning patients' "
                         "labels (ehrdx targets shows them)")
    best = study.best_trial
    best_settings = ({"gbm_params": {**(clf.gbm_params or {}), **best.params}} if where == "gbm_params"
                     else dict(best.params))
    return {"model": model, "best": best_settings, "best_tuning_auprc": best.value, "resumed_trials": len(done),
            "requested_trials": trials, "stopped_by_budget": stopped,
            "seconds": round(time.perf_counter() - t0, 2),
            "trials": [{"number": t.number, "settings": t.params, "tuning_auprc": t.value} for t in complete]}


def check_search(trials: int, budget_seconds: float | None) -> None:
    """Refuse a number of trials or a budget that allows no trial (Optuna would run none and find no best)."""
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
        raise EhrdxError(f"option --search: {trials!r} settings to try: a search tries at least 1\n"
                         "  fix: a whole number of settings, at least 1")
    if budget_seconds is not None and not budget_seconds > 0:
        raise EhrdxError(f"option --budget: a budget of {budget_seconds!r} seconds leaves no time for a trial\n"
                         "  fix: a positive budget, or none (every trial runs)")


@python_terms(PARAMETERS)
def search_settings(clf: EHRClassifier, data, splits, trials: int, budget_seconds: float | None = None,
                    journal_dir: str | Path | None = None, targets=None,
                    on_trial: Callable[[str, int, dict, float], None] | None = None) -> dict:
    """Search the settings of `clf`'s model (of each member for `auto`) on the tuning rows of `splits`, set the
    best ones on `clf` and return what was tried. The budget is shared by the members; each member runs at
    least one trial (the budget is checked between trials), and `stopped_by_budget` says where it cut one short."""
    check_search(trials, budget_seconds)
    source = clf.source(data, targets, for_fit=True)
    kind = clf.resolve_settings(source.kind)
    # auto: gbm-counts fits with gbm's settings (one gbm_params), so gbm's search sets both
    members = ("gbm", "gru") if clf.model_name_ == "auto" else (kind.name,)
    tr, va = splits[0], splits[1]
    if len(va) == 0:
        raise EhrdxError("--search scores settings on the tuning patients, and there are none\n"
                         "  fix: a validation share above 0 (--val-fraction) or MEDS tuning patients")
    if journal_dir is not None:
        Path(journal_dir).mkdir(parents=True, exist_ok=True)
    out, start = {"members": {}}, time.perf_counter()
    for i, member in enumerate(members):
        left = None if budget_seconds is None else max(budget_seconds - (time.perf_counter() - start), 1.0) / (
            len(members) - i)
        journal = Path(journal_dir) / f"search_{member}.journal" if journal_dir is not None else None
        result = search_model(clf, member, source, tr, va, trials, left, journal, on_trial)
        clf.set_params(**result["best"])
        out["members"][member] = result
    out["chosen"] = {k: v for k, v in clf.get_params().items() if k in {*SEQUENCE_SPACE, *ROWS_SPACE, "gbm_params"}}
    out["scored_on"] = "tuning (validation) patients: macro AUPRC"
    return out
