"""Models that fit a label at a time (gbm, logistic) or a batch at a time (mlp) read the packed label
tables a column or a block of rows at a time: a label's column, a few labels' sub-table, and fits on event
samples that never build a dense [samples, labels] table, with the same models as dense inputs give."""

import numpy as np
import pytest
import scipy.sparse as sp

from ehrdx.data.batches import MatrixSet, SampleSet, make_batch
from ehrdx.data.bits import BitTable, PackedTargets, as_table, label_columns
from ehrdx.data.preprocess import EncodedFeatures
from ehrdx.data.samples import Samples
from ehrdx.data.sparse import SparseTable
from ehrdx.models.baselines import LogisticBaseline
from ehrdx.models.gbm import GBMModel
from ehrdx.train.ensemble import choose_weights


def label_table(seed, n=50, labels=19):
    """Targets-like and mask-like columns: an empty column, a full one, rows all set (listed as flipped),
    rows all clear, and a column set only in flipped rows."""
    rng = np.random.default_rng(seed)
    t = rng.random((n, labels)) < 0.25
    t[:, 2] = False  # no entry at all
    t[:, 4] = True  # every row
    t[6] = True  # a row that lists nothing, set by default
    t[9] = rng.random(labels) < 0.9  # mostly set: lists its clear entries
    t[12] = False
    t[:, 17] = False
    t[[6, 9], 17] = True  # set only where the row is flipped
    return t


def kinds(dense):
    return {"sparse": SparseTable.from_dense(dense), "sparse, inverted twice": SparseTable.from_dense(dense).invert()
            .invert(), "unknowns listed": SparseTable.from_dense(~dense).invert(), "bits": BitTable.from_dense(dense)}


def test_a_column_reads_one_labels_entries_in_every_kind_of_table():
    dense = label_table(0)
    for name, t in kinds(dense).items():
        for j in range(dense.shape[1]):
            col = t.column(j)
            assert col.dtype == bool and col.shape == (50,), name
            assert np.array_equal(col, dense[:, j]), (name, j)
            assert np.array_equal(t[:, j], dense[:, j]) and np.array_equal(t[[9, 0, 6], j], dense[[9, 0, 6], j])
        assert np.array_equal(t[:, -1], dense[:, -1])
        with pytest.raises(IndexError):
            t.column(19)
    one = SparseTable.from_dense(dense[:, :1])  # a table of one label reads its column as its rows
    assert np.array_equal(one.column(0), dense[:, 0])
    empty = SparseTable.from_dense(np.zeros((0, 5), bool))
    assert empty.column(3).shape == (0,) and BitTable.from_dense(np.zeros((0, 5), bool)).column(3).shape == (0,)


@pytest.mark.parametrize("c0, c1", [(0, None), (3, 11), (8, 16), (17, None), (5, 5), (18, 19), (0, 1)])
def test_a_range_of_columns_is_a_table_of_the_same_kind(c0, c1):
    dense = label_table(1)
    for name, t in kinds(dense).items():
        sub = t.columns(c0, c1)
        assert type(sub) is type(t), name
        assert sub.shape == dense[:, c0:c1].shape and np.array_equal(sub.dense(), dense[:, c0:c1]), name
        if isinstance(sub, SparseTable):  # the rows keep their defaults and list only what is in range
            assert np.array_equal(sub.flip, t.flip) and sub.n_listed <= t.n_listed
        assert np.array_equal(sub.column_sums(), dense[:, c0:c1].sum(0))
    view = label_columns(dense, c0, c1)  # a dense array: a view, as numpy slices
    assert view.base is dense and np.array_equal(view, dense[:, c0:c1])
    assert label_columns(dense, 3).shape == (50, 16)


