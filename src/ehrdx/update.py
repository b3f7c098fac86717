"""Add labels to a trained event model without retraining from scratch.

`update_model` finds the labels in new data that the model lacks (or takes a list), appends them to
the vocabulary (existing labels keep their index, row and name), grows the head with rows started from
what is known about each new label (see models/grow.py; by default `probe`: logistic regression on the
frozen model's states, its penalty chosen per label on the validation patients, train/probe.py), and
fine-tunes briefly on the new data's training patients. Forgetting is held off by distillation: on every
batch, the old labels' outputs are pulled towards the old model's predictions (`protect="distill"`); `protect="none"` fine-tunes without it.
The old model object and directory are never modified; the new model records its lineage.

One job in one file (over 400 lines): `check_update` is the same update's checks, run before the data is read.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ehrdx.data.batches import ConcatSet
from ehrdx.data.bits import label_counts
from ehrdx.data.splits import check_rows
from ehrdx.errors import DataError, ModelError, python_terms
from ehrdx.estimator import EHRClassifier
from ehrdx.evaluate.metrics import evaluate_predictions, patients_per_label, tune_thresholds
from ehrdx.models.grow import STRATEGIES as INIT_STRATEGIES
from ehrdx.models.grow import init_rows
from ehrdx.models.registry import TABLE
from ehrdx.pretrained import check_model_patients
from ehrdx.ranking import HeadScores
from ehrdx.sources.events import input_name
from ehrdx.tasks.icd10 import fill_icd10
from ehrdx.tasks.labels import LabelVocab, describe_from_codes, introduction_info
from ehrdx.tasks.scan import label_code_notes
from ehrdx.tasks.select import check_label_spellings
from ehrdx.tasks.task import codes_of_labels, label_first_times
from ehrdx.train.device import autocast, resolve_device, resolve_precision
from ehrdx.train.loop import TrainConfig, train_model
from ehrdx.train.mixing import RULE as MIX_RULE
from ehrdx.train.probe import probe_new_rows

PROTECT = ("distill", "none")
RETRAIN_MARGIN = 0.02  # AUROC a new label may lose by updating instead of retraining before the report warns
ADDED = "update --add"  # introduced_from of a date given with the label to add
UNREADABLE_DATE = "unreadable introduction date"  # said of introduced= to a Python caller (PARAMETERS)
DATE_FIX = "write LABEL=DATE with an ISO date, e.g. U07.1=2020-03-01"
# the command-line options of `ehrdx update` in its errors, as update_model's parameters (ehrdx.errors.python_terms)
PARAMETERS = {"--add LABEL=DATE": "introduced={LABEL: DATE}", "--add LABELS": "new_labels=[...]",
              "option --add: a date": "parameter introduced: a date",
              f"option --add: {UNREADABLE_DATE}": f"parameter introduced: {UNREADABLE_DATE}",
              DATE_FIX: "give introduced={LABEL: DATE} with ISO dates, e.g. introduced={'U07.1': '2020-03-01'}",
              "the date given with --add": "the date given in introduced",
              "--add": "new_labels", "--labels": "selector",
              "--epochs": "epochs", "--lr": "lr", "--patience": "patience", "--init": "init", "--protect": "protect",
              "--replay-meds": "replay", "--infer-introduced": "infer_introduced=True", "--device": "device",
              "--precision": "precision", "--until": "open_store(until=...)"}
# How an auto model's new labels mix its members (update_report.json's `ensemble.chosen_on`)
UPDATE_MIX_RULE = ("the new data's tuning (validation) patients, for the labels this update adds (the old labels keep "
                   "their weights; 'all labels' in a row means every label this update adds), by the rule auto is "
                   "fitted with: " + MIX_RULE.removeprefix("the tuning (validation) patients: "))


def introduction_date(text: str) -> str:
    """An introduction date given with `--add LABEL=DATE` as a naive UTC ISO time; an unreadable one is an
    error naming the option (checked before any data is read)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DataError(f"{UNREADABLE_DATE} {text!r}", column="--add",
                        fix=DATE_FIX) from None
    return (when.astimezone(UTC) if when.tzinfo else when).replace(tzinfo=None).isoformat()


def _spec(selector) -> str:
    return repr(selector.spec or selector.kind)


