import json

import numpy as np

from ehrdx.tasks.labels import LabelVocab


def test_vocabulary_is_sorted_on_fit_and_append_only_after():
    v = LabelVocab.fit([["I10", "E11"], [], ["A00"]])
    assert v.labels == ["A00", "E11", "I10"]
    added = v.extend(["U07.1", "E11", "B20"])  # new labels go to the end in the order given
    assert added == ["U07.1", "B20"]
    assert v.labels == ["A00", "E11", "I10", "U07.1", "B20"]
    assert [v.index(x) for x in ("A00", "E11", "I10")] == [0, 1, 2]
    assert LabelVocab.from_dict(v.to_dict()).labels == v.labels


def test_encode_counts_labels_outside_the_vocabulary():
    v = LabelVocab(["A", "B"])
    y, unknown = v.encode([["A"], ["C", "B", "C"], []])
    assert y.tolist() == [[1, 0], [0, 1], [0, 0]]
    assert unknown == {"C": 2}


def test_vocabulary_carries_metadata_versions_and_history():
    v = LabelVocab.from_first_times({"E11": 1_500_000_000, "I10": None},
                                    {"E11": {"description": "Type 2 diabetes", "introduced_at": "2010-01-01T00:00:00"}})
    assert v.version == 1 and v.history[0]["added"] == ["E11", "I10"]
    assert v.info["E11"] == {"codes": None, "description": "Type 2 diabetes", "parent": None,
                             "introduced_at": "2010-01-01T00:00:00", "introduced_from": "label map"}
    assert v.info["I10"]["introduced_at"] is None
    v.extend(["E11.9"], {"E11.9": {"parent": "E11", "introduced_at": "2021-01-01T00:00:00"}}, note="code split")
    assert v.version == 2 and v.history[-1]["added"] == ["E11.9"] and v.history[-1]["note"] == "code split"
    assert v.extend(["E11"]) == [] and v.version == 2  # nothing added, no new version
    back = LabelVocab.from_dict(v.to_dict())
    assert back.labels == v.labels and back.version == 2 and back.info == v.info and back.history == v.history
    intro = back.introduced_seconds()
    assert intro[0] == 1262304000 and intro[1] == float("-inf") and intro[2] == 1609459200


def test_labels_not_yet_introduced_are_masked_and_count_for_nothing(tmp_path):
    """Changing the targets of not-yet-existing labels arbitrarily leaves loss and metrics identical."""
    import torch

    from ehrdx.evaluate.metrics import evaluate_predictions
    from ehrdx.tasks.task import TaskSpec, build_samples, code_label_index
    from ehrdx.train.loop import masked_bce_with_logits
    from test_tasks import hand_store

    store, selector, vocab = hand_store(tmp_path)
    # I10 "introduced" on 2020-07-01: windows ending before then cannot know it
    vocab.info["I10"]["introduced_at"] = "2020-07-01T00:00:00"
    s = build_samples(store, np.arange(2), TaskSpec.parse("window:30d", censor=False),
                      code_label_index(store, selector, vocab), 3, introduced=vocab.introduced_seconds())
    hidden = ~s.mask
    assert hidden[:, 1].any() and not hidden[:, [0, 2]].any()
    assert s.counts["label_entries_before_introduction_masked"] == int(hidden.sum())
    assert (s.window_end[hidden[:, 1]] < 1593561600).all()
    rng = np.random.default_rng(0)
    proba = rng.uniform(0.05, 0.95, s.y.shape)
    logits = torch.from_numpy(np.log(proba / (1 - proba)))
    y2 = s.y.copy()
    y2[hidden] = 1 - y2[hidden]
    for y in (y2, np.where(hidden, rng.integers(0, 2, s.y.shape), s.y).astype(np.float32)):
        a = masked_bce_with_logits(logits, torch.tensor(s.y, dtype=torch.float64), torch.tensor(s.mask))
        b = masked_bce_with_logits(logits, torch.from_numpy(y).double(), torch.tensor(s.mask))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        m1 = evaluate_predictions(s.y, s.mask, proba, vocab.labels, None, (1, 2))
        m2 = evaluate_predictions(y, s.mask, proba, vocab.labels, None, (1, 2))
        assert json.dumps(m1, sort_keys=True, default=str) == json.dumps(m2, sort_keys=True, default=str)
