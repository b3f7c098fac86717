"""`auto`: the chosen ensemble. Fits each candidate model (gradient boosting on history features and a GRU
over visits), then, per label, the weights of a probability average chosen on the tuning (validation)
samples only: the weight grid is searched for the best tuning AUPRC of that label, and a mix is kept only if
it beats the best single candidate by more than `MIN_GAIN`; otherwise that candidate alone. The members, the
weights and the tuning scores behind them are saved with the model and listed in its metrics."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score

from ehrdx.data.batches import HISTORY, SEQUENCE
from ehrdx.errors import ModelError
from ehrdx.models.registry import EVENTS, ModelKind, get_model, register_model
from ehrdx.train.fit import fit_model, model_logits

ENSEMBLE = "auto"
MEMBERS = ("gbm", "gru")
GRID = np.linspace(0.0, 1.0, 11)  # weight of the first member; the second gets the rest
MIN_GAIN = 0.005  # tuning AUPRC a mix must add over the best single member to be kept
EPS = 1e-6


def _auprc(y: np.ndarray, p: np.ndarray) -> float | None:
    if len(y) == 0 or y.min() == y.max():
        return None
    return float(average_precision_score(y, p))


def choose_weights(p_val: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Per label, weights [L, M] of the members' probabilities p_val [M, N, L] with the best tuning AUPRC
    (masked samples only), and what each choice rests on. A label with no positive and negative among its
    known tuning samples gets equal weights."""
    M, _, L = p_val.shape
    weights = np.full((L, M), 1.0 / M)
    report = []
    for j in range(L):
        m = mask[:, j]
        yj = y[m, j] > 0.5
        single = [_auprc(yj, p_val[k, m, j]) for k in range(M)]
        if any(s is None for s in single):
            report.append({"chosen": "equal weights (no positive or no negative among tuning samples)"})
            continue
        best_k = int(np.argmax(single))
        best_w, best_score = None, single[best_k]
        if M == 2:
            for w in GRID[1:-1]:
                score = _auprc(yj, w * p_val[0, m, j] + (1 - w) * p_val[1, m, j])
                if score is not None and score > best_score + MIN_GAIN and (best_w is None or score > best_w[1]):
                    best_w = (w, score)
        if best_w is not None:
            weights[j] = [best_w[0], 1 - best_w[0]]
            report.append({"chosen": "mix", "tuning_auprc": best_w[1], "single_auprc": single})
        else:
            weights[j] = np.eye(M)[best_k]
            report.append({"chosen": "single", "tuning_auprc": single[best_k], "single_auprc": single})
    return weights, report


class EnsembleModel:
    """Members by name, and per-label weights of their probabilities."""

    def __init__(self, n_labels: int, settings: dict, members: tuple[str, ...] = MEMBERS) -> None:
        self.n_labels = n_labels
        self.settings = settings
        self.names = tuple(members)
        self.members: dict[str, object] = {}
        self.weights = np.full((n_labels, len(members)), 1.0 / len(members))
        self.choices: list[dict] = []

    @property
    def config(self) -> dict:
        return {"kind": ENSEMBLE, "n_labels": self.n_labels, "members": list(self.names),
                "weights": self.weights.tolist(), "choices": self.choices}

    def fit_sets(self, train: dict, val: dict | None = None, seed: int = 0) -> EnsembleModel:
        if not val or len(next(iter(val.values()))) == 0:
            raise ModelError("the auto model chooses its weights on validation (tuning) patients, and there are none")
        self.members, probs = {}, []
        for name in self.names:
            spec = get_model(name, EVENTS)
            kind = spec.inputs_for(EVENTS)
            member = spec.build(train[kind], self.n_labels, self.settings)
            fit_model(member, train[kind], val[kind], self.settings["train"])
            self.members[name] = member
            probs.append(_sigmoid(model_logits(member, val[kind])))
        v = val[SEQUENCE]
        self.weights, self.choices = choose_weights(np.stack(probs), v.y, v.y_mask)
        return self

    def member_probabilities(self, dataset: dict) -> np.ndarray:
        """[M, N, L] each member's probabilities."""
        return np.stack([_sigmoid(model_logits(self.members[name], dataset[get_model(name).inputs_for(EVENTS)]))
                         for name in self.names])

    def predict_logits(self, dataset: dict) -> np.ndarray:
        p = np.einsum("mnl,lm->nl", self.member_probabilities(dataset), self.weights)
        p = np.clip(p, EPS, 1 - EPS)
        return np.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _build(train_set, n_labels: int, settings: dict) -> EnsembleModel:
    return EnsembleModel(n_labels, settings)


def _save(model: EnsembleModel) -> tuple[dict, dict, dict]:
    config, tensors, files = dict(model.config), {}, {}
    config["member_configs"] = {}
    for name, member in model.members.items():
        cfg, state, member_files = get_model(name).save(member)
        config["member_configs"][name] = cfg
        tensors.update({f"{name}.{k}": v for k, v in state.items()})
        files.update({f"{name}.{f}": obj for f, obj in member_files.items()})
    return config, tensors, files


def _load(config: dict, state: dict, files: dict) -> EnsembleModel:
    model = EnsembleModel(config["n_labels"], {}, tuple(config["members"]))
    for name in model.names:
        prefix = f"{name}."
        member_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        member_files = {k[len(prefix):]: v for k, v in files.items() if k.startswith(prefix)}
        model.members[name] = get_model(name).load(config["member_configs"][name], member_state, member_files)
    model.weights = np.asarray(config["weights"], dtype=np.float64)
    model.choices = list(config.get("choices", []))
    return model


register_model(ModelKind(
    ENSEMBLE, {EVENTS: (HISTORY, SEQUENCE)}, (EVENTS,),
    "the chosen ensemble: gbm and gru, combined per label with weights chosen on the tuning patients",
    _build, _save, _load, default_layers=1, default_batch_size=64))