def fine_tuned(model: EHRClassifier) -> bool:
    """Whether update_model fine-tunes `model` (a network), so that init, protect, epochs, lr and replay apply;
    a model that fits itself (gbm, logistic, auto) fits its new labels and keeps its old ones' outputs."""
    return isinstance(model.model_, torch.nn.Module)


def check_update(old: EHRClassifier, *, new_labels: list[str] | str | None = None, selector=None, init: str = "probe",
                 protect: str = "distill", replay: bool = False, introduced: dict[str, str] | None = None
                 ) -> list[str] | None:
    """What update_model can check before any data is read (the command checks it before building the event
    store): the options, a model that can grow, labels to add that it already has (or, with a label map, that
    the map cannot give), and dates for labels not added. Returns the labels to add as a list (None: all the
    data's new ones)."""
    if protect not in PROTECT:
        raise ModelError(f"unknown protection '{protect}' (choose from {', '.join(PROTECT)})")
    if init not in INIT_STRATEGIES:
        raise ModelError(f"unknown init '{init}' (choose from {', '.join(INIT_STRATEGIES)})")
    labels = old.labels_  # a ModelError where `old` is not fitted
    if old.source_kind_ == TABLE:  # no events to find new labels in, nor a label selection to find them by
        raise ModelError("update_model adds labels found in newer events; this model learned from a patient table\n"
                         "  fix: retrain on the table with the new labels in its label column (a table model "
                         "trains in seconds)")
    if replay and not fine_tuned(old):
        raise DataError(f"replay (--replay-meds) mixes old data into fine-tuning, and the {old.model_name_} model "
                        "is not fine-tuned: its old labels' outputs are kept as they are",
                        fix="leave out --replay-meds for this model")
    if isinstance(new_labels, str):  # one label, not its letters
        new_labels = [new_labels]
    if new_labels is not None and all(lab in labels for lab in new_labels):
        raise DataError(f"the model already has label(s) {', '.join(new_labels)}: nothing to add",
                        column="--add", fix="give labels the model lacks (its labels are in labels.json)")
    dated_old = sorted(lab for lab in (introduced or {}) if lab in labels)
    if dated_old:
        raise DataError(f"a date was given for label(s) {', '.join(dated_old)} that this update does not add (the "
                        "model has them)", column="--add", fix="give dates only for the labels added (--add LABEL=DATE)")
    chosen = selector if selector is not None else old.selector_
    if chosen.kind == "map":  # a map names every label it can give: checked without the data
        mapped = {lab for labs in chosen.mapping.values() for lab in labs}
        lost = [lab for lab in labels if lab not in mapped] if selector is not None else []
        if lost:
            raise DataError(f"the new label selection no longer selects old label(s) {', '.join(lost)}",
                            column="--labels", fix="keep every old label in the new label map")
        absent = [lab for lab in new_labels or [] if lab not in mapped and lab not in labels]
        if absent:
            raise DataError(f"label(s) {', '.join(absent)} are not among the labels of the label map "
                            f"{_spec(chosen)}: no code would record them", column="--add",
                            fix="add a row (code,label) for each to the label map and give it with --labels, or "
                                "check the names")
    return new_labels


def _file_sha(path: Path) -> str | None:
    if not path.exists():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


