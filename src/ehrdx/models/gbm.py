"""Gradient boosting (LightGBM) on history features: one booster per label, masked, early-stopped on the
tuning patients, saved as LightGBM's own text model inside JSON (no pickle).

Why LightGBM rather than XGBoost: the inputs are wide and sparse (a few columns per code, most of them
zero), and LightGBM's exclusive feature bundling packs mutually exclusive sparse columns into one histogram,
so a tree costs about the non-zeros rather than the columns; its histogram building is fast on one or two
CPU threads; a booster round-trips through a plain text model string (`model_to_string` /
`Booster(model_str=...)`), which fits ehrdx's no-pickle JSON artifacts; and `deterministic=True` gives the
same model on every run. XGBoost would do as well in quality (both are the
strong count baselines in the literature); LightGBM is the one that is faster on this shape of data on CPU.

One booster per label, each fit on the samples where that label is known (the caller's mask, e.g. the
new-onset mask), because the known samples differ per label. Labels known on the same samples (every label
when training on all samples; the new-onset mask differs per label) share one binned `lgb.Dataset` (its
label set per booster: the same bins, so the same trees as a Dataset of their own); a label with its own
samples gets its own Dataset (LightGBM 4.7's `Dataset.subset` of a shared one failed its split checks, or
crashed, on small cohorts). Binning was about a third of the gbm member's time on the demo cohort. A label
whose known training samples are all one class (or none) gets a constant logit at its clipped base rate,
as in the logistic baseline. Determinism: `deterministic=True`, `force_row_wise=True` and every seed from
`seed`. Threads: the model (`_build`, and `_load` for a loaded one's predictions and `ehrdx update`) uses
as many LightGBM threads as torch does (`torch.get_num_threads()`: OMP_NUM_THREADS, or the cores);
`GBMModel` alone defaults to 1. The boosters do not depend on the thread count: LightGBM's `deterministic`
is documented to give the same result for the same data and parameters with a different `num_threads`,
and boosters fit with 1, 2 and 4 threads had identical trees (LightGBM 4.7; only the `[num_threads: N]`
line of the saved model string differs). A different LightGBM version, compiler or platform may give
different trees. Speed does depend on it: on a shared 2-core machine two threads took 4.5x longer than
one (OpenMP threads wait on each other when the cores are busy), so set OMP_NUM_THREADS=1 there.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp

from ehrdx.data.batches import HISTORY, MATRIX
from ehrdx.data.bits import as_table, label_columns
from ehrdx.data.history import HistoryFeaturizer, HistorySet
from ehrdx.errors import ModelError
from ehrdx.models.gbm_datasets import LabelDatasets
from ehrdx.models.registry import EVENTS, TABLE, ModelKind, register_model

# Chosen on the built-in cohort (benchmarks/bench_gbm.py, 5,000 and 20,000 patients, new-onset macro AUROC
# and AUPRC): 15 leaves matched or beat 31 at both sizes; learning rate 0.1 lost 0.008 AUROC against 0.05;
# 63 bins gave the quality of 255, faster; the rest are LightGBM's usual choices for sparse counts.
DEFAULT_PARAMS = {
    "objective": "binary", "metric": "binary_logloss", "learning_rate": 0.05, "num_leaves": 15,
    "min_data_in_leaf": 20, "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
    "lambda_l2": 1.0, "max_bin": 63, "verbose": -1,
}
# What binning reads (must be the same for the shared Dataset and every booster).
DATASET_PARAMS = ("max_bin", "min_data_in_bin", "feature_pre_filter", "verbose", "min_data_in_leaf",
                  "num_threads", "deterministic", "force_row_wise", "seed")
BASE_RATE_CLIP = 1e-4
# A booster's set-up (LightGBM's row-wise histogram layout, built when each label's training starts) costs
# about rows x feature columns, whatever the rounds: with a hospital vocabulary's 20k columns that is tens of
# seconds per label (BENCHMARKS.md, issue 15). Above this many columns each label's booster sees only the
# columns chosen for it by screen_columns; every external set so far has fewer (clinosim about 3,800).
MAX_FEATURES = 4096


def constant_logit(y: np.ndarray) -> float:
    p = float(np.clip(y.mean() if len(y) else 0.5, BASE_RATE_CLIP, 1 - BASE_RATE_CLIP))
    return float(np.log(p / (1 - p)))


class GBMModel:
    """One LightGBM booster (or a constant) per label; `decision_function` gives logits [N, L]."""

    def __init__(self, params: dict | None = None, num_boost_round: int = 1000, early_stopping_rounds: int = 50,
                 num_threads: int = 1, rounds_without_validation: int = 200,
                 max_features: int = MAX_FEATURES) -> None:
        self.params = dict(params or {})  # overrides of DEFAULT_PARAMS
        self.max_features = max_features  # columns one label's booster sees at most (screen_columns)
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds
        self.num_threads = num_threads
        self.rounds_without_validation = rounds_without_validation  # a label with no known tuning sample

    def _full_params(self, seed: int) -> dict:
        # feature_pre_filter: columns too rare to split under min_data_in_leaf (over all training rows) are
        # dropped once, when the shared Dataset is binned; the same value goes to every booster.
        return {**DEFAULT_PARAMS, **self.params, "num_threads": self.num_threads, "deterministic": True,
                "force_row_wise": True, "feature_pre_filter": True, "seed": seed}

    @property
    def config(self) -> dict:
        self._check_fitted()
        return {"kind": "gbm", "n_features": self.n_features_, "n_labels": len(self.labels_),
                "params": self.params, "num_boost_round": self.num_boost_round,
                "early_stopping_rounds": self.early_stopping_rounds, "num_threads": self.num_threads,
                "rounds_without_validation": self.rounds_without_validation, "seed": self.seed_,
                "max_features": self.max_features}

    # -- fit -------------------------------------------------------------------------------------
    def fit(self, X: sp.csr_matrix, y: np.ndarray, mask: np.ndarray, X_val: sp.csr_matrix | None = None,
            y_val: np.ndarray | None = None, mask_val: np.ndarray | None = None, seed: int = 0,
            on_label: Callable[[int, dict], None] | None = None) -> GBMModel:
        """Fit a booster per column of `y` [N, L] on the rows where `mask` [N, L] is True, stopping early on
        the rows of `X_val` where `mask_val` is True. `on_label(j, info)` is called after each label."""
        self.n_features_ = X.shape[1]
        self.seed_ = seed
        self.labels_: list[dict] = []
        self.boosters_: list[lgb.Booster | None] = []
        self.fit_seconds_: list[float] = []
        return self.add_labels(X, y, mask, X_val, y_val, mask_val, on_label)

    def add_labels(self, X: sp.csr_matrix, y: np.ndarray, mask: np.ndarray, X_val: sp.csr_matrix | None = None,
                   y_val: np.ndarray | None = None, mask_val: np.ndarray | None = None,
                   on_label: Callable[[int, dict], None] | None = None) -> GBMModel:
        """Fit boosters for new labels (`y`, `mask`: [N, L_new], only the new columns) and append them; the
        boosters already there are kept as they are, so they predict exactly as before."""
        self._check_fitted()
        self._check_features(X)
        y, mask = as_table(y), as_table(mask, bool)  # packed tables stay packed: read a label's column at a time
        if y.shape != mask.shape or y.shape[0] != X.shape[0]:
            raise ModelError(f"y {y.shape}, mask {mask.shape} and X {X.shape} do not agree")
        params = self._full_params(self.seed_)
        data_params = {k: v for k, v in params.items() if k in DATASET_PARAMS}
        X = sp.csr_matrix(X)
        val = None
        if X_val is not None and y_val is not None and mask_val is not None and X_val.shape[0]:
            self._check_features(X_val)
            val = sp.csr_matrix(X_val)
            y_val, mask_val = as_table(y_val), as_table(mask_val, bool)
            if y_val.shape != mask_val.shape or y_val.shape != (X_val.shape[0], y.shape[1]):
                raise ModelError(f"validation y {y_val.shape}, mask {mask_val.shape} and X {X_val.shape} do not "
                                 f"agree with {y.shape[1]} new labels")
        datasets = LabelDatasets(data_params, self.max_features)
        for j in range(y.shape[1]):
            t0 = time.perf_counter()
            rows = np.flatnonzero(mask[:, j])
            yj = (y[:, j][rows] > 0.5).astype(np.float64)
            if len(rows) == 0 or yj.min() == yj.max():
                self.labels_.append({"kind": "constant", "logit": constant_logit(yj),
                                     "train_samples": len(rows), "positives": int(yj.sum())})
                self.boosters_.append(None)
                self.fit_seconds_.append(time.perf_counter() - t0)
                if on_label is not None:
                    on_label(len(self.labels_) - 1, self.labels_[-1])
                continue
            v_rows = np.flatnonzero(mask_val[:, j]) if val is not None else np.zeros(0, np.int64)
            yv = (y_val[:, j][v_rows] > 0.5).astype(np.float64) if len(v_rows) else None
            sub, vsub, cols = datasets.get(X, rows, yj, val, v_rows, yv)
            if len(v_rows):
                booster = lgb.train(params, sub, num_boost_round=self.num_boost_round, valid_sets=[vsub],
                                    callbacks=[lgb.early_stopping(self.early_stopping_rounds, first_metric_only=True,
                                                                  verbose=False)])
                rounds = booster.best_iteration or booster.current_iteration()
                stopped = "early" if rounds < self.num_boost_round else "max_rounds"
            else:
                booster = lgb.train(params, sub, num_boost_round=self.rounds_without_validation)
                rounds, stopped = booster.current_iteration(), "no_validation"
            # Keep exactly what is saved: the trees up to the best round, read back from the model text.
            text = booster.model_to_string(num_iteration=rounds)
            del booster  # the training booster reads the shared Datasets' labels: gone before they are set again
            self.boosters_.append(lgb.Booster(model_str=text))
            self.labels_.append({"kind": "booster", "rounds": int(rounds), "stopped": stopped,
                                 "train_samples": len(rows), "positives": int(yj.sum()),
                                 "val_samples": len(v_rows),
                                 **({"columns": cols.tolist()} if cols is not None else {})})
            self.fit_seconds_.append(time.perf_counter() - t0)
            if on_label is not None:
                on_label(len(self.labels_) - 1, self.labels_[-1])
        return self

    # -- predict ---------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "labels_"):
            raise ModelError("this GBMModel is not fitted yet: call fit() or from_dict()")

    def _check_features(self, X) -> None:
        if X.shape[1] != self.n_features_:
            raise ModelError(f"the model was fit on {self.n_features_} features, got {X.shape[1]}: build the "
                             "features with the featuriser saved with the model")

    def decision_function(self, X: sp.csr_matrix) -> np.ndarray:
        """Logits [N, L] float64: raw booster scores (sigmoid gives the probability), constants where a
        label had one class in training."""
        self._check_fitted()
        self._check_features(X)
        out = np.zeros((X.shape[0], len(self.labels_)), dtype=np.float64)
        if X.shape[0] == 0:
            return out
        X = sp.csr_matrix(X)
        for j, (info, booster) in enumerate(zip(self.labels_, self.boosters_)):
            if booster is None:
                out[:, j] = info["logit"]
            else:
                out[:, j] = booster.predict(self._columns(X, j), raw_score=True, num_threads=self.num_threads)
        return out

    def _columns(self, X: sp.csr_matrix, label: int) -> sp.csr_matrix:
        """The columns of `X` that label `label`'s booster was fit on (all, unless they were screened)."""
        cols = self.labels_[label].get("columns")
        return X if cols is None else X[:, np.asarray(cols, dtype=np.int64)]

    def _widen(self, values: np.ndarray, label: int) -> np.ndarray:
        """[..., used columns] values of label `label`'s booster placed at their columns of all n_features."""
        cols = self.labels_[label].get("columns")
        if cols is None:
            return values
        out = np.zeros((*values.shape[:-1], self.n_features_), dtype=values.dtype)
        out[..., np.asarray(cols, dtype=np.int64)] = values
        return out

    def contributions(self, X: sp.csr_matrix, label: int) -> np.ndarray:
        """[N, n_features + 1] each feature's contribution (TreeSHAP, LightGBM's `pred_contrib`) to label
        `label`'s logit, the last column the expected logit; each row sums to decision_function's logit."""
        self._check_fitted()
        self._check_features(X)
        booster = self.boosters_[label]
        if booster is None:
            out = np.zeros((X.shape[0], self.n_features_ + 1))
            out[:, -1] = self.labels_[label]["logit"]
            return out
        contrib = booster.predict(self._columns(sp.csr_matrix(X), label), pred_contrib=True,
                                  num_threads=self.num_threads)
        contrib = np.asarray(contrib.toarray() if sp.issparse(contrib) else contrib, dtype=np.float64)
        return np.concatenate([self._widen(contrib[:, :-1], label), contrib[:, -1:]], axis=1)

    def feature_importance(self, importance_type: str = "gain") -> np.ndarray:
        """[L, n_features] total gain (or split count, `importance_type="split"`) of each feature per label;
        zeros for constant labels."""
        self._check_fitted()
        out = np.zeros((len(self.labels_), self.n_features_), dtype=np.float64)
        for j, booster in enumerate(self.boosters_):
            if booster is not None:
                out[j] = self._widen(np.asarray(booster.feature_importance(importance_type=importance_type),
                                                np.float64), j)
        return out

    # -- artifacts -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON: the config and, per label, its LightGBM model text or its constant."""
        self._check_fitted()
        labels = [dict(info, **({"model": b.model_to_string()} if b is not None else {}))
                  for info, b in zip(self.labels_, self.boosters_)]
        return {**self.config, "lightgbm": lgb.__version__, "labels": labels}

    @classmethod
    def from_dict(cls, d: dict) -> GBMModel:
        if d.get("kind") != "gbm":
            raise ModelError(f"not a gbm model (kind {d.get('kind')!r})")
        out = cls(d["params"], d["num_boost_round"], d["early_stopping_rounds"], d["num_threads"],
                  d["rounds_without_validation"], d.get("max_features", MAX_FEATURES))
        out.n_features_, out.seed_ = int(d["n_features"]), int(d["seed"])
        out.labels_ = [{k: v for k, v in info.items() if k != "model"} for info in d["labels"]]
        out.boosters_ = [lgb.Booster(model_str=info["model"]) if info["kind"] == "booster" else None
                         for info in d["labels"]]
        out.fit_seconds_ = []
        return out


