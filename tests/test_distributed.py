"""Distributed data parallel training: the epoch shares, and a real 2-process torchrun (gloo) run
compared with one process on the same cohort."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.train.distributed import Shard


@pytest.mark.parametrize("n,world", [(10, 2), (11, 2), (7, 3), (1, 2), (0, 2), (5, 1)])
def test_training_shares_cover_every_item_and_take_equal_steps(n, world):
    order = np.random.default_rng(n).permutation(n)
    parts = [Shard(r, world).take(order) for r in range(world)]
    assert len({len(p) for p in parts}) == 1  # the same number of steps everywhere
    assert set(np.concatenate(parts).tolist()) == set(order.tolist())  # nothing left out
    assert sum(len(p) for p in parts) - n < world  # at most world - 1 repeats
    eval_parts = [Shard(r, world, pad=False).take(order) for r in range(world)]
    assert sorted(np.concatenate(eval_parts).tolist()) == sorted(order.tolist())  # each exactly once


def test_global_batch_is_split_over_processes():
    assert Shard(0, 1).batch_size(64) == 64
    assert Shard(1, 2).batch_size(64) == 32
    assert Shard(0, 3).batch_size(64) == 22


def _train(args, out, nproc, env):
    cmd = [sys.executable, "-m", "ehrdx", "--min-cell", "0", "train"]  # every label's numbers, to compare
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "ehrdx", "--min-cell", "0", "train"]
    r = subprocess.run([*cmd, *args, "--out", str(out)], check=False, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_torchrun_two_processes_match_one_process(tmp_path):
    paths = write_longitudinal(generate_longitudinal(1200, seed=11), tmp_path / "c")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = ["--meds", str(paths["meds"]), "--labels", f"map:{paths['label_map']}", "--model", "gru", "--epochs", "3",
            "--patience", "5", "--hidden", "32", "--device", "cpu", "--store", str(tmp_path / "store")]
    _train(args, tmp_path / "one", 1, env)
    two = _train(args, tmp_path / "two", 2, env)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["history"]["processes"] == 1 and m2["history"]["processes"] == 2
    assert m2["history"]["epochs_run"] == 3
    # Same global batch and steps; the batches are composed differently, so not bit-identical.
    for key in ("macro_auroc", "micro_auroc", "macro_auprc"):
        assert abs(m1["test"][key] - m2["test"][key]) < 0.02, (key, m1["test"][key], m2["test"][key])
    assert abs(m1["history"]["train_loss"][-1] - m2["history"]["train_loss"][-1]) < 0.01
    w1 = load_file(tmp_path / "one" / "model.safetensors")
    w2 = load_file(tmp_path / "two" / "model.safetensors")
    assert w1.keys() == w2.keys() and any(not np.array_equal(w1[k], w2[k]) for k in w1)
    # only rank 0 printed the report and wrote the model
    assert two.stdout.count("model saved to") == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_torchrun_gbm_and_auto_every_process_fits_the_same_gbm_and_the_gru_member_trains_data_parallel(tmp_path):
    """Under torchrun every process fits the same deterministic boosters on all training patients (no
    communication): auto's gbm member is the 1-process one byte for byte, its GRU member trains data parallel
    as --model gru does (close, not equal). --model gbm takes the same path (train/fit.py). Only rank 0 writes."""
    paths = write_longitudinal(generate_longitudinal(400, seed=5), tmp_path / "c")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = ["--meds", str(paths["meds"]), "--labels", "regex:^DX//(E11|I10|E78|E66)$", "--epochs", "2",  # 4 boosters
            "--hidden", "16", "--device", "cpu", "--store", str(tmp_path / "store")]
    _train([*args, "--model", "auto"], tmp_path / "one", 1, env)
    two = _train([*args, "--model", "auto"], tmp_path / "two", 2, env)
    for name in ("gbm.gbm.json", "gbm-counts.gbm.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["history"]["processes"] == 2 and m2["history"]["epochs_run"] == 2
    assert m1["candidates"]["gbm"] == m2["candidates"]["gbm"]  # the same boosters: the same numbers
    for key in ("macro_auroc", "micro_auroc"):
        assert abs(m1["candidates"]["gru"]["test"][key] - m2["candidates"]["gru"]["test"][key]) < 0.03
        assert abs(m1["test"][key] - m2["test"][key]) < 0.03, (key, m1["test"][key], m2["test"][key])
    assert two.stdout.count("model saved to") == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    gbm = _train([*args, "--model", "gbm"], tmp_path / "gbm_two", 2, env)
    assert gbm.stdout.count("model saved to") == 1
    assert json.loads((tmp_path / "gbm_two" / "config.json").read_text())["model_name"] == "gbm"


def test_torchrun_where_rank_0_fails_converting_the_events_every_process_stops_with_an_error(tmp_path):
    """Rank 0 converts an events table for all; when it failed (a bad time), rank 1 waited for it at the barrier
    until the process group's timeout (30 minutes). Rank 1 now stops at once, saying rank 0 failed."""
    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n1,2020-01-01,DX//E11\n2,not a time,DX//I10\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ehrdx",
           "train", "--events", str(events), "--model", "logistic", "--device", "cpu",
           "--store", str(tmp_path / "store"), "--out", str(tmp_path / "m")]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=120)
    said = " ".join((r.stdout + r.stderr).split())
    assert r.returncode != 0
    assert "column 'time': unparseable times" in said  # rank 0's own error
    assert "the process of rank 0 failed converting the events into the store (its own error says why): this " \
           "process (rank 1) stops too" in said, said[-3000:]
