"""Why did the model predict this disease for this patient? Integrated gradients over the patient's events.

Every event the model read before the prediction time gets a gate g in [0, 1] that scales all it puts
into the model: its weight in the visit's code bag, its weight in the value bag (its standardised value),
and, for a numeric code in the dense block, the entries it fills (its value and "measured" flag at its
visit, and the carried-forward "last value" and flag at the later visits until the code is measured
again). With every gate at 0 the model sees visits with no events (times, age and static facts stay);
at 1 it sees the patient as recorded. The gated batch is the training batch with the gates applied
(SequenceBatch.with_event_gates), from the same carried-forward block (data/sequences.py numeric_sources),
so explanations cannot drift from what the model was trained on. Integrated gradients along that
straight path give each event a share of (score with the events - score without them), and the shares
add up to that difference (checked in the tests). The score is the label's logit at the chosen prediction time.

Faithfulness (tests/test_explain.py): setting the gates of the top-attributed events to 0 lowers the
score more than setting as many random events to 0.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

from ehrdx.data.batch import SequenceBatch
from ehrdx.data.samples import Samples
from ehrdx.data.sequences import SequenceSet
from ehrdx.errors import DataError, ModelError

STEPS = 32
VALUE_DIGITS = 2  # significant digits of event values in an explanation that leaves the process


@dataclass
class EventInputs:
    """One sequence's batch (with the sources of its numeric entries, so its events can be gated), and what
    each event is."""

    batch: SequenceBatch
    positions: np.ndarray  # store event index of each gated event
    visit: np.ndarray  # visit (in the patient's history) of each event


def _event_inputs(dataset: SequenceSet, seq: int) -> EventInputs:
    """Collate one sequence and find each of its events in the store (in the batch's event order)."""
    from ehrdx.data.store import concat_ranges

    batch = dataset.collate(np.array([seq]), sources=True)
    store = dataset.store
    row = int(dataset.seq_row[seq])
    nv = int(dataset.seq_nv[seq])
    first = int(dataset.seq_start[seq])  # a bounded context reads a window (earlier visits: a summary, not gated)
    vlo = int(np.asarray(store.visit_offsets)[row]) + first
    vis = np.arange(vlo, vlo + nv)
    starts = np.asarray(store.visit_starts)[vis]
    ends = np.minimum(np.asarray(store.visit_ends)[vis], int(dataset.seq_cutoff[seq]))
    return EventInputs(batch, concat_ranges(starts, ends), np.repeat(np.arange(first, first + nv), ends - starts))


def _scores(model, inputs: EventInputs, gates: torch.Tensor, sample_pos: int, label: int) -> torch.Tensor:
    """The label's logit at one sample for each row of gates [paths, events]."""
    return torch.stack([model(inputs.batch.with_event_gates(g))[sample_pos, label] for g in gates])


def integrated_gradients(model, inputs: EventInputs, sample_pos: int, label: int, steps: int = STEPS) -> tuple[
        np.ndarray, float, float]:
    """Attribution per event, the score with all events, and the score with none."""
    model.eval()
    E = len(inputs.positions)
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps  # midpoint rule
    gates = (alphas[:, None] * torch.ones(1, E)).requires_grad_(True)
    scores = _scores(model, inputs, gates, sample_pos, label)
    (grad,) = torch.autograd.grad(scores.sum(), gates)
    attribution = grad.mean(0).numpy()  # (x - baseline) = 1 for every gate
    with torch.no_grad():
        full = float(_scores(model, inputs, torch.ones(1, E), sample_pos, label)[0])
        empty = float(_scores(model, inputs, torch.zeros(1, E), sample_pos, label)[0])
    return attribution, full, empty


def score_without(model, inputs: EventInputs, sample_pos: int, label: int, removed: np.ndarray) -> float:
    gates = torch.ones(1, len(inputs.positions))
    gates[0, torch.as_tensor(removed, dtype=torch.long)] = 0.0
    with torch.no_grad():
        return float(_scores(model, inputs, gates, sample_pos, label)[0])


def explained_model(clf, labels: list[str] | None = None) -> tuple[torch.nn.Module, str]:
    """The sequence model whose events explain `clf`'s predictions (an ensemble: its sequence member) and
    what it is called; ModelError where `clf` has none, DataError for `labels` it does not know. Cheap:
    ehrdx explain checks it before reading any events."""
    from ehrdx.models.sequence import SequenceModel

    clf.labels_  # noqa: B018  (a ModelError where `clf` is not fitted)
    model, explained = clf.model_, clf.model_name_
    if not isinstance(model, SequenceModel):  # an ensemble: its sequence member, and it says so
        members = [(name, m) for name, m in getattr(model, "members", {}).items() if isinstance(m, SequenceModel)]
        if not members:
            raise ModelError(f"explanations need a sequence model (gru, lstm, transformer) or an ensemble with "
                             f"one; this one is {clf.model_name_}")
        name, model = members[0]
        explained = f"the {name} member of the {clf.model_name_} ensemble (its own probabilities, not the ensemble's)"
    unknown = [lab for lab in labels or [] if lab not in clf.labels_]
    if unknown:
        raise DataError(f"label(s) {', '.join(unknown)} not in the model", fix=f"choose from {', '.join(clf.labels_)}")
    return model, explained


def explain_sample(clf, store, samples, index: int, top_labels: int = 3, top_events: int = 8,
                   labels: list[str] | None = None) -> dict:
    """Explanation of one sample (index into `samples`): its top predicted labels (or `labels`), and for
    each the events that drove its score, largest first, with their visit, time, code and value."""
    labels = [labels] if isinstance(labels, str) else labels  # one label, not its letters
    model, explained = explained_model(clf, labels)
    if not isinstance(samples, Samples):
        raise DataError(f"samples must be the model's samples (ehrdx.data.samples.Samples), not {type(samples).__name__}",
                        fix="give clf.samples(store, rows) (rows: the patients' row numbers), and the index of one")
    if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < len(samples):
        raise DataError(f"sample index {index!r} is not one of the {len(samples)} samples (0 to {len(samples) - 1})",
                        fix="give the position of one sample in `samples`")
    for given, name in ((top_labels, "top_labels"), (top_events, "top_events")):  # a slice [:-1] keeps all but one
        if isinstance(given, bool) or not isinstance(given, numbers.Integral) or given < 1:
            raise DataError(f"{name} {given!r}: how many to show must be a whole number of at least 1",
                            fix=f"give {name}=3, for example")
    model = model.cpu().eval()
    ds = SequenceSet(store, samples, clf.encoder_, context=clf.context_)
    seq = int(np.searchsorted(ds.seq_sample_offsets, np.flatnonzero(ds.sample_order == index)[0], side="right") - 1)
    inputs = _event_inputs(ds, seq)
    # where this sample sits among the batch's samples (the model returns one row per sample)
    sample_pos = int(np.flatnonzero(inputs.batch.sample_index.numpy() == index)[0])
    with torch.no_grad():
        logits = model(inputs.batch)[sample_pos].numpy()
    proba = 1 / (1 + np.exp(-logits))
    vocab = clf.labels_
    if labels:
        chosen = [vocab.index(lab) for lab in labels]
    else:
        chosen = list(np.argsort(-proba)[:top_labels])
    times = np.asarray(store.times)[inputs.positions]
    names = np.asarray(store.code_names, dtype=object)[np.asarray(store.codes)[inputs.positions]]
    values = np.asarray(store.values)[inputs.positions]
    # events whose code the model never saw are read as its one unknown code: their attributions are that code's
    unseen = int((clf.encoder_.code_map(store)[np.asarray(store.codes)[inputs.positions]] == 0).sum())
    out = {"prediction_time": int(samples.time[index]), "prior_visits": int(samples.n_visits[index]),
           "events_read": len(inputs.positions), "events_with_unseen_codes": unseen, "model": explained, "labels": []}
    for j in chosen:
        attr, full, empty = integrated_gradients(model, inputs, sample_pos, int(j))
        order = np.argsort(-np.abs(attr))[:top_events]
        out["labels"].append({
            "label": vocab[j], "probability": float(proba[j]), "logit": full, "logit_without_events": empty,
            "attribution_sum": float(attr.sum()),
            "events": [{"visit": int(inputs.visit[i]) + 1, "time": int(times[i]),
                        "days_from_prediction": round((int(times[i]) - out["prediction_time"]) / 86400),
                        "code": str(names[i]), "value": None if np.isnan(values[i]) else float(values[i]),
                        "attribution": float(attr[i])} for i in order],
        })
    return out


def round_significant(value: float, digits: int = VALUE_DIGITS) -> float:
    """`value` rounded to `digits` significant digits (123.4567 -> 120.0, 0.01234 -> 0.012)."""
    return float(f"{value:.{digits}g}")


def without_exact_dates_and_values(explanation: dict) -> dict:
    """An explanation as it may be shown or written without `ehrdx --show-ids` (the README's privacy rule):
    no calendar date (events keep their days from the prediction time, e.g. -35) and event values rounded
    to VALUE_DIGITS significant digits. Codes, visits and attributions are kept; the input is not changed."""
    labels = [{**lab, "events": [{**{k: v for k, v in ev.items() if k != "time"},
                                  "value": None if ev["value"] is None else round_significant(ev["value"])}
                                 for ev in lab["events"]]} for lab in explanation["labels"]]
    out = {k: v for k, v in explanation.items() if k != "prediction_time"}
    return {**out, "labels": labels, "exact_dates_and_values": False}