FEATURE_SETS = ("all", "counts")  # "counts": each code's whole-history count and age (sex is a code) only


def counts_columns(names: list[str]) -> np.ndarray:
    """The columns of the "counts" feature set among history feature names: age_years and count:C."""
    return np.flatnonzero([n == "age_years" or n.startswith("count:") for n in names])


class HistoryGBM:
    """The `gbm` model of the registry: history features (HistoryFeaturizer, fitted on the training samples'
    patients) and one booster per label; on a patient table, its count matrix instead (no history there).
    `features="counts"` (the `gbm-counts` model) keeps only each code's count and age: the baseline users know,
    which beat the full features on clinosim (BENCHMARKS.md, issue 14); `auto` averages both with the GRU."""

    def __init__(self, n_labels: int, num_threads: int = 1, params: dict | None = None,
                 features: str = "all") -> None:
        if features not in FEATURE_SETS:
            raise ModelError(f"unknown gbm feature set {features!r}: choose from {', '.join(FEATURE_SETS)}")
        self.n_labels = n_labels
        self.features = features
        self.featurizer: HistoryFeaturizer | None = None
        # Called after each label's booster in fit_sets (not saved); may raise to stop the fit (train/beside.py).
        self.on_label: Callable[[int, dict], None] | None = None
        self.gbm = GBMModel(params, num_threads=num_threads)

    @property
    def config(self) -> dict:
        return {"kind": "gbm", "n_labels": self.n_labels, "history": self.featurizer is not None,
                "features": self.features}

    @property
    def hyperparameters(self) -> dict:
        """What a fit depends on besides its data and seed (a checkpoint of another run's settings is refused):
        LightGBM's parameters, the rounds, the history feature windows and the feature set. Not the thread
        count, which may differ on the machine that resumes."""
        g, features = self.gbm, HistoryFeaturizer()
        params = {k: v for k, v in g._full_params(0).items() if k not in ("num_threads", "seed")}
        out = {"params": params, "num_boost_round": g.num_boost_round, "early_stopping_rounds":
               g.early_stopping_rounds, "rounds_without_validation": g.rounds_without_validation,
               "windows": list(features.windows), "max_codes": features.max_codes}
        if g.max_features != MAX_FEATURES:  # the default is what checkpoints before the screen had
            out["max_features"] = g.max_features
        return out if self.features == "all" else {**out, "features": self.features}  # gbm's as before

    def _matrix(self, dataset, counts: dict | None = None) -> sp.csr_matrix:
        if isinstance(dataset, HistorySet):
            X = self.featurizer.transform(dataset.store, dataset.samples, counts=counts)
            return X[:, counts_columns(self.featurizer.feature_names_)] if self.features == "counts" else X
        return dataset.X

    @property
    def feature_names(self) -> list[str]:
        """The names of the columns the boosters read (history features only)."""
        names = self.featurizer.feature_names_
        return [names[i] for i in counts_columns(names)] if self.features == "counts" else names

    def fit_sets(self, train, val=None, seed: int = 0) -> HistoryGBM:
        if isinstance(train, HistorySet):
            self.featurizer = HistoryFeaturizer().fit(train.store, np.unique(train.samples.row), train.encoder)
        X = self._matrix(train)
        with_val = val is not None and len(val) > 0
        self.gbm.fit(X, train.y_bits, train.mask_bits, self._matrix(val) if with_val else None,
                     val.y_bits if with_val else None, val.mask_bits if with_val else None, seed=seed,
                     on_label=getattr(self, "on_label", None))
        return self

    def add_labels(self, train, val=None, n_old: int = 0, seed: int = 0) -> HistoryGBM:
        """Boosters for the labels from column `n_old` on, on the saved features; the old ones are kept."""
        with_val = val is not None and len(val) > 0
        self.gbm.add_labels(self._matrix(train), label_columns(train.y_bits, n_old),
                            label_columns(train.mask_bits, n_old), self._matrix(val) if with_val else None,
                            label_columns(val.y_bits, n_old) if with_val else None,
                            label_columns(val.mask_bits, n_old) if with_val else None)
        self.n_labels = train.y_bits.shape[1]
        return self

    def predict_logits(self, dataset) -> np.ndarray:
        return self.gbm.decision_function(self._matrix(dataset))


