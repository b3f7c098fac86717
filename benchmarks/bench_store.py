"""Benchmark MEDS -> ehrdx store conversion: events/s and peak memory of the converting process.

    .venv/bin/python benchmarks/bench_store.py --patients 100000 [--shard-size 50000] [--workers 1,2]

The cohort is generated and written as MEDS first; the conversion then runs in a fresh process so
its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def convert(meds: str, out: str, workers: int = 1) -> None:
    from ehrdx.data.meds import iter_meds
    from ehrdx.data.store import build_store, build_store_parallel

    t0 = time.perf_counter()
    store = build_store(iter_meds(meds), out) if workers == 1 else build_store_parallel(meds, out, workers)
    dt = time.perf_counter() - t0
    print(json.dumps({"events": store.meta["events"], "patients": store.meta["patients"], "workers": workers,
                      "seconds": round(dt, 2), "events_per_second": round(store.meta["events"] / dt),
                      "peak_rss_mib": peak_rss_mib()}))


def peak_rss_mib() -> int:
    """This process's own peak RSS. VmHWM starts fresh at exec; ru_maxrss would include the parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--shard-size", type=int, default=50_000)
    ap.add_argument("--workers", default="1", help="comma-separated: conversion processes to compare, e.g. 1,2")
    ap.add_argument("--convert", nargs=3, metavar=("MEDS", "OUT", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.convert:
        convert(args.convert[0], args.convert[1], int(args.convert[2]))
        return
    from ehrdx.data.meds import write_meds
    from ehrdx.data.synth import generate_longitudinal

    with tempfile.TemporaryDirectory() as tmp:
        cohort = generate_longitudinal(args.patients, seed=0)  # the events (the table cohort's are the same)
        write_meds(Path(tmp) / "meds", cohort.events, shard_size=args.shard_size)
        del cohort
        for workers in args.workers.split(","):
            out = subprocess.run([sys.executable, __file__, "--convert", f"{tmp}/meds", f"{tmp}/store_{workers}",
                                  workers], check=True, capture_output=True, text=True)
            result = json.loads(out.stdout)
            result["shard_size_patients"] = args.shard_size
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