def test_gbm_and_logistic_on_packed_tables_equal_their_fits_on_dense_arrays(monkeypatch):
    rng = np.random.default_rng(3)
    n, L = 500, 6
    X = sp.random(n, 12, density=0.4, format="csr", random_state=3, dtype=np.float32)
    y = (X.toarray()[:, :L] + 0.3 * rng.random((n, L)) > 0.35)
    y[:, 5] = False  # one class only: a constant
    mask = rng.random((n, L)) > 0.3
    mask[:40] = True  # rows known (nearly) everywhere: listed as flipped
    mask[:, 4] = False  # known nowhere
    yt, mt = SparseTable.from_dense(y), SparseTable.from_dense(mask)
    assert mt.flip[:40].all()
    monkeypatch.setattr(SparseTable, "dense", lambda self: pytest.fail("made the whole table"))
    fast = {"num_boost_round": 20, "early_stopping_rounds": 5}
    dense_fit = GBMModel(**fast).fit(X[:400], y[:400].astype(np.float32), mask[:400], X[400:], y[400:], mask[400:])
    packed_fit = GBMModel(**fast).fit(X[:400], yt.take(np.arange(400)), mt.take(np.arange(400)), X[400:],
                                      yt.take(np.arange(400, n)), mt.take(np.arange(400, n)))
    assert [i["kind"] for i in packed_fit.labels_][4:] == ["constant", "constant"]
    assert packed_fit.labels_ == dense_fit.labels_  # the same rows, positives and rounds per label
    # the same data reaches LightGBM, so the same trees (same thread count, deterministic)
    np.testing.assert_array_equal(packed_fit.decision_function(X), dense_fit.decision_function(X))
    a = LogisticBaseline(12, L).fit(X, y.astype(np.float32), mask, seed=0)
    b = LogisticBaseline(12, L).fit_sets(MatrixSet(X, yt, mt), seed=0)
    np.testing.assert_array_equal(a.coef, b.coef)
    np.testing.assert_array_equal(a.intercept, b.intercept)
    c = LogisticBaseline(12, 2).fit(X, y[:, 4:], mask[:, 4:])  # labels added later read their columns only
    d = LogisticBaseline(12, 4).fit(X, y[:, :4], mask[:, :4]).add_labels(MatrixSet(X, yt, mt), n_old=4)
    np.testing.assert_array_equal(c.intercept, d.intercept[4:])


def test_ensemble_weights_from_packed_tables_equal_those_from_dense_arrays():
    rng = np.random.default_rng(4)
    n, L = 600, 5
    y = rng.random((n, L)) < 0.2
    y[:, 3] = False  # no positive: keeps the shared choice
    mask = rng.random((n, L)) > 0.1
    p = np.stack([np.clip(y + rng.normal(0, s, (n, L)), 0, 1) for s in (0.4, 0.8)])  # member 0 ranks better
    dense = choose_weights(p, y.astype(np.float32), mask)
    packed = choose_weights(p, SparseTable.from_dense(y), SparseTable.from_dense(mask))
    np.testing.assert_array_equal(packed[0], dense[0])
    assert packed[1] == dense[1] and packed[1][3]["for"] == "all labels"  # no positive: the shared weighting
    assert "(no positive or no negative among tuning samples)" in packed[1][3]["chosen"]
    assert dense[0][0, 0] > dense[0][0, 1]


def test_a_row_set_keeps_its_tables_packed_and_batches_read_their_rows():
    rng = np.random.default_rng(5)
    n, L = 30, 7
    y, mask = rng.random((n, L)) < 0.3, rng.random((n, L)) > 0.2
    feats = EncodedFeatures(dense=rng.normal(size=(n, 3)).astype(np.float32), code_ids=np.zeros(0, np.int64),
                            code_offsets=np.zeros(n + 1, np.int64))
    ds = SampleSet(feats, y.astype(np.float32), mask)  # dense arrays given: kept as index lists
    assert isinstance(ds.y_bits, SparseTable) and isinstance(ds.mask_bits, SparseTable)
    rows = np.array([4, 0, 29, 4])
    batch = make_batch(ds, rows)
    assert batch.y.dtype.is_floating_point and np.array_equal(batch.y.numpy(), y[rows].astype(np.float32))
    assert np.array_equal(batch.y_mask.numpy(), mask[rows])
    assert np.array_equal(ds.y, y) and np.array_equal(ds.y_mask, mask)  # dense on demand, for small sets
    with pytest.raises(ValueError, match="differ in shape"):
        SampleSet(feats, y, mask[:, :3])
    assert isinstance(as_table(ds.y_bits), SparseTable) and as_table([[1, 0]], bool).dtype == bool


