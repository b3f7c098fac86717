"""What ehrdx writes as MEDS passes the standard's own validator (the `meds` package, a dev dependency):
data shards, codes.parquet, subject_splits.parquet, dataset.json and the per-label task directories."""

import json

import meds
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ehrdx.cli import app
from ehrdx.data.meds import iter_meds
from ehrdx.data.store import build_store


@pytest.fixture(scope="module")
def synth_meds(tmp_path_factory):
    out = tmp_path_factory.mktemp("meds_schema")
    r = CliRunner().invoke(app, ["synth", "--format", "meds", "--patients", "150", "--seed", "1", "--out",
                                 str(out / "c")])
    assert r.exit_code == 0, r.output
    return out


def test_synth_meds_data_and_metadata_pass_the_meds_validator(synth_meds):
    root = synth_meds / "c" / "meds"
    shards = sorted((root / "data").glob("**/*.parquet"))
    assert len(shards) == 3  # train, tuning, held_out
    for shard in shards:
        meds.DataSchema.validate(pq.read_table(shard))
    meds.CodeMetadataSchema.validate(pq.read_table(root / meds.code_metadata_filepath))
    splits = pq.read_table(root / meds.subject_splits_filepath)
    meds.SubjectSplitSchema.validate(splits)
    assert set(splits.column("split").to_pylist()) == {meds.train_split, meds.tuning_split, meds.held_out_split}
    meds.DatasetMetadataSchema.validate(json.loads((root / meds.dataset_metadata_filepath).read_text()))


def test_our_meds_still_reads_into_a_store(synth_meds, tmp_path):
    store = build_store(iter_meds(synth_meds / "c" / "meds"), tmp_path / "store")
    assert store.meta["patients"] == 150 and store.meta["events"] > 150


def test_targets_task_directories_pass_the_meds_label_schema(synth_meds):
    out = synth_meds / "tasks"
    r = CliRunner().invoke(app, ["targets", "--meds", str(synth_meds / "c" / "meds"), "--format", "meds",
                                 "--labels", "prefix:DX//:3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    files = sorted(out.glob("*/labels.parquet"))
    assert len(files) >= 3
    n_true = 0
    for f in files:
        table = pq.read_table(f)
        meds.LabelSchema.validate(table)
        n_true += int(np.sum(table.column("boolean_value").to_numpy(zero_copy_only=False)))
    assert n_true > 0
