"""Which label codes the patients' events hold: each label's codes, its first record and the labels a
vocabulary lacks, found by scanning the events of given patients a run of patients at a time
(`event_blocks`), so that a scan over every training event (a hundred million at hospital scale) holds one
run's positions, not an int64 position per event."""

from __future__ import annotations

import numpy as np

from ehrdx.data.store import STATIC_TIME, EventStore, concat_ranges

SCAN_EVENTS = 1 << 22  # events whose positions a scan holds at once (int64 positions + codes + times: ~80 MB)


def label_first_times(store: EventStore, rows: np.ndarray, selector) -> dict[str, int]:
    """Labels recorded anywhere in these patients' events, each with the time (s) of its first record
    (to fit a vocabulary, and infer when each label was introduced, from training patients)."""
    if len(rows) == 0:
        return {}
    codes_all, times_all = np.asarray(store.codes), np.asarray(store.times)
    first = np.full(len(store.code_names), np.iinfo(np.int64).max)
    seen = np.zeros(len(store.code_names), bool)
    for pos in event_blocks(store, rows):
        codes, times = codes_all[pos], times_all[pos]
        seen[codes] = True
        timed = times != STATIC_TIME
        np.minimum.at(first, codes[timed], times[timed])
    out: dict[str, int] = {}
    for c in np.flatnonzero(seen):
        for lab in selector.labels_of(store.code_names[c]):
            t = int(first[c]) if first[c] != np.iinfo(np.int64).max else None
            if lab not in out or (t is not None and (out[lab] is None or t < out[lab])):
                out[lab] = t
    return out


def codes_of_labels(store: EventStore, selector, rows: np.ndarray | None = None) -> dict[str, list[str]]:
    """The store codes that record each label; with `rows`, only codes that occur in those patients'
    events (what a model records about its labels must come from its training patients alone)."""
    names = store.code_names
    if rows is not None:
        names = [store.code_names[int(i)] for i in np.flatnonzero(codes_present(store, rows))]
    out: dict[str, list[str]] = {}
    for code in names:
        for lab in selector.labels_of(code):
            out.setdefault(lab, []).append(code)
    return out


def labels_missing_from(store: EventStore, rows: np.ndarray, selector, vocab) -> list[str]:
    """Labels recorded in these patients' events that `vocab` lacks (e.g. codes newer than a model).
    Scans the events only when some store code records such a label."""
    missing = {i: [lab for lab in selector.labels_of(c) if lab not in vocab] for i, c in enumerate(store.code_names)}
    candidates = np.array([i for i, labs in missing.items() if labs], dtype=np.int64)
    if len(candidates) == 0 or len(rows) == 0:
        return []
    present = np.flatnonzero(codes_present(store, rows))
    return sorted({lab for c in present for lab in missing[int(c)]})


def codes_missed_by_case(store: EventStore, selector, rows: np.ndarray | None = None, *,
                         model: bool = False) -> dict:
    """Store codes among these patients' events (all by default) that would record a label if letter case
    were ignored but do not as written (`dx//e11.2` against `DX//E11*`): not counted as labels, without a
    word unless said. {} if none; else their count, their events, the first few (codes are vocabulary, not
    patient data, so they are named) and a note. Scans the events only when some store code is such a code.
    `model`: the selector is a trained model's own (evaluate, update without --labels), so the note says so
    and the fix is in the data, not in --labels."""
    found = picked_codes(store, selector.labels_missed_by_case, rows)
    if found is None:
        return {}
    _, names, events, shown = found
    if model:
        fix = "write the codes in the data as the model's labels spell them"
    elif selector.kind == "map":
        fix = "write the label map's codes as the data spells them, or map both spellings"
    else:
        fix = "write --labels as the data spells the codes"
    against = "the model's labels" if model else "--labels"
    note = (f"{len(names):,} event code(s) would match {against} if letter case were ignored ({shown}; "
            f"{events:,} events): not counted as labels, codes are case-sensitive; fix: {fix}")
    return {"count": len(names), "events": events, "codes": names[:50], "note": note}


def codes_cut_short(store: EventStore, selector, rows: np.ndarray | None = None, *, model: bool = False) -> dict:
    """Store codes among these patients' events (all by default) that a prefix selection reads less of than it
    asks (`selector.cut_short`): `ICD10CM//` alone gives no label, `ICD10CM//E1` under `:3` is a label `E1` of
    its own. {} if none; else their count, their events, the first few (codes are vocabulary, so named) and a
    note. `model`: the selector is a trained model's own, as in `codes_missed_by_case`."""
    found = picked_codes(store, selector.cut_short, rows)
    if found is None:
        return {}
    hit, names, events, shown = found
    bare = hit.get(selector.pattern, 0)  # the prefix alone: no label at all
    asked = f"fewer than the {selector.chars} characters asked" if selector.chars else "nothing"
    against = "the model's labels" if model else f"--labels {selector.spec or 'prefix:' + selector.pattern!r}"
    what = [f"the prefix alone is no label ({bare:,} events)"] if bare else []
    if events > bare:
        what.append(f"a shorter code is a label of its own, apart from the {selector.chars}-character ones")
    fix = "write the codes in the data in full" + ("" if model else ", or give them their labels with map:FILE")
    note = (f"{len(names):,} event code(s) start with the prefix of {against} but hold {asked} after it "
            f"({shown}; {events:,} events): {'; '.join(what)}; fix: {fix}")
    return {"count": len(names), "events": events, "codes": names[:50], "events_without_label": bare, "note": note}