@pytest.mark.parametrize("model", ["gbm", "logistic", "mlp"])
def test_fitting_on_event_samples_never_builds_a_dense_label_table(model, labelled_store, monkeypatch):
    from ehrdx import ranking
    from ehrdx.estimator import EHRClassifier
    from ehrdx.train import loop

    _, paths, store, _ = labelled_store(160, 7, "sparse_fit")
    rows = np.random.default_rng(0).permutation(len(store))
    train, val = np.sort(rows[:120]), np.sort(rows[120:])
    for name in ("y", "mask", "history"):  # the whole dense tables of samples and of sample sets: refuse them
        setter = getattr(Samples, name).fset  # building samples assigns the tables (kept as index lists)
        monkeypatch.setattr(Samples, name, property(lambda self: pytest.fail("read the whole table"), setter))
    monkeypatch.setattr(Samples, "train_mask", lambda *a: pytest.fail("read the whole training mask"))
    for name in ("y", "y_mask"):
        monkeypatch.setattr(PackedTargets, name, property(lambda self: pytest.fail("read the whole table")))
    for kind in (BitTable, SparseTable):
        monkeypatch.setattr(kind, "dense", lambda self: pytest.fail("made the whole table"))
    largest, read = [0], SparseTable.__getitem__

    def counted(self, key):
        got = read(self, key)
        largest[0] = max(largest[0], got.size)
        return got

    monkeypatch.setattr(SparseTable, "__getitem__", counted)
    monkeypatch.setattr(ranking, "MAX_ELEMENTS", 2_000)  # thresholds and metrics: blocks of a few labels
    monkeypatch.setattr(loop, "_eval_batch", lambda *_: 64)  # evaluation batches as small as training's
    clf = EHRClassifier(model=model, labels=f"map:{paths['label_map']}", seed=0, max_epochs=1, batch_size=64,
                        gbm_params={"num_iterations": 3})
    clf.fit(store, train, val)
    samples = clf.samples(store, val)
    proba = clf.predict_samples(store, samples)
    n_train = len(clf.samples(store, train))
    L = len(clf.labels_)
    assert proba.shape == (len(samples), L) and L > 3 and np.isfinite(proba).all()
    # the largest read: a batch of rows, a label's column or a block of a few labels, never a whole table
    assert 0 < largest[0] <= max(64 * L, 2_000, n_train) < min(n_train, len(samples)) * L


@pytest.mark.parametrize("form", ["long", "meds"])
def test_targets_are_written_and_read_as_index_lists_with_the_dense_entries(form, tmp_path):
    from ehrdx.tasks.targets import Targets, read_targets, write_long, write_meds_tasks

    rng = np.random.default_rng(6)
    n, L = 40, 5
    y, mask = rng.random((n, L)) < 0.3, rng.random((n, L)) > 0.25
    mask[0] = True  # every label known
    mask[1] = form == "meds"  # every label unknown (a MEDS task directory would not list that time at all)
    ids, times = np.repeat(np.arange(10), 4), np.arange(n) * 86400 + 1_600_000_000
    labels = [f"L{j}" for j in range(L)]
    dense = Targets(ids, times, labels, y.astype(np.float32), mask)
    packed = Targets(ids, times, labels, SparseTable.from_dense(y), SparseTable.from_dense(mask))
    write = write_long if form == "long" else write_meds_tasks
    a, b = write(dense, tmp_path / "dense" / "t.parquet"), write(packed, tmp_path / "packed" / "t.parquet")
    got = read_targets(b)
    assert isinstance(got.y_bits, SparseTable) and isinstance(got.mask_bits, SparseTable)
    assert np.array_equal(got.time, times) and got.labels == labels
    assert np.array_equal(got.mask_bits.dense(), mask) and np.array_equal(got.y_bits.dense(), y & mask)
    again = read_targets(a)  # the dense and the packed targets wrote the same labels
    assert np.array_equal(again.mask, mask) and np.array_equal(again.y, (y & mask).astype(np.float32))
    assert isinstance(dense.y_bits, SparseTable) and np.array_equal(dense.mask, mask)  # given dense: kept sparse
    if form == "long":  # each time lists its unknown labels
        assert got.mask_bits.flip.all() and got.mask_bits.n_listed == int((~mask).sum())