@python_terms(PARAMETERS)
def update_model(
    old: EHRClassifier,
    store,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    new_labels: list[str] | None = None,
    selector=None,
    init: str = "probe",
    protect: str = "distill",
    distill_weight: float = 1.0,
    epochs: int = 2,
    lr: float = 1e-3,
    patience: int = 3,
    parent_dir: str | Path | None = None,
    replay: tuple | None = None,
    on_epoch: Callable[[int, float, float | None], None] | None = None,
    device: str = "cpu",
    precision: str = "auto",
    introduced: dict[str, str] | None = None,
    infer_introduced: bool = False,
    on_start: Callable[[], None] | None = None,
) -> tuple[EHRClassifier, dict]:
    """Return (new model, report). `splits` are store rows (train, validation, test) of the new data.
    `introduced` gives new labels' introduced_at (label -> ISO date, e.g. from `--add U07.1=2020-03-01`),
    over the label map's; a new label without one is masked before its first record in the new training
    patients only with `infer_introduced`, else it is taken to have existed all along.
    `selector` replaces the model's label selection (e.g. a label map with new conditions of interest);
    it must still select every old label. `replay` = (store, rows): old training data mixed into the
    fine-tuning, with its old labels as targets and the new labels unknown. `on_start` is called when a
    network's fine-tuning starts, after every check (e.g. to show a progress bar only then)."""
    new_labels = check_update(old, new_labels=new_labels, selector=selector, init=init, protect=protect,
                              replay=replay is not None, introduced=introduced)
    tr, va, te = (check_rows(x, len(store), what, input_name(store))
                  for x, what in zip(splits, ("train rows", "validation rows", "test rows"), strict=True))
    ids = np.asarray(store.subject_ids)
    check_model_patients(old, {"validation": ids[va], "test": ids[te]})  # a model from an encoder
    t0 = time.perf_counter()
    new = copy.deepcopy(old)
    if selector is not None:
        new.set_params(labels=selector)
        new.selector_ = selector
    vocab_before = LabelVocab.from_dict(old.label_vocab_.to_dict())
    first = label_first_times(store, tr, new.selector_)
    lost = [lab for lab in vocab_before.labels if lab not in first]
    if selector is not None and lost:
        raise DataError(f"the new label selection no longer selects old label(s) {', '.join(lost)}",
                        fix="keep every old label in the new label map")
    if new_labels is None:
        found = [lab for lab in sorted(first) if lab not in vocab_before]
    else:
        missing = [lab for lab in new_labels if lab not in first and lab not in vocab_before]
        if missing:  # named by the option that asked for them (the store's folder is a temporary one)
            raise DataError(f"label(s) {', '.join(missing)} never recorded in the events of the {len(tr):,} new "
                            f"training patients, as the label selection {_spec(new.selector_)} reads their codes",
                            column="--add", fix="check the names against the codes in the data; a label recorded "
                            "only in validation or test patients, or after --until, cannot be learned")
        found = [lab for lab in new_labels if lab not in vocab_before]
    if not found:
        raise DataError("the new data has no label the model lacks: nothing to add",
                        fix="give the labels to add (--add), or data in which new labels are recorded")
    check_label_spellings([*vocab_before.labels, *found], column="--labels",  # not the store's temporary folder
                          fix=f"the model's labels and the new ones the label selection {_spec(new.selector_)} reads "
                          "differ only in case or spaces: correct the codes, or give --labels map:FILE mapping every "
                          "spelling to one label")
    unknown = sorted(set(introduced or {}) - set(found))
    if unknown:
        raise DataError(f"a date was given for label(s) {', '.join(unknown)} that this update does not add",
                        column="--add", fix="give dates only for the labels added (--add LABEL=DATE)")
    label_codes = codes_of_labels(store, new.selector_, tr)
    given = {lab: {**new.selector_.info.get(lab, {}), "codes": sorted(label_codes.get(lab, []))} for lab in found}
    for lab, date in (introduced or {}).items():
        given[lab].update(introduced_at=introduction_date(date), introduced_from=ADDED)
    info = introduction_info({lab: first.get(lab) for lab in found}, given, infer_introduced)
    describe_from_codes(info, store.code_descriptions())  # the data's own code descriptions
    fill_icd10(info, [*vocab_before.labels, *found])  # ICD-10-CM parents, if the optional package is there
    new.label_vocab_.extend(found, info, note="ehrdx update")
    L_old, L = len(vocab_before), len(new.label_vocab_)

    train_s = new.samples(store, tr)
    val_s = new.samples(store, va)
    known_bits = train_s.train_mask_bits(new.new_onset_)  # packed: counts and blocks, no dense [S, L] copy
    positives, known = label_counts(train_s.y_bits, known_bits)
    empty = [lab for lab, n in zip(found, positives[L_old:], strict=True) if n == 0]
    if empty:  # e.g. --add LABEL=DATE with a date after the data: every record masked, nothing to learn from
        dated = [lab for lab in empty if (introduced or {}).get(lab)]
        raise DataError(f"new label(s) {', '.join(empty)} have no positive training sample"
                        + (" once the entries before the date given with --add are masked" if dated else ""),
                        column="--add" if new_labels is not None else None,
                        fix="give a date (--add LABEL=DATE) within the data, or data in which the label is "
                            "recorded at a known prediction time" if new_labels is not None else
                            "name the labels to add, leaving these out (--add LABELS), or give data in which they are "
                            "recorded where a prediction's window sees them: these are recorded in the new training "
                            "patients, but never inside a known window (e.g. only at a patient's first visit, "
                            "which no next-visit prediction looks ahead to)")
    prevalence = positives / np.maximum(known, 1)
    p_new = np.clip(prevalence[L_old:], 1e-4, 1 - 1e-4)
    bias = torch.from_numpy(np.log(p_new / (1 - p_new)).astype(np.float32))

    probe_c: dict[str, float] = {}  # each probed label's penalty (train/probe.py)
    if not isinstance(new.model_, torch.nn.Module):  # a model that fits itself: new labels fit, old ones kept
        protect = "not needed (old labels' outputs kept as they are)"
        members = getattr(new.model_, "has_members", False)  # auto: its network member's probe starts from
        codes = {"label_codes": [label_codes.get(lab, []) for lab in found]} if members else {}  # pretrained rows
        new.model_.add_labels(new.dataset(store, train_s), new.dataset(store, val_s), n_old=L_old, seed=new.seed,
                              **codes)
        started = getattr(new.model_, "probe_started", []) if members else []
        used = ["fit (network member: pretrained+probe)" if j < len(started) and started[j] else "fit"
                for j in range(len(found))]
        probe_c = dict(zip(found, getattr(new.model_, "probe_c", [])))  # auto: its network member's probe
        history = None
    else:
        dev = resolve_device(device)
        new.model_.to(dev)
        train_set, val_set = new.dataset(store, train_s), new.dataset(store, val_s)
        if init == "probe":  # from the pretrained rows of each label's codes, where the model keeps them
            start = new.model_.pretrained_start([label_codes.get(lab, []) for lab in found]) if hasattr(
                new.model_, "pretrained_start") else None
            y_new = train_s.y_bits[:, L_old:].astype(np.float32)
            # each label's penalty chosen on the validation patients (train/probe.py: few positives)
            val = (val_set, val_s.y_bits[:, L_old:], val_s.train_mask_bits(new.new_onset_)[:, L_old:])
            rows, bias, strengths = probe_new_rows(new.model_, train_set, y_new, known_bits[:, L_old:],
                                                   val if len(val_s) else None, seed=new.seed, start=start)
            probe_c = dict(zip(found, strengths))
            used = ["pretrained+probe" if start is not None and start[2][j] else "probe" for j in range(len(found))]
        else:
            rows, used = init_rows(new.model_, vocab_before, found, new.label_vocab_.info, init, label_codes,
                                   new.encoder_)
        new.model_.head.grow(rows, bias)
        new.model_.config.n_labels = L
        new.model_.config.label_blocks = new.model_.head.block_sizes
        old_model = copy.deepcopy(old.model_).to(dev).eval()  # the caller's model stays where it is
        amp = resolve_precision(precision, dev)

        def distill(model, batch, logits):
            with torch.no_grad(), autocast(dev, amp):
                target = torch.sigmoid(old_model(batch).float())
            return distill_weight * F.binary_cross_entropy_with_logits(logits[:, :L_old], target)

        config = TrainConfig(lr=lr, weight_decay=old.train_config_.weight_decay, batch_size=old.train_config_.batch_size,
                             max_epochs=epochs, patience=patience, seed=old.seed, device=str(dev), precision=precision)
        torch.manual_seed(old.seed)
        if replay is not None:
            old_s = new.samples(replay[0], np.asarray(replay[1], dtype=np.int64))
            mask, history = old_s.mask.copy(), old_s.history.copy()
            mask[:, L_old:] = False  # the old data did not record the new labels
            history[:, L_old:] = False
            old_s.mask, old_s.history = mask, history
            keep = old_s.mask.any(1)
            train_set = ConcatSet(train_set, new.dataset(replay[0], old_s.subset(keep)))
        if epochs > 0:
            if on_start is not None:  # only a network is fine-tuned (a model that fits itself has no epochs)
                on_start()
            history = train_model(new.model_, train_set, val_set, config,
                                  on_epoch, extra_loss=distill if protect == "distill" else None)
            new.history_ = history
        else:
            history = None
    if len(val_s):
        new.thresholds_ = tune_thresholds(val_s.y_bits, val_s.train_mask_bits(new.new_onset_),
                                          new.scores(store, val_s))
    else:  # no validation patients: the old labels keep theirs, the new ones start at 0.5
        new.thresholds_ = np.concatenate([np.asarray(old.thresholds_, dtype=np.float64), np.full(L - L_old, 0.5)])
    seconds = time.perf_counter() - t0
    parent = Path(parent_dir) if parent_dir else None
    new.lineage_ = {
        "parent_dir": str(parent) if parent else None,
        "parent_model_sha256": _file_sha(parent / "model.safetensors") if parent else None,
        "parent_config_sha256": _file_sha(parent / "config.json") if parent else None,
        "labels_version_before": vocab_before.version, "labels_version_after": new.label_vocab_.version,
        "added": found, "init": dict(zip(found, used)), "probe_c": probe_c, "protect": protect,
        "replay": replay is not None,
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "seconds": round(seconds, 2),
        # Every earlier update, oldest first, each without its own history (it is the list's head).
        "history": _lineage_history(old),
    }
    report = compare_before_after(old, new, store, te, train_s)
    report["train_excluded"] = dict(train_s.counts)
    report.update(label_code_notes(store, new.selector_, tr, model=selector is None))  # as train says them
    report.update({"added": found, "init": dict(zip(found, used)), "probe_c": probe_c, "protect": protect,
                   "replay": replay is not None,
                   "seconds": round(seconds, 2),
                   "epochs": history.epochs_run if history else 0})
    if getattr(new.model_, "has_members", False):  # auto: each new label's weights by member, and why
        report["ensemble"] = {"members": list(new.model_.names),
                              "per_label": new.model_.weights_report(new.labels_, L_old), "chosen_on": UPDATE_MIX_RULE}
    return new, report


