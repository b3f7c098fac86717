"""Seconds of each all-samples metric pass on a many-label table (where a 300k x 1,500 evaluation spends its
time): per-label ranking, the exact pooled (micro) AUROC / AUPRC, calibration sums and recall@k.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_metrics.py [--samples 100000] [--labels 1500]
        [--positive-rate 0.003] [--unknown-rate 0.003] [--seed 0] [--passes pooled_ranking_before,pooled_ranking]

Synthetic scores (uniform, float32) with positives and unknown entries at random places, stored as the
evaluation stores them (SparseTable targets; a mask listing each row's unknown labels). Scores are a dense
array here; `ranking.HeadScores` (the sequence models' scores at scale) adds the head's matmul and sigmoid
to every pass. One JSON line per pass with seconds and nanoseconds per label entry (and the pooled
results, which must agree). `pooled_ranking_before` is the pooled pass as it was before ranking.PooledCounts
(a copy kept here), whose cost per entry grew with the positives.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ehrdx import ranking
from ehrdx.data.samples import Samples
from ehrdx.data.sparse import SparseTable
from ehrdx.evaluate import metrics
from ehrdx.evaluate.metrics import (
    K_VALUES,
    VISIT_BINS,
    calibration_sums,
    evaluate_predictions,
    evaluate_samples,
    recall_at_ks,
)
from ehrdx.ranking import (
    HeadScores,
    block_elements,
    label_blocks,
    label_ranking,
    macro_scores,
    pooled_ranking,
    ranking_of_counts,
    read_block,
)


def pooled_ranking_before(y, mask, scores: np.ndarray, rows: np.ndarray | None = None,
                          max_elements: int | None = None) -> tuple[float | None, float | None]:
    """ranking.pooled_ranking as it was before ranking.PooledCounts, kept here to time against (its cost
    per entry grew with the positives). micro_ranking of all known elements of [S, L] tables (`rows` only,
    when given), without pooling them: a first pass over blocks of labels keeps the positives' scores (sorted), a second counts, for
    each positive, the negatives scored below it and tied with it (each negative found among the sorted
    positives). The counts are the ones micro_ranking gets from the pooled arrays, so the result is the
    same; memory grows with the positives, not with samples x labels."""
    n_samples, n_labels = np.shape(scores)
    blocks = list(label_blocks(n_samples if rows is None else len(rows), n_labels,
                               max_elements or block_elements(scores)))

    def known_block(b: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = read_block(mask, rows, b).astype(bool, copy=False)
        return read_block(scores, rows, b), k, (read_block(y, rows, b) > 0.5) & k

    parts = []
    for b in blocks:
        p, _, pos = known_block(b)
        parts.append(p[pos])
    ps = np.sort(np.concatenate(parts)) if parts else np.zeros(0)
    n_pos = len(ps)
    below, at_most, n_neg = np.zeros(n_pos + 1, np.int64), np.zeros(n_pos + 1, np.int64), 0
    for b in blocks:
        p, k, pos = known_block(b)
        ns = np.sort(p[k & ~pos])  # sorted keys search faster (each search starts at the last one's place)
        n_neg += len(ns)
        # a negative v is below positive i when i >= searchsorted(ps, v, "right"); at or below it when
        # i >= searchsorted(ps, v, "left"): counted at that index, summed up to each i below. The two
        # indices differ only where v equals a positive's score: search again for those alone.
        left = np.searchsorted(ps, ns, side="left")
        right = left.copy()
        tied = np.flatnonzero(ps[np.minimum(left, n_pos - 1)] == ns) if n_pos else np.zeros(0, np.int64)
        right[tied] = np.searchsorted(ps, ns[tied], side="right")
        below += np.bincount(right, minlength=n_pos + 1)
        at_most += np.bincount(left, minlength=n_pos + 1)
    if n_pos == 0 or n_neg == 0:
        return None, None
    below, at_most = np.cumsum(below)[:n_pos], np.cumsum(at_most)[:n_pos]
    return ranking_of_counts(ps, below, int((at_most - below).sum()), n_neg)


def evaluate_samples_before(samples: Samples, proba, labels: list[str], thresholds: np.ndarray | None) -> dict:
    """metrics.evaluate_samples as it was before evaluate/one_pass.py (kept here to time against): each
    metric its own reading of the scores, for each mask and each bin of prior visits."""
    y, mask = samples.y_bits, samples.mask_bits
    new_mask = samples.train_mask_bits(True)
    out = {"all": evaluate_predictions(y, mask, proba, labels, thresholds, K_VALUES, samples.row),
           "new_onset": evaluate_predictions(y, new_mask, proba, labels, thresholds, K_VALUES, samples.row),
           "by_prior_visits": []}
    for lo, hi in VISIT_BINS:
        sel = (samples.n_visits >= lo) & (samples.n_visits <= (hi if hi is not None else np.iinfo(np.int32).max))
        if sel.any():
            out["by_prior_visits"].append({name: macro_scores(y, m, proba, rows=np.flatnonzero(sel))
                                           for name, m in (("all", mask), ("new_onset", new_mask))})
    return out


def with_pooled(pooled, run):
    """Run `run` with ranking.pooled_ranking (as the metrics call it) replaced by `pooled`."""
    saved = ranking.pooled_ranking, metrics.pooled_ranking
    ranking.pooled_ranking = metrics.pooled_ranking = pooled
    try:
        return run()
    finally:
        ranking.pooled_ranking, metrics.pooled_ranking = saved


def headline(result: dict) -> dict:
    """A few numbers of an evaluate_samples result, to see that the passes agree."""
    return {k: result["all"][k] for k in ("macro_auroc", "micro_auroc", "micro_auprc")} | {
        "bin_micro_auroc": result["by_prior_visits"][0]["new_onset"]["micro_auroc"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--labels", type=int, default=1_500)
    ap.add_argument("--positive-rate", type=float, default=0.003)
    ap.add_argument("--unknown-rate", type=float, default=0.003)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--history-rate", type=float, default=0.01)
    ap.add_argument("--scores", choices=["dense", "head"], default="dense",
                    help="dense: a float32 [S, L] array; head: ranking.HeadScores of --hidden states")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--block-labels", type=int, default=0,
                    help="labels per block of scores read (default: as ranking.block_elements gives; 3 is the "
                         "HeadScores block of 4.4M samples)")
    ap.add_argument("--passes", default="", help="comma-separated pass names to run (default: all)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    S, L = args.samples, args.labels
    if args.scores == "dense":
        proba = rng.random((S, L), dtype=np.float32)
    else:  # logits of about -6 +- 2: probabilities like a rare label's
        H = args.hidden
        proba = HeadScores(rng.normal(size=(S, H)).astype(np.float32),
                           (rng.normal(size=(L, H)) * 2 / np.sqrt(H)).astype(np.float32),
                           np.full(L, -6.0, np.float32))
    n_pos, n_unknown = int(S * L * args.positive_rate), int(S * L * args.unknown_rate)
    y = SparseTable.from_entries(S, L, rng.integers(0, S, n_pos), rng.integers(0, L, n_pos))
    mask = SparseTable.from_entries(S, L, rng.integers(0, S, n_unknown), rng.integers(0, L, n_unknown),
                                    flip=np.ones(S, bool))
    if args.block_labels:
        ranking.MAX_ELEMENTS = HeadScores.block_elements = args.block_labels * S
    n_hist = int(S * L * args.history_rate)
    history = SparseTable.from_entries(S, L, rng.integers(0, S, n_hist), rng.integers(0, L, n_hist))
    samples = Samples(np.arange(S) // 15, np.arange(S), np.arange(S), rng.integers(0, 30, S), np.arange(S), y,
                      mask, history)
    labels, thresholds = [f"L{j}" for j in range(L)], rng.uniform(0.05, 0.5, L)
    passes = {"label_ranking": lambda: label_ranking(y, mask, proba),
              "pooled_ranking_before": lambda: pooled_ranking_before(y, mask, proba),
              "pooled_ranking": lambda: pooled_ranking(y, mask, proba),
              "calibration_sums": lambda: calibration_sums(y, mask, proba),
              "recall_at_ks": lambda: recall_at_ks(y, mask, proba, [5, 10, 20]),
              "evaluate_before": lambda: with_pooled(pooled_ranking_before, lambda: evaluate_samples_before(
                  samples, proba, labels, thresholds)),
              "evaluate_separate": lambda: evaluate_samples_before(samples, proba, labels, thresholds),
              "evaluate_samples": lambda: evaluate_samples(samples, proba, labels, thresholds)}
    chosen = args.passes.split(",") if args.passes else list(passes)
    for name in chosen:
        t0 = time.perf_counter()
        out = passes[name]()
        seconds = time.perf_counter() - t0
        line = {"pass": name, "scores": args.scores, "samples": S, "labels": L, "seconds": round(seconds, 2),
                "ns_per_entry": round(seconds / (S * L) * 1e9, 2)}
        if name.startswith("pooled"):
            line["result"] = out
        elif name.startswith("evaluate"):
            line["result"] = headline(out)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