def codes_outside_group(store: EventStore, selector, rows: np.ndarray | None = None, *, model: bool = False) -> dict:
    """Store codes among these patients' events that a regular expression's group 1 misses (`selector.outside_group`):
    each is labelled by the whole match, often one label for them all. {} if none; else as `codes_cut_short`."""
    found = picked_codes(store, selector.outside_group, rows)
    if found is None:
        return {}
    _, names, events, shown = found
    labels = sorted({lab for code in names for lab in selector.labels_of(code)})
    against = "the model's labels" if model else f"--labels '{selector.spec or 'regex:' + selector.pattern}'"  # as typed: no doubled backslash
    fix = ("write the codes in the data as the model's expression reads them" if model else
           "make the group match every code the expression matches (not optional), or leave those codes out of the "
           "expression")
    note = (f"{len(names):,} event code(s) match {against} but not its group 1 ({shown}; {events:,} events): each is "
            f"labelled by the whole match instead ({', '.join(labels[:5])}{' ...' if len(labels) > 5 else ''}); "
            f"fix: {fix}")
    return {"count": len(names), "events": events, "codes": names[:50], "labels": labels[:50], "note": note}


# the keys label_code_notes reports under (metrics.json, train_summary, the update report), in the order said
LABEL_CODE_NOTES = {"codes_matching_labels_only_ignoring_case": codes_missed_by_case,
                    "codes_cut_short_by_the_prefix": codes_cut_short,
                    "codes_outside_the_regex_group": codes_outside_group}


def label_code_notes(store: EventStore, selector, rows: np.ndarray | None = None, *,
                     model: bool = False) -> dict[str, dict]:
    """What the selection leaves out of these patients' codes, by the key each is reported under (none: {}):
    codes it misses by letter case, codes a prefix selection cuts short, codes outside a regex's group 1."""
    found = {key: note(store, selector, rows, model=model) for key, note in LABEL_CODE_NOTES.items()}
    return {key: note for key, note in found.items() if note}


def picked_codes(store: EventStore, pick, rows: np.ndarray | None = None
                 ) -> tuple[dict[str, int], list[str], int, str] | None:
    """The store codes `pick(code)` is true of that these patients' events hold (events scanned only when some
    store code is picked): their events by code, their names sorted, their events in all and the first five for a
    note; None if none."""
    picked = np.array([i for i, c in enumerate(store.code_names) if pick(c)], np.int64)
    if len(picked) == 0:
        return None
    n = code_events(store, rows)
    hit = {store.code_names[int(i)]: int(n[i]) for i in picked if n[i] > 0}
    if not hit:
        return None
    names = sorted(hit)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return hit, names, sum(hit.values()), shown


def code_events(store: EventStore, rows: np.ndarray | None = None) -> np.ndarray:
    """[store codes] int64: how many events of each code these patients (all by default) have."""
    rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
    n = np.zeros(len(store.code_names), np.int64)
    codes = np.asarray(store.codes)
    for pos in event_blocks(store, rows):
        n += np.bincount(codes[pos], minlength=len(n))
    return n


def codes_present(store: EventStore, rows: np.ndarray) -> np.ndarray:
    """[store codes] bool: whether each code occurs in these patients' events (a block at a time)."""
    seen = np.zeros(len(store.code_names), bool)
    codes = np.asarray(store.codes)
    for pos in event_blocks(store, rows):
        seen[codes[pos]] = True
    return seen


def event_blocks(store: EventStore, rows: np.ndarray, max_events: int | None = None):
    """The store positions of these patients' events, a run of patients at a time (at most `max_events`
    events each, or one patient), so that a scan of every training event holds one run's positions."""
    max_events = SCAN_EVENTS if max_events is None else max_events
    offsets = np.asarray(store.offsets)
    rows = np.asarray(rows, dtype=np.int64)
    cum = np.concatenate([[0], np.cumsum(offsets[rows + 1] - offsets[rows])])
    start = 0
    while start < len(rows):
        stop = int(np.searchsorted(cum, cum[start] + max_events, side="right")) - 1
        stop = min(max(stop, start + 1), len(rows))
        yield concat_ranges(offsets[rows[start:stop]], offsets[rows[start:stop] + 1])
        start = stop