@pytest.mark.parametrize("form", ["long", "meds"])
@pytest.mark.parametrize("dtype", ["bool", "int", "float"])
def test_target_values_written_as_integers_or_floats_read_as_booleans(form, dtype, tmp_path):
    """Parquet targets often hold 0/1 integers (or probabilities): a value above 0.5 is positive, an empty
    one unknown, whatever the column's type; a text column is refused with the file and column named."""
    import polars as pl

    from ehrdx.errors import DataError
    from ehrdx.tasks.targets import read_targets

    cast = {"bool": pl.Boolean, "int": pl.Int64, "float": pl.Float64}[dtype]
    values = pl.Series([True, False, False, True, None]).cast(cast)
    subjects, times = [1, 1, 2, 2, 3], [f"2020-0{m}-01" for m in (1, 1, 2, 2, 3)]
    frame = pl.DataFrame({"subject_id": subjects, "prediction_time": times, "v": values,
                          "label": ["A", "B", "A", "B", "A"]}).with_columns(
        pl.col("prediction_time").str.to_datetime())
    if form == "long":
        path = tmp_path / "t.parquet"
        frame.rename({"v": "value"}).write_parquet(path)
    else:
        path = tmp_path / "tasks"
        for lab in ("A", "B"):
            (path / lab).mkdir(parents=True)
            frame.filter(pl.col("label") == lab).select("subject_id", "prediction_time", pl.col("v").alias(
                "boolean_value")).write_parquet(path / lab / "labels.parquet")
    got = read_targets(path)
    assert got.labels == ["A", "B"]
    # times: (1, Jan), (2, Feb), (3, Mar); A true/false/unknown, B false/true/absent (in a long table every
    # label not listed as unknown is known; in MEDS task directories a time absent from a label's file is not)
    assert np.array_equal(got.y_bits.dense(), [[True, False], [False, True], [False, False]])
    known = got.mask_bits.dense()
    assert np.array_equal(known, [[True, True], [True, True], [False, form == "long"]])
    text = frame.with_columns(pl.col("v").cast(pl.Utf8))
    if form == "long":
        text.rename({"v": "value"}).write_parquet(path)
    else:
        text.filter(pl.col("label") == "A").select("subject_id", "prediction_time", pl.col("v").alias(
            "boolean_value")).write_parquet(path / "A" / "labels.parquet")
    with pytest.raises(DataError, match="target values of type"):
        read_targets(path)


def test_given_targets_are_aligned_to_the_vocabulary_a_block_of_samples_at_a_time(monkeypatch):
    """sources/events.given_tables: the given targets' rows in the vocabulary's columns, entries whose window
    ends before a label's introduction unknown and counted, as the dense computation gives them; in blocks
    (a block of 3 samples here) and without a dense table of the targets."""
    from ehrdx.sources import events
    from ehrdx.tasks.targets import Targets
    from ehrdx.tasks.task import mask_before_introduction

    rng = np.random.default_rng(9)
    n, K = 20, 4
    ty, tm = rng.random((n, K)) < 0.3, rng.random((n, K)) > 0.2
    targets = Targets(np.arange(n), np.arange(n) * 100, [f"T{k}" for k in range(K)], SparseTable.from_dense(ty & tm),
                      SparseTable.from_dense(tm))
    given = rng.permutation(n)[:13]
    col = np.array([2, -1, 0, 3, 1])  # vocabulary label 1 is not in the targets
    window_end = rng.integers(0, 2_000, 13)
    introduced = np.array([-np.inf, -np.inf, 900.0, -np.inf, 1_500.0])
    y_want, m_want = np.zeros((13, 5), bool), np.zeros((13, 5), bool)
    y_want[:, col >= 0], m_want[:, col >= 0] = (ty & tm)[given][:, col[col >= 0]], tm[given][:, col[col >= 0]]
    counts_want = mask_before_introduction(m_want, window_end, introduced, [None, None, "a", None, "b"])
    assert counts_want["label_entries_before_introduction_masked"] > 0
    blocks = []

    def three_rows(n_rows, n_cols):  # 3 samples per block
        blocks.extend(slice(i, min(i + 3, n_rows)) for i in range(0, n_rows, 3))
        return blocks

    monkeypatch.setattr(events, "row_blocks", three_rows)
    monkeypatch.setattr(SparseTable, "dense", lambda self: pytest.fail("a whole table was made dense"))
    y, m, counts = events.given_tables(targets, given, col, window_end, introduced, [None, None, "a", None, "b"])
    assert isinstance(y, SparseTable) and isinstance(m, SparseTable) and y.shape == m.shape == (13, 5)
    assert np.array_equal(np.asarray(m[np.arange(13)]), m_want) and counts == counts_want
    assert np.array_equal(np.asarray(y[np.arange(13)]) & m_want, y_want & m_want)
    assert len(blocks) == 5