def _lineage_history(old: EHRClassifier) -> list[dict]:
    lineage = getattr(old, "lineage_", None)
    if not lineage:
        return []
    return [*lineage.get("history", []), {k: v for k, v in lineage.items() if k != "history"}]


def compare_before_after(old: EHRClassifier, new: EHRClassifier, store, test_rows: np.ndarray,
                         train_s=None) -> dict:
    """Per label: introduced_at, training positives, AUROC/AUPRC of the old model (labels it knows) and
    of the new one, on the same test samples; and old-label macro AUROC before vs after."""
    old_labels = old.labels_
    missing = [lab for lab in old_labels if lab not in new.label_vocab_]
    if missing:
        raise ModelError(f"the new model lacks old label(s) {', '.join(missing)}")
    old_cols = np.array([new.label_vocab_.index(lab) for lab in old_labels], dtype=np.int64)
    new_cols = np.array([j for j, lab in enumerate(new.labels_) if lab not in old.label_vocab_], dtype=np.int64)
    s = new.samples(store, test_rows)
    p_old, p_new = old.scores(store, s), new.scores(store, s)  # HeadScores at scale: computed a block at a time
    labels = new.labels_
    y, m = s.y_bits, s.mask_bits
    y_old, m_old = take_label_columns(y, old_cols), take_label_columns(m, old_cols)
    before = evaluate_predictions(y_old, m_old, p_old, old_labels, None, ())
    after_old = evaluate_predictions(y_old, m_old, take_label_columns(p_new, old_cols), old_labels, None, (), s.row)
    after_new = evaluate_predictions(take_label_columns(y, new_cols), take_label_columns(m, new_cols),
                                     take_label_columns(p_new, new_cols), [labels[j] for j in new_cols], None, (), s.row)
    row_of = {lab: i for i, lab in enumerate(old_labels)}
    new_row_of = {labels[j]: i for i, j in enumerate(new_cols)}
    seen = label_counts(train_s.y_bits, train_s.mask_bits)[0] if train_s is not None else np.zeros(len(labels))
    seen_patients = (patients_per_label(train_s.y_bits, train_s.mask_bits, train_s.row)[0] if train_s is not None
                     else np.zeros(len(labels)))
    rows = []
    for j, lab in enumerate(labels):
        is_old = lab in row_of
        b = before["per_label"][row_of[lab]] if is_old else None
        a = after_old["per_label"][row_of[lab]] if is_old else after_new["per_label"][new_row_of[lab]]
        rows.append({"label": lab, "description": new.label_vocab_.info[lab].get("description"), "new": not is_old,
                     "introduced_at": new.label_vocab_.info[lab].get("introduced_at"),
                     "introduced_from": new.label_vocab_.info[lab].get("introduced_from"),
                     "parent": new.label_vocab_.info[lab].get("parent"), "train_positives": int(seen[j]),
                     "train_positive_patients": int(seen_patients[j]),
                     "test_positives": a["positives"], "test_positive_patients": a["positive_patients"],
                     "auroc_before": b["auroc"] if b else None, "auprc_before": b["auprc"] if b else None,
                     "auroc_after": a["auroc"], "auprc_after": a["auprc"]})
    return {
        "per_label": rows, "test_samples": len(s), "test_excluded": dict(s.counts),
        "old_labels_macro_auroc_before": before["macro_auroc"], "old_labels_macro_auroc_after": after_old["macro_auroc"],
        "old_labels_macro_auprc_before": before["macro_auprc"], "old_labels_macro_auprc_after": after_old["macro_auprc"],
        "new_labels_macro_auroc": after_new["macro_auroc"], "new_labels_macro_auprc": after_new["macro_auprc"],
    }


