"""A --store folder opened again for the same data (issue 15): the first open_store converts, the second
reads source.json, checks the input files and opens the store.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_store_reuse.py --meds DIR --store /tmp/reuse
"""

from __future__ import annotations

import argparse
import shutil
import time

from ehrdx.events_pipeline import open_store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--meds", required=True)
    ap.add_argument("--store", required=True, help="a scratch folder (removed first)")
    args = ap.parse_args()
    shutil.rmtree(args.store, ignore_errors=True)
    for run in (1, 2):
        t = time.perf_counter()
        st = open_store(meds=args.meds, store_dir=args.store)
        print(f"open_store {run}: {time.perf_counter() - t:.2f} s, reused={st.reused}, events={st.meta['events']:,}")


if __name__ == "__main__":
    main()