def _build(train_set, n_labels: int, params: dict, features: str = "all") -> HistoryGBM:
    import torch

    # As many threads as torch uses (OMP_NUM_THREADS or the cores); the boosters are the same for any count
    # (deterministic=True). On a machine shared with other jobs, one thread can be faster (module docstring).
    return HistoryGBM(n_labels, num_threads=max(1, torch.get_num_threads()), params=params.get("gbm_params"),
                      features=features)


def _build_counts(train_set, n_labels: int, params: dict) -> HistoryGBM:
    return _build(train_set, n_labels, params, features="counts")


def _save(model: HistoryGBM) -> tuple[dict, dict, dict]:
    files = {"gbm.json": {"model": model.gbm.to_dict(),
                          "features": model.featurizer.to_dict() if model.featurizer is not None else None}}
    return model.config, {}, files


def _load(config: dict, state: dict, files: dict) -> HistoryGBM:
    saved = files["gbm.json"]
    import torch

    model = HistoryGBM(config["n_labels"], features=config.get("features", "all"))  # older models: "all"
    model.gbm = GBMModel.from_dict(saved["model"])
    model.gbm.num_threads = max(1, torch.get_num_threads())  # this machine's, not the one it was trained on
    model.featurizer = HistoryFeaturizer.from_dict(saved["features"]) if saved["features"] else None
    return model


register_model(ModelKind(
    "gbm", {EVENTS: HISTORY, TABLE: MATRIX}, (TABLE, EVENTS),
    "gradient boosting (LightGBM), one booster per label, on history features: counts in windows, recency, "
    "value trends", _build, _save, _load, epochs=False, per_label=True))
register_model(ModelKind(
    "gbm-counts", {EVENTS: HISTORY}, (EVENTS,),
    "gradient boosting (LightGBM) as gbm, on each code's count and age only (the count baseline; an auto member)",
    _build_counts, _save, _load, epochs=False, per_label=True))
