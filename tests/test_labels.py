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
