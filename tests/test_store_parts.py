"""Store conversion shard by shard: parts converted by separate processes merge into the very store a
single conversion gives."""

import json

import numpy as np
import polars as pl
import pytest

from ehrdx.data.meds import iter_meds, meds_shard_paths, write_meds
from ehrdx.data.store import ARRAYS, build_store, merge_stores, shard_groups
from ehrdx.data.synth_visits import generate_longitudinal
from ehrdx.errors import DataError
from ehrdx.events_pipeline import open_store


@pytest.fixture(scope="module")
def meds(tmp_path_factory):
    out = tmp_path_factory.mktemp("parts")
    c = generate_longitudinal(900, seed=4)
    # small shards, and a code that only the last shard has, so the part vocabularies differ
    events = pl.concat([c.events, pl.DataFrame({"subject_id": [900], "time": [None], "code": ["ONLY//LAST"],
                                                "numeric_value": [None]}, schema=c.events.schema)])
    return write_meds(out / "meds", events, shard_size=200)


def _bytes(d):
    return {name: (d / f"{name}.bin").read_bytes() for name in ARRAYS} | {"codes": (d / "codes.json").read_text()}


def test_groups_are_consecutive_and_cover_every_shard(meds):
    paths = meds_shard_paths(meds)
    assert len(paths) >= 5
    for n in (1, 2, 3, len(paths), len(paths) + 4):
        groups = shard_groups(paths, n)
        assert [p for g in groups for p in g] == paths
        assert 1 <= len(groups) <= min(n, len(paths)) and all(groups)


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_conversion_gives_the_same_store_byte_for_byte(meds, tmp_path, workers):
    one = open_store(meds=meds, store_dir=tmp_path / "one")
    many = open_store(meds=meds, store_dir=tmp_path / "many", workers=workers)
    assert _bytes(one.directory) == _bytes(many.directory)
    m1, m2 = json.loads((one.directory / "meta.json").read_text()), json.loads((many.directory / "meta.json").read_text())
    assert m1 == m2
    assert not (tmp_path / "many" / "parts").exists()


def test_a_subject_in_two_groups_is_refused(meds, tmp_path):
    paths = meds_shard_paths(meds)
    a = build_store(iter_meds(meds, paths[:2]), tmp_path / "a")
    b = build_store(iter_meds(meds, paths[1:3]), tmp_path / "b")  # shares a shard with a
    with pytest.raises(DataError, match="appears in two shard groups"):
        merge_stores([a.directory, b.directory], tmp_path / "ab")


def test_merge_streams_in_chunks(meds, tmp_path):
    paths = meds_shard_paths(meds)
    parts = [build_store(iter_meds(meds, g), tmp_path / f"p{k}").directory for k, g in enumerate(shard_groups(paths, 3))]
    whole = merge_stores(parts, tmp_path / "whole", chunk=1000)
    ref = build_store(iter_meds(meds), tmp_path / "ref")
    assert _bytes(whole.directory) == _bytes(ref.directory)
    assert np.array_equal(np.asarray(whole.codes), np.asarray(ref.codes))


def test_a_cooperative_conversion_checks_what_a_single_one_does(meds, tmp_path):
    """The processes of a distributed run (torchrun) convert shards cooperatively; that path skipped the checks
    of open_store: a --until before every visit gave a store with no prediction time, without a word."""
    from ehrdx.events_pipeline import convert_cooperatively
    from ehrdx.train.distributed import all_or_none

    with pytest.raises(DataError, match="no visit at or before --until 1900-01-01") as err:
        convert_cooperatively(meds, tmp_path / "early", 0, 1, all_or_none, until="1900-01-01")
    assert "the data's first visit is on" in str(err.value)
    with pytest.raises(DataError, match="unreadable date"):
        convert_cooperatively(meds, tmp_path / "bad", 0, 1, all_or_none, until="soon")
    assert not (tmp_path / "bad").exists()  # refused before any work
    store = convert_cooperatively(meds, tmp_path / "fine", 0, 1, all_or_none)
    assert len(store) == len(open_store(meds=meds, store_dir=tmp_path / "single"))


def test_a_cooperative_conversion_takes_the_store_folder_s_lock_before_any_process_writes(meds, tmp_path):
    """torchrun's cooperative conversion took no lock: a second run given the same --store wrote its parts into
    the folder another was converting into. Rank 0 takes it first; while another holds it, the run is refused."""
    from ehrdx.events_pipeline import convert_cooperatively, writing_store
    from ehrdx.train.distributed import all_or_none

    folder = tmp_path / "store"
    with writing_store(folder), pytest.raises(DataError, match="another ehrdx process is converting event data"):
        convert_cooperatively(meds, folder, 0, 1, all_or_none)
    assert not (folder / "parts").exists()  # nothing written
    assert len(convert_cooperatively(meds, folder, 0, 1, all_or_none)) > 0  # free again: converts
