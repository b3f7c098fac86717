"""Seconds of each all-samples metric pass on a many-label table (where a 300k x 1,500 evaluation spends its
time): per-label ranking, the exact pooled (micro) AUROC / AUPRC, calibration sums and recall@k.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_metrics.py [--samples 100000] [--labels 1500]
        [--positive-rate 0.003] [--unknown-rate 0.003] [--seed 0]

Synthetic scores (uniform, float32) with positives and unknown entries at random places, stored as the
evaluation stores them (SparseTable targets; a mask listing each row's unknown labels). Scores are a dense
array here; `ranking.HeadScores` (the sequence models' scores at scale) adds the head's matmul and sigmoid
to every pass. One JSON line per pass with seconds and nanoseconds per label entry.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ehrdx.data.sparse import SparseTable
from ehrdx.evaluate.metrics import calibration_sums, recall_at_ks
from ehrdx.ranking import label_ranking, pooled_ranking


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--labels", type=int, default=1_500)
    ap.add_argument("--positive-rate", type=float, default=0.003)
    ap.add_argument("--unknown-rate", type=float, default=0.003)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    S, L = args.samples, args.labels
    proba = rng.random((S, L), dtype=np.float32)
    n_pos, n_unknown = int(S * L * args.positive_rate), int(S * L * args.unknown_rate)
    y = SparseTable.from_entries(S, L, rng.integers(0, S, n_pos), rng.integers(0, L, n_pos))
    mask = SparseTable.from_entries(S, L, rng.integers(0, S, n_unknown), rng.integers(0, L, n_unknown),
                                    flip=np.ones(S, bool))
    passes = {"label_ranking": lambda: label_ranking(y, mask, proba),
              "pooled_ranking": lambda: pooled_ranking(y, mask, proba),
              "calibration_sums": lambda: calibration_sums(y, mask, proba),
              "recall_at_ks": lambda: recall_at_ks(y, mask, proba, [5, 10, 20])}
    for name, run in passes.items():
        t0 = time.perf_counter()
        run()
        seconds = time.perf_counter() - t0
        print(json.dumps({"pass": name, "samples": S, "labels": L, "seconds": round(seconds, 2),
                          "ns_per_entry": round(seconds / (S * L) * 1e9, 2)}), flush=True)


if __name__ == "__main__":
    main()