def take_label_columns(table, cols: np.ndarray):
    """Columns `cols` of an [S, L] table: still packed (targets, masks) or still computed when read (a
    network head's scores) where they can be; an array's columns otherwise."""
    cols = np.asarray(cols, dtype=np.int64)
    if isinstance(table, HeadScores):
        return HeadScores(table.states, table.rows[cols], table.bias[cols])
    run = len(cols) == 0 or np.array_equal(cols, np.arange(cols[0], cols[0] + len(cols)))
    if hasattr(table, "columns") and run:  # the old labels come first and the new ones last: both are runs
        c0 = int(cols[0]) if len(cols) else 0
        return table.columns(c0, c0 + len(cols))
    return np.asarray(table)[:, cols]


def compare_update(old: EHRClassifier, store, splits, report: dict, selector=None,
                   new_labels: list[str] | None = None, introduced: dict[str, str] | None = None,
                   init: str = "probe", epochs: int = 2, lr: float = 1e-3, infer_introduced: bool = False,
                   stage: Callable = contextlib.nullcontext) -> dict:
    """`ehrdx update --compare`: beside the update already made (`report`), fine-tune without protection and
    retrain from scratch with the parent model's own settings (all of them, as saved in its config.json), on
    the same patients; seconds and old/new label macro AUROC of each way. `stage(text)` is entered around
    each of the two runs (a progress display)."""
    keys = ("seconds", "old_labels_macro_auroc_after", "new_labels_macro_auroc")
    rows = {"update (distill)": {k: report[k] for k in keys}}
    with stage("fine-tuning without protection"):
        _, plain = update_model(old, store, splits, new_labels=new_labels, selector=selector, init=init,
                                protect="none", epochs=epochs, lr=lr, introduced=introduced,
                                infer_introduced=infer_introduced)
    rows["fine-tune, no protection"] = {k: plain[k] for k in keys}
    scratch = EHRClassifier(**{**old.get_params(), "labels": selector or old.selector_,
                               "infer_introduced": infer_introduced, "context": old.context_})  # as it was fitted
    t0 = time.perf_counter()
    with stage("retraining from scratch"):
        scratch.fit(store, splits[0], splits[1])
    seconds = time.perf_counter() - t0
    r = compare_before_after(old, scratch, store, splits[2], scratch.samples(store, splits[0]))  # positives
    rows["retrain from scratch"] = {"seconds": round(seconds, 2),
                                    "old_labels_macro_auroc_after": r["old_labels_macro_auroc_after"],
                                    "new_labels_macro_auroc": r["new_labels_macro_auroc"],
                                    # per new label, as rows so that small cells are suppressed like the report's
                                    "per_label": [{k: x[k] for k in ("label", "new", "train_positives",
                                                                     "train_positive_patients", "test_positives", "test_positive_patients",
                                                                     "auroc_after", "auprc_after")}
                                                  for x in r["per_label"] if x["new"]]}
    return rows


def below_retraining(report: dict, margin: float = RETRAIN_MARGIN) -> list[dict]:
    """The new labels whose test AUROC after the update is more than `margin` below retraining from scratch
    (from `--compare`), worst first: what the update report warns about. Labels without an AUROC on either
    side (no positive or no negative among the test samples, or suppressed as a small cell: give the report
    as released) are not compared."""
    retrained = {x["label"]: x["auroc_after"]
                 for x in report.get("compare", {}).get("retrain from scratch", {}).get("per_label", [])}
    out = []
    for row in report["per_label"]:
        a, b = row["auroc_after"], retrained.get(row["label"])
        if row["new"] and a is not None and b is not None and a < b - margin:
            out.append({"label": row["label"], "auroc_update": a, "auroc_retrain": b, "difference": a - b,
                        "train_positives": row["train_positives"]})
    return sorted(out, key=lambda x: x["difference"])
